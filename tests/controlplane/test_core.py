"""The control-plane core, driven by the simulator and by hand: outcomes, timings, policies."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane import Plugin, hookimpl
from controlplane import actions as act
from controlplane import events as ev
from controlplane.decisions import RouteDecision, ScaleDecision
from controlplane.testing import EventLog, make_config, make_trace, replay_with
from controlplane.types import Request, RequestStatus, WorkerState
from sim.replay import replay
from sim.traces import read_trace
from tests.fixtures.common import (
    AZURE_ROWS,
    FIXTURES,
    FinishedLog,
    assert_conserved,
    assert_timings_consistent,
    azure_head,
    azure_trace,
    timings,
    without_wall_time,
)

# --- conservation and timings ----------------------------------------------------------------


def test_conservation_and_timings_on_a_mixed_synthetic_trace():
    trace = make_trace(240, qps=12, seed=3)
    # Every final state at once: unknown models and over-long requests are rejected, the
    # cut-off leaves the tail in flight.
    trace = [
        dataclasses.replace(t, model="no-such-model") if i % 17 == 5
        else dataclasses.replace(t, prompt_tokens=5000) if i % 23 == 7
        else t
        for i, t in enumerate(trace)
    ]
    res = replay_with(
        trace=trace,
        cluster={"models": [{"name": "default", "replicas": 2, "max_model_len": 4096}]},
        sim={"until_s": 15.0},
    )
    s = res.summary
    assert_conserved(s, res.requests)
    assert s["num_completed"] > 0 and s["num_rejected"] > 0 and s["num_in_flight"] > 0
    assert assert_timings_consistent(res.requests) == s["num_completed"]


def test_conservation_and_timings_on_the_whole_bundled_azure_trace():
    log = FinishedLog()
    summary, session = replay(azure_trace(), make_config(), record=False, extra_plugins=[log])
    assert session.run_id is None
    assert summary["num_requests"] == AZURE_ROWS
    assert_conserved(summary, log.requests)
    assert summary["num_completed"] == AZURE_ROWS  # two default replicas keep up with this trace
    assert assert_timings_consistent(log.requests) == AZURE_ROWS
    assert summary["output_tokens"] == sum(t.output_tokens for t in azure_trace())
    assert summary["ttft_p50_s"] <= summary["ttft_p90_s"] <= summary["ttft_p99_s"]
    assert summary["e2e_p50_s"] <= summary["e2e_p90_s"] <= summary["e2e_p99_s"]


# --- determinism -----------------------------------------------------------------------------


def _randomised_run(seed: int):
    # Sampled guardians draw from the run's RNG, blocked verdicts from the driver's: both seeded.
    return replay_with(
        trace=make_trace(150, qps=10, seed=1),
        seed=seed,
        plugins={"settings": {"sampled-guardian": {"rate": 0.5, "mode": "sync"}}},
        sim={"guardian_block_rate": 0.3},
    )


def test_same_seed_gives_identical_summary_and_request_timings():
    a, b = _randomised_run(7), _randomised_run(7)
    assert without_wall_time(a.summary) == without_wall_time(b.summary)
    assert timings(a.requests) == timings(b.requests)
    verdicts = [(r.request_id, r.guardian_verdict) for r in a.requests]
    assert verdicts == [(r.request_id, r.guardian_verdict) for r in b.requests]
    assert {v for _, v in verdicts} == {None, "pass", "block"}


def test_a_different_seed_changes_the_random_decisions():
    a, c = _randomised_run(7), _randomised_run(8)
    checked_a = {d.subject for d in a.decisions if d.action == "guardian_check"}
    checked_c = {d.subject for d in c.decisions if d.action == "guardian_check"}
    assert checked_a != checked_c


def test_same_seed_is_identical_on_azure_rows():
    trace = azure_head(800)
    a = replay_with(trace=trace, seed=3)
    b = replay_with(trace=trace, seed=3)
    assert without_wall_time(a.summary) == without_wall_time(b.summary)
    assert timings(a.requests) == timings(b.requests)
    assert [dataclasses.astuple(d) for d in a.decisions] == [dataclasses.astuple(d) for d in b.decisions]


def test_two_runs_in_one_process_do_not_share_ids():
    a = replay_with(trace=make_trace(20))
    b = replay_with(trace=make_trace(20))
    first_batch = [d.payload["batch"] for d in a.decisions if d.action == "batch"][0]
    assert first_batch == [d.payload["batch"] for d in b.decisions if d.action == "batch"][0] == 0


# --- policies --------------------------------------------------------------------------------


def _routes(res):
    return [(d.subject, d.payload["worker"], d.plugin) for d in res.decisions if d.action == "route"]


def test_round_robin_and_least_loaded_route_differently():
    trace = make_trace(200, qps=15, seed=2)
    three = {"models": [{"name": "default", "replicas": 3}]}
    enabled = ["queue-limit", "round-robin", "continuous-batching", "fixed-replicas", "static-memory",
               "builtin-latency-models"]
    rr = replay_with(trace=trace, cluster=three, plugins={"enabled": enabled})
    ll = replay_with(trace=trace, cluster=three)
    rr_routes, ll_routes = _routes(rr), _routes(ll)
    assert {p for *_, p in rr_routes} == {"round-robin"}
    assert {p for *_, p in ll_routes} == {"least-loaded"}
    # Round robin cycles through the replicas whatever their load; least-loaded does not.
    assert [w for _, w, _ in rr_routes] == [f"default-{i % 3}" for i in range(len(rr_routes))]
    assert [w for _, w, _ in rr_routes] != [w for _, w, _ in ll_routes]
    assert timings(rr.requests) != timings(ll.requests)
    assert_conserved(rr.summary, rr.requests)


def test_a_route_to_a_non_candidate_is_an_error_decision_and_least_loaded_decides():
    class Wrong(Plugin):
        name = "wrong-router"

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            return RouteDecision("nowhere-7", "typo")

    res = replay_with(Wrong(), trace=make_trace(10))
    errors = [d for d in res.decisions if d.hook == "cp_route_request" and d.is_error]
    assert len(errors) == 10 and "nowhere-7" in errors[0].reason
    # the built-in router routes it, with its own reason (the refused router's reason was recorded as 'core's)
    assert {d.plugin for d in res.decisions if d.action == "route"} == {"least-loaded (fallback)"}
    assert not any("typo" in d.reason for d in res.decisions if d.action == "route")
    assert res.summary["num_completed"] == 10


# --- KV budget, cut-off, rejections ----------------------------------------------------------


def test_until_s_cut_off_leaves_requests_in_flight_and_records_them(tmp_path):
    from controlplane.storage import iter_request_rows, make_engine

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = replay_with(trace=make_trace(300, qps=20, output_tokens=128), db_url=url, sim={"until_s": 6.0})
    s = res.summary
    assert s["num_in_flight"] > 0 and s["num_completed"] > 0
    assert_conserved(s, res.requests)
    assert all(r.arrival_s <= 6.0 for r in res.requests)
    assert s["num_requests"] < 300  # later arrivals never happened
    rows = list(iter_request_rows(make_engine(url), s["run_id"]))
    assert len(rows) == s["num_requests"]
    in_flight = [row for row in rows if row["status"] == "in_flight"]
    assert len(in_flight) == s["num_in_flight"]
    assert all(row["finish_s"] is None and row["reason"] for row in in_flight)


def test_a_request_bigger_than_the_kv_cache_is_rejected_with_a_reason():
    trace = [dataclasses.replace(t, prompt_tokens=100) for t in make_trace(5)]
    trace.append(dataclasses.replace(trace[-1], request_id="big", arrival_s=trace[-1].arrival_s + 1,
                                     prompt_tokens=4000))
    res = replay_with(trace=trace, cluster={"models": [{"name": "default", "replicas": 1, "num_kv_blocks": 100}]})
    big = {r.request_id: r for r in res.requests}["big"]
    assert big.status is RequestStatus.REJECTED  # at its arrival: it could never fit (test_batch_scheduling)
    assert "need more KV cache than any default replica holds (1600 tokens)" in big.reason


def test_unknown_model_is_rejected_with_a_reason():
    trace = make_trace(6)
    trace[2] = dataclasses.replace(trace[2], model="llama-9000")
    res = replay_with(trace=trace)
    rejected = [r for r in res.requests if r.status is RequestStatus.REJECTED]
    assert [r.request_id for r in rejected] == [trace[2].request_id]
    assert "unknown model" in rejected[0].reason and "llama-9000" in rejected[0].reason
    assert rejected[0].reason.endswith("(served: default)")  # (what the trace's model column should name)
    trace[2] = dataclasses.replace(trace[2], model="Default")
    (miss,) = [r for r in replay_with(trace=trace).requests if r.status is RequestStatus.REJECTED]
    assert "no deployment serves 'Default' (did you mean 'default'?) (served: default)" in miss.reason
    decision = [d for d in res.decisions if d.action == "reject"][0]
    assert (decision.hook, decision.plugin, decision.subject) == ("cp_admit_request", "core", trace[2].request_id)
    assert res.summary["reject_reasons"] == {"unknown model": 1}


def test_a_trace_row_of_0_prompt_tokens_is_served_as_one_token_as_the_live_replay_submits_it(tmp_path):
    """A trace row of 0 prompt tokens (which the trace formats accept: a non-negative count) used to reach the
    batcher, whose prefill of 0 tokens the core refused by raising: the replay died. Now it is served as a
    one-token prompt, as `controlplane live-replay` submits it (and as 0 output tokens make one), and stored so."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"request_id": "a", "arrival_s": 0.5, "prompt_tokens": 5, "output_tokens": 3}\n'
                    '{"request_id": "b", "arrival_s": 1.0, "prompt_tokens": 0, "output_tokens": 3}\n'
                    '{"request_id": "c", "arrival_s": 1.5, "prompt_tokens": 7, "output_tokens": 0}\n')
    res = replay_with(trace=read_trace(path, "canonical"))
    by_id = {r.request_id: r for r in res.requests}
    assert {r.status for r in res.requests} == {RequestStatus.COMPLETED}
    assert (by_id["b"].prompt_tokens, by_id["b"].output_tokens) == (1, 3)
    assert (by_id["c"].prompt_tokens, by_id["c"].output_tokens) == (7, 1)


def test_max_model_len_rejects_long_requests():
    trace = [dataclasses.replace(t, prompt_tokens=900, output_tokens=200) for t in make_trace(3)]
    res = replay_with(trace=trace, cluster={"models": [{"name": "default", "max_model_len": 1000}]})
    assert {r.status for r in res.requests} == {RequestStatus.REJECTED}
    assert all("max_model_len 1000" in r.reason for r in res.requests)


def test_queue_limit_sheds_load_with_a_reason():
    res = replay_with(
        trace=make_trace(200, qps=50),
        cluster={"models": [{"name": "default", "replicas": 1, "max_num_seqs": 4}]},
        plugins={"settings": {"queue-limit": {"max_queued": 5}}},
    )
    shed = [r for r in res.requests if r.status is RequestStatus.REJECTED]
    assert shed and all(r.reason.startswith("queue full") for r in shed)
    assert {d.plugin for d in res.decisions if d.action == "reject"} == {"queue-limit"}
    assert_conserved(res.summary, res.requests)


# --- worker failures (events fed to the core by hand) ----------------------------------------


def test_worker_failure_reroutes_and_fails_after_max_retries(harness):
    h = harness(cluster={"models": [{"name": "default", "replicas": 3}], "max_retries": 2})
    assert h.worker_ids == ["default-0", "default-1", "default-2"]
    r = Request("q1", 0.1, 100, 50)
    out = h.handle(ev.RequestArrived(0.1, r))
    (batch,) = h.batches(out)
    first_batch = batch
    seen = [r.worker_id]
    for i in range(2):
        out = h.handle(ev.WorkerFailed(1.0 + i, r.worker_id, "GPU fell off the bus"))
        (batch,) = h.batches(out)
        assert r.status is RequestStatus.RUNNING and r.num_retries == i + 1
        assert r.worker_id not in seen and batch.worker_id == r.worker_id
        seen.append(r.worker_id)
    # A late report from a failed worker changes nothing.
    assert h.handle(ev.BatchFinished(2.5, "default-0", first_batch.batch_id)) == []
    out = h.handle(ev.WorkerFailed(3.0, r.worker_id, "GPU fell off the bus"))
    assert r.status is RequestStatus.FAILED
    assert "worker failed 3 times" in r.reason and "GPU fell off the bus" in r.reason
    assert [a.request for a in out if isinstance(a, act.FinishRequest)] == [r]
    fail = [d for d in h.log.decisions if d.action == "fail"]
    assert [(d.subject, d.plugin) for d in fail] == [("q1", "core")]
    assert [e.kind for e in h.log.events if isinstance(e, ev.WorkerChanged)].count("failed") == 3
    summary = h.core.finish()
    assert summary["num_failed"] == 1
    assert_conserved(summary, h.log.finished)


def test_worker_failure_recomputes_lost_output_on_the_new_worker(harness):
    h = harness(cluster={"models": [{"name": "default", "replicas": 2}]})
    r = Request("q1", 0.0, 100, 50)
    (prefill,) = h.batches(h.handle(ev.RequestArrived(0.0, r)))
    (decode,) = h.batches(h.handle(ev.BatchFinished(0.05, prefill.worker_id, prefill.batch_id)))
    assert r.output_tokens == 1 and decode.decode == (r,) and decode.max_iterations == 49
    (redo,) = h.batches(h.handle(ev.WorkerFailed(0.1, prefill.worker_id, "xid 79")))
    assert redo.worker_id != prefill.worker_id
    assert r.recompute_tokens == 1 and r.num_computed_tokens == 0
    assert redo.prefill == ((r, 101),)  # the prompt plus the token it had generated
    h.handle(ev.BatchFinished(0.2, redo.worker_id, redo.batch_id))
    (decode,) = h.batches(h.actions[-1:])
    h.handle(ev.BatchFinished(1.0, decode.worker_id, decode.batch_id, num_iterations=decode.max_iterations))
    assert r.status is RequestStatus.COMPLETED and r.output_tokens == 50
    assert r.scheduled_s == 0.0 and r.first_token_s == 0.05 and r.finish_s == 1.0


def test_out_of_memory_batch_failure_replans_memory_and_retries(harness):
    h = harness(cluster={"models": [{"name": "default", "replicas": 1}]})
    r = Request("q1", 0.0, 100, 5)
    (batch,) = h.batches(h.handle(ev.RequestArrived(0.0, r)))
    out = h.handle(ev.BatchFailed(0.01, batch.worker_id, batch.batch_id, "CUDA out of memory", out_of_memory=True))
    w = h.core.workers[batch.worker_id]
    assert (w.max_num_seqs, w.max_batch_tokens) == (64, 4096)
    plan = [d for d in h.log.decisions if d.action == "memory_plan"][-1]
    assert plan.payload["trigger"] == "out_of_memory" and plan.plugin == "static-memory"
    (retry,) = h.batches(out)
    assert retry.prefill == ((r, 100),) and r.num_preemptions == 1


def test_unknown_events_and_duplicate_request_ids_are_errors(harness):
    h = harness()
    with pytest.raises(TypeError, match="does not handle RequestFinished events"):
        h.handle(ev.RequestFinished(0.0, Request("x", 0.0, 1, 1)))
    h.handle(ev.RequestArrived(0.0, Request("dup", 0.0, 10, 2)))
    with pytest.raises(ValueError, match="already in the system"):
        h.handle(ev.RequestArrived(0.1, Request("dup", 0.1, 10, 2)))


# --- autoscaling -----------------------------------------------------------------------------


class StepScaler(Plugin):
    """One replica, three from t=5 s, one again from t=15 s."""

    name = "step-scaler"

    @hookimpl
    def cp_scale(self, ctx, model, workers):
        target = 3 if 5 <= ctx.now_s < 15 else 1
        return ScaleDecision(model, target, f"step to {target}")


def test_scale_up_respects_cold_start_and_scale_down_drains():
    res = replay_with(
        StepScaler(),
        trace=make_trace(300, qps=12, output_tokens=96, seed=1),
        cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": 4.0}]},
    )
    s = res.summary
    assert s["num_completed"] == 300
    assert_conserved(s, res.requests)
    scale = [d for d in res.decisions if d.action == "scale"]
    assert [(d.time_s, d.plugin, d.payload) for d in scale] == [
        (5.0, "step-scaler", {"from": 1, "to": 3}),
        (15.0, "step-scaler", {"from": 3, "to": 1}),
    ]
    assert s["num_scale_events"] == 2
    changes: dict[str, dict[str, float]] = {}
    for e in res.events:
        if isinstance(e, ev.WorkerChanged):
            changes.setdefault(e.worker_id, {})[e.kind] = e.time_s
    for wid in ("default-1", "default-2"):
        assert changes[wid]["starting"] == 5.0
        assert changes[wid]["ready"] == pytest.approx(9.0)  # cold start
    drained = [wid for wid, c in changes.items() if "draining" in c]
    assert len(drained) == 2 and all(changes[w]["draining"] == 15.0 for w in drained)
    routes = [(d.time_s, d.payload["worker"]) for d in res.decisions if d.action == "route"]
    for wid in drained:
        assert "stopped" in changes[wid]
        served = [r.finish_s for r in res.requests if r.worker_id == wid]
        assert served, f"{wid} never served anything"
        assert changes[wid]["stopped"] >= max(served)  # it finished its work before stopping
        assert all(t < 15.0 for t, w in routes if w == wid)  # nothing new after draining began
    first_served = min(r.scheduled_s for r in res.requests if r.worker_id in ("default-1", "default-2"))
    assert first_served >= 9.0  # nothing ran on a new replica before it was ready


def test_fixed_replicas_replaces_a_failed_worker_after_its_cold_start(harness):
    h = harness(cluster={"models": [{"name": "default", "replicas": 2, "cold_start_s": 12.0}]})
    h.handle(ev.WorkerFailed(0.5, "default-1", "preempted spot instance"))
    out = h.handle(ev.Tick(1.0))
    assert [a.worker_id for a in out if isinstance(a, act.StartWorker)] == ["default-2"]
    assert h.core.workers["default-2"].state is WorkerState.STARTING
    scale = [d for d in h.log.decisions if d.action == "scale"]
    assert scale[0].plugin == "fixed-replicas" and scale[0].payload == {"from": 1, "to": 2}


# --- dynamic batching, guardians, caching ----------------------------------------------------


def test_sync_guardian_delays_completion_by_its_latency():
    trace = make_trace(60, qps=4)
    base = replay_with(trace=trace)
    checked = replay_with(
        trace=trace,
        plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync"}}},
        sim={"guardian_latency_s": 0.25},
    )
    before = {r.request_id: r for r in base.requests}
    assert len(checked.requests) == 60
    for r in checked.requests:
        b = before[r.request_id]
        assert r.guardian_verdict == "pass"
        assert r.first_token_s == pytest.approx(b.first_token_s, rel=1e-12)
        assert r.finish_s == pytest.approx(b.finish_s + 0.25, rel=1e-12)
    assert checked.summary["e2e_mean_s"] == pytest.approx(base.summary["e2e_mean_s"] + 0.25)
    assert sum(d.action == "guardian_check" for d in checked.decisions) == 60


def test_async_guardian_does_not_delay_and_blocked_responses_say_why():
    trace = make_trace(30, qps=4)
    base = replay_with(trace=trace)
    fast = replay_with(trace=trace, plugins={"settings": {"sampled-guardian": {"rate": 1.0}}})
    assert timings(fast.requests) == timings(base.requests)
    assert sum(d.action == "guardian_verdict" for d in fast.decisions) == 30
    blocked = replay_with(
        trace=trace,
        plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync"}}},
        sim={"guardian_block_rate": 1.0},
    )
    assert {(r.status, r.guardian_verdict, r.reason) for r in blocked.requests} == {
        (RequestStatus.BLOCKED, "block", "blocked by guardian: simulated label: harmful")
    }
    assert blocked.summary["num_blocked"] == 30 and blocked.summary["goodput_rps"] == 0


def test_exact_cache_serves_a_repeated_prompt():
    trace = list(read_trace(FIXTURES / "prompts.jsonl", "canonical"))
    res = replay_with(trace=trace)
    by_id = {r.request_id: r for r in res.requests}
    assert {rid for rid, r in by_id.items() if r.cache_hit} == {"greet-2", "sum-2"}
    hit = by_id["sum-2"]
    assert hit.cache_hit == "exact" and hit.worker_id is None
    assert hit.finish_s == pytest.approx(hit.arrival_s + 0.002)  # the cache's latency, no worker time
    assert hit.output_tokens == 40
    # Different generation parameters are a different response.
    assert by_id["greet-3"].cache_hit is None and by_id["greet-3"].worker_id is not None
    decisions = [d for d in res.decisions if d.action == "cache_hit"]
    assert [(d.subject, d.plugin) for d in decisions] == [("greet-2", "exact-cache"), ("sum-2", "exact-cache")]
    assert res.summary["cache_hits"] == 2 and res.summary["cache_hit_rate"] == pytest.approx(2 / 6)
    assert_timings_consistent(res.requests)


def test_event_log_sees_every_arrival_once():
    log = EventLog()
    summary, _ = replay(make_trace(25), make_config(), record=False, extra_plugins=[log])
    arrivals = [e.request.request_id for e in log.events if isinstance(e, ev.RequestArrived)]
    assert arrivals == [str(i) for i in range(25)]
    assert summary["num_requests"] == 25


def test_an_admission_that_changes_the_priority_is_a_recorded_decision():
    from controlplane.decisions import Admission

    class Demoter(Plugin):
        name = "demoter"

        @hookimpl
        def cp_admit_request(self, ctx, request):
            return Admission(True, "batch traffic goes last", priority=-5) if request.request_id != "0" else None

    res = replay_with(Demoter(), trace=make_trace(4))
    changes = [d for d in res.decisions if d.action == "prioritize"]
    assert [(d.subject, d.plugin, d.reason, d.payload) for d in changes] == [
        (rid, "demoter", "batch traffic goes last", {"from": 0, "to": -5}) for rid in ("1", "2", "3")]
    assert [r.priority for r in sorted(res.requests, key=lambda r: r.request_id)] == [0, -5, -5, -5]


def test_a_plugin_reload_keeps_the_run_s_plugin_error_counts():
    """The daemon's reload binds a new plugin set, with a monitor of its own: the summary's error counts
    started from zero again (Prometheus kept the total)."""
    from controlplane.plugin_manager import build_plugin_set, discover_plugins
    from controlplane.session import RunSession, fallback_plugins
    from controlplane.testing import make_config

    config = make_config()
    session = RunSession(config, mode="sim", record=False)
    core = session.core
    core._monitor.record("least-loaded", "cp_route_request", ValueError("boom"))
    available = discover_plugins()
    core.bind_plugins(build_plugin_set(config.plugins.enabled, config.plugins.settings, available=available),
                      fallback_plugins(available))
    core._monitor.record("least-loaded", "cp_route_request", ValueError("again"))
    assert core._monitor.num_errors == 2
    assert core._monitor.counts_by_plugin() == {"least-loaded": {"cp_route_request": 2}}


def test_a_model_no_replica_will_ever_serve_has_its_requests_refused_at_arrival(caplog):
    """replicas: 0 and fixed-replicas the only autoscaler: its requests waited in flight until the run ended
    (the daemon answered 503 at once); they are refused as unavailable, and the replay warns at its start."""
    from controlplane.types import ReasonCode

    trace = [dataclasses.replace(t, model="small" if i % 3 == 1 else "default") for i, t in enumerate(make_trace(9))]
    cluster = {"models": [{"name": "default", "replicas": 1}, {"name": "small", "replicas": 0}]}
    plugins = {"enabled": ["least-loaded", "continuous-batching", "fixed-replicas", "builtin-latency-models"]}
    with caplog.at_level("WARNING", logger="sim.replay"):
        res = replay_with(trace=trace, cluster=cluster, plugins=plugins)
    small = [r for r in res.requests if r.model == "small"]
    assert len(small) == 3 and all(r.reason_code is ReasonCode.UNAVAILABLE for r in small)
    assert small[0].reason.startswith("model 'small' will never be served: no worker is configured")
    assert res.summary["num_in_flight"] == 0 and res.summary["num_completed"] == 6
    assert "model 'small' will never be served" in caplog.text
    hpa = {"enabled": ["hpa", *plugins["enabled"]], "settings": {"hpa": {"min_replicas": 0}}}
    scaled = replay_with(trace=trace, cluster=cluster, plugins=hpa)  # (an autoscaler that may start one)
    assert not any(r.reason_code is ReasonCode.UNAVAILABLE for r in scaled.requests)
