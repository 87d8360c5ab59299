"""The SimPy driver: arrivals, iteration timing, interrupts, cold starts, ticks and stalls."""

from __future__ import annotations

import dataclasses

import pytest
import simpy

from controlplane import Plugin, hookimpl
from controlplane import events as ev
from controlplane.decisions import ScaleDecision
from controlplane.config import DEFAULT_PLUGINS
from controlplane.testing import make_config, make_trace, replay_with
from controlplane.types import RequestStatus
from controlplane.session import RunSession
from sim.driver import STALL_TICKS, SimDriver, request_from_trace, run_until
from sim.replay import build_latency_models
from sim.traces import TraceRequest

# One second per iteration, whatever the batch: timings become whole numbers.
ONE_SECOND = {"base_s": 1.0, "prefill_s_per_token": 0.0, "decode_s_per_seq": 0.0,
              "decode_s_per_context_token": 0.0}


def _one_replica(**deployment):
    return {"models": [{"name": "default", "replicas": 1, **deployment}]}


def test_request_from_trace_copies_every_field():
    t = TraceRequest("r9", 1.5, 100, 20, model="chat", tenant="acme", priority=2, prompt="hi",
                     hash_ids=(1, 2), hash_block_tokens=512, params=(("temperature", 0.2),))
    r = request_from_trace(t)
    assert (r.request_id, r.arrival_s, r.prompt_tokens, r.max_output_tokens) == ("r9", 1.5, 100, 20)
    assert (r.model, r.tenant, r.priority, r.prompt) == ("chat", "acme", 2, "hi")
    assert (r.hash_ids, r.hash_block_tokens, r.params) == ((1, 2), 512, (("temperature", 0.2),))
    assert r.status is RequestStatus.WAITING and r.output_tokens == 0


def test_iteration_times_come_from_the_latency_model():
    trace = [TraceRequest("a", 0.5, 100, 3), TraceRequest("b", 10.0, 100, 1)]
    res = replay_with(trace=trace, cluster=_one_replica(latency=ONE_SECOND))
    a, b = sorted(res.requests, key=lambda r: r.request_id)
    assert (a.scheduled_s, a.first_token_s, a.finish_s) == (0.5, 1.5, 3.5)  # prefill, then 2 decodes
    assert (b.first_token_s, b.finish_s) == (11.0, 11.0)  # one token: the prefill's


def test_initial_replicas_are_warm():
    res = replay_with(trace=make_trace(3), cluster={"models": [{"name": "default", "replicas": 3,
                                                                  "cold_start_s": 100.0}]})
    ready = [(e.worker_id, e.time_s) for e in res.events if isinstance(e, ev.WorkerChanged) and e.kind == "ready"]
    assert ready == [("default-0", 0.0), ("default-1", 0.0), ("default-2", 0.0)]


def test_an_arrival_at_time_zero_meets_ready_replicas_with_their_memory_plan():
    # The initial replicas are ready, their KV cache planned, before the first arrival: a request at t=0 too big
    # for any replica's cache is refused at its arrival as a later one is. (It was routed to a replica not yet
    # planned and refused there, "does not fit its worker", with a worker set.)
    trace = [TraceRequest("0", 0.0, 4808, 10), TraceRequest("1", 0.5, 100, 5), TraceRequest("2", 1.0, 3180, 8)]
    res = replay_with(trace=trace, cluster={"models": [{"name": "default", "replicas": 2, "num_kv_blocks": 100}]})
    by_id = {r.request_id: r for r in res.requests}
    for rid in ("0", "2"):
        r = by_id[rid]
        assert r.status is RequestStatus.REJECTED and r.worker_id is None, rid
        assert r.reason_code.value == "does_not_fit" and r.reason.startswith("does not fit: prompt"), rid
    assert by_id["1"].status is RequestStatus.COMPLETED
    assert res.summary["reject_reasons"] == {"does not fit": 2}
    first = [d.action for d in res.decisions][:3]
    assert first == ["memory_plan", "memory_plan", "reject"]


def test_an_arrival_interrupts_a_long_decode_at_the_next_iteration_boundary():
    trace = [TraceRequest("long", 0.0, 100, 2000), TraceRequest("late", 1.0, 100, 5)]
    res = replay_with(trace=trace, cluster=_one_replica())
    late = {r.request_id: r for r in res.requests}["late"]
    assert 1.0 <= late.scheduled_s < 1.01  # one decode iteration is ~5 ms, the whole run ~10 s
    batches = [d for d in res.decisions if d.action == "batch"]
    assert len(batches) < 12  # a handful of batches, not one per token
    # The first batch prefills "long" and goes on decoding it until "late" cuts it short.
    assert batches[0].time_s == 0.0 and batches[0].payload["prefill"] == 1
    assert batches[0].payload["iterations"] == 2000
    assert len([d for d in batches if d.time_s < 1.0]) == 1


def test_a_prefill_goes_on_decoding_with_the_same_timings_as_two_batches():
    trace = [TraceRequest("a", 0.0, 300, 40), TraceRequest("b", 0.1, 200, 30), TraceRequest("c", 2.0, 50, 3)]
    fast = {r.request_id: r for r in replay_with(trace=trace, cluster=_one_replica()).requests}
    exact = {r.request_id: r for r in replay_with(trace=trace, cluster=_one_replica(), sim={"exact": True}).requests}
    for rid, r in fast.items():
        e = exact[rid]
        assert (r.first_token_s, r.finish_s, r.output_tokens) == pytest.approx(
            (e.first_token_s, e.finish_s, e.output_tokens), rel=1e-12), rid


def test_events_grow_with_batches_not_tokens():
    trace = make_trace(100, qps=1, output_tokens=256)
    res = replay_with(trace=trace)
    total_tokens = sum(t.output_tokens for t in trace)
    assert len(res.events) < total_tokens / 5


def test_a_trace_out_of_arrival_order_is_an_error():
    trace = make_trace(5)
    trace[2], trace[3] = trace[3], trace[2]
    with pytest.raises(ValueError, match=rf"not in arrival order at request '{trace[3].request_id}'"):
        replay_with(trace=trace)


class _KeepsNone(Plugin):
    """An autoscaler that keeps zero replicas (fixed-replicas with none is refused at arrival instead)."""

    name = "keeps-none"

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        return ScaleDecision(model, 0, "none")


def test_requests_that_cannot_progress_end_the_run_after_a_few_idle_ticks():
    # No replica and an autoscaler that keeps it that way: nothing can ever serve them.
    trace = make_trace(4, qps=2)
    res = replay_with(_KeepsNone(), trace=trace, cluster={"models": [{"name": "default", "replicas": 0}]},
                      sim={"tick_s": 0.5})
    s = res.summary
    assert s["num_in_flight"] == 4 and s["num_completed"] == 0
    last = trace[-1].arrival_s
    assert last < s["sim_end_s"] <= last + (STALL_TICKS + 2) * 0.5


def test_until_s_stops_the_clock():
    res = replay_with(trace=make_trace(200, qps=5), sim={"until_s": 12.5})
    assert res.summary["num_in_flight"] > 0
    assert res.summary["sim_end_s"] == 12.5  # (it ended at the last event before: 12.49..., GPU-seconds with it)
    assert max(r.arrival_s for r in res.requests) <= 12.5


def test_ticks_sample_metrics_every_tick_s():
    res = replay_with(trace=make_trace(30, qps=5), sim={"tick_s": 0.25, "metrics_interval_s": 0.25})
    times = sorted({e.time_s for e in res.events if isinstance(e, ev.MetricSample) and e.name == "replicas"})
    assert times[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(b - a == pytest.approx(0.25) for a, b in zip(times, times[1:]))


def test_metric_samples_follow_metrics_interval_s_not_every_tick():
    res = replay_with(trace=make_trace(30, qps=5), sim={"tick_s": 0.25, "metrics_interval_s": 1.0})
    times = sorted({e.time_s for e in res.events if isinstance(e, ev.MetricSample) and e.name == "replicas"})
    assert times[:3] == [0.25, 1.25, 2.25]
    assert all(b - a == pytest.approx(1.0) for a, b in zip(times[:-1], times[1:-1]))
    # the run's end: a closing sample of the part interval since the last (docs/schema.md, `metric_sample`)
    assert times[-1] == pytest.approx(res.summary["sim_end_s"]) and 0 < times[-1] - times[-2] < 1.0


def test_gpu_seconds_count_every_replica_for_the_whole_run():
    res = replay_with(trace=make_trace(40, qps=4), cluster={"models": [{"name": "default", "replicas": 2,
                                                                         "gpus_per_replica": 4}]})
    assert res.summary["gpu_seconds"] == pytest.approx(2 * 4 * res.summary["sim_end_s"])


def test_progress_is_reported_through_the_arrivals_and_the_drain_after_them():
    from controlplane.session import RunSession

    seen: list[tuple[int, float]] = []
    config = make_config()
    session = RunSession(config, mode="sim", record=False)
    driver = SimDriver(session.core, build_latency_models(session), cold_start_s={"default": 30.0},
                       on_progress=lambda n, t: seen.append((n, t)))
    trace = make_trace(600, qps=50)
    summary = driver.run(trace)
    assert summary["num_requests"] == 600 == driver.num_arrived
    counts = [n for n, _ in seen]
    assert counts == sorted(counts) and counts[-1] == 600 and 256 in counts
    # after the last arrival the clock is still reported while what arrived is served (a saturated run's drain
    # can be long: a progress bar that stops there reads as a hang)
    drain = [t for n, t in seen if n == 600]
    assert drain[0] <= trace[-1].arrival_s + 1.0 and len(drain) > 1
    assert summary["sim_end_s"] - 1.0 <= drain[-1] <= summary["sim_end_s"]


def test_progress_reports_the_clock_through_an_idle_gap():
    # an hour without arrivals between two requests: the bar stood still at the first for the whole gap (a day of
    # idle ticks looks like a hang); now the clock is reported each simulated minute
    from controlplane.session import RunSession
    from sim.traces import TraceRequest

    seen: list[tuple[int, float]] = []
    session = RunSession(make_config(), mode="sim", record=False)
    driver = SimDriver(session.core, build_latency_models(session), cold_start_s={"default": 30.0},
                       on_progress=lambda n, t: seen.append((n, t)))
    driver.run([TraceRequest("a", 0.0, 10, 2), TraceRequest("b", 3600.0, 10, 2)])
    in_gap = [t for n, t in seen if n == 1 and 0 < t < 3600]
    assert len(in_gap) >= 55 and all(later - earlier <= 60.0 for earlier, later in zip(in_gap, in_gap[1:]))


def test_the_simulator_asks_the_core_for_no_finish_actions():
    # The simulator answers no client: its core makes no FinishRequest, a core on its own does.
    from controlplane import actions as act

    session = RunSession(make_config(), mode="sim", record=False)
    assert session.core.finish_actions
    driver = SimDriver(session.core, build_latency_models(session), cold_start_s={})
    assert not session.core.finish_actions
    seen: list[object] = []
    handle = session.core.handle
    driver._core_handle = lambda e: seen.extend(out := handle(e)) or out
    summary = driver.run(make_trace(50, qps=10))
    assert summary["num_completed"] == 50 and seen
    assert not any(isinstance(a, act.FinishRequest) for a in seen)


def test_every_batch_end_is_one_event_object_with_that_batchs_fields():
    # The driver hands the core one BatchFinished for the run, its fields set at each batch end (as its Tick).
    from controlplane import actions as act

    session = RunSession(make_config(), mode="sim", record=False)
    driver = SimDriver(session.core, build_latency_models(session), cold_start_s={})
    ends: list[tuple] = []
    started: dict[int, str] = {}
    handle = session.core.handle

    def noting(e):
        if type(e) is ev.BatchFinished:
            ends.append((e, e.time_s, e.worker_id, e.batch_id, e.num_iterations, e.finished))
        out = handle(e)
        started.update((a.batch.batch_id, a.batch.worker_id) for a in out if isinstance(a, act.StartBatch))
        return out

    driver._core_handle = noting
    summary = driver.run(make_trace(60, qps=10))
    assert summary["num_completed"] == 60 and len(ends) > 60
    assert all(end[0] is ends[0][0] for end in ends)  # (kept alive here: a new event each time would show)
    assert len({end[3] for end in ends}) == len(ends) == len(started)  # each batch ends once
    assert all(started[b] == wid and k >= 1 and finished == () for _, _, wid, b, k, finished in ends)
    assert [end[1] for end in ends] == sorted(end[1] for end in ends)


def test_two_models_are_served_by_their_own_workers():
    trace = [dataclasses.replace(t, model="chat" if i % 2 else "code") for i, t in enumerate(make_trace(40, qps=8))]
    res = replay_with(trace=trace, cluster={"models": [{"name": "code", "replicas": 1}, {"name": "chat", "replicas": 2}]})
    assert res.summary["num_completed"] == 40
    for r in res.requests:
        assert r.worker_id.startswith(f"{r.model}-")
    assert {r.worker_id for r in res.requests if r.model == "chat"} == {"chat-0", "chat-1"}


def test_a_sync_guardian_keeps_the_run_alive_until_its_verdict():
    trace = [TraceRequest("only", 0.0, 10, 1)]
    res = replay_with(trace=trace, plugins={"enabled": list(DEFAULT_PLUGINS),
                                            "settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync"}}},
                      sim={"guardian_latency_s": 30.0})
    (r,) = res.requests
    assert r.status is RequestStatus.COMPLETED and r.guardian_verdict == "pass"
    assert r.finish_s == pytest.approx(r.first_token_s + 30.0)


def _timers_and_log(env, order):
    """Timers at equal and different times, some scheduling more: the order they run in is the log."""
    def fire(name, then=()):
        def cb(event):
            order.append((env.now, name))
            for delay, nxt in then:
                t = simpy.events.Timeout(env, delay)
                t.callbacks.append(fire(nxt))
        return cb
    for delay, name, then in ((2.0, "a", ((0.0, "a0"), (1.0, "a1"))), (2.0, "b", ()), (0.5, "c", ((1.5, "c1"),)),
                              (3.0, "d", ()), (9.0, "late", ())):
        t = simpy.events.Timeout(env, delay)
        t.callbacks.append(fire(name, then))


def test_run_until_processes_events_as_simpy_run_does():
    logs = []
    for run in ("simpy", "ours"):
        env, order = simpy.Environment(), []
        _timers_and_log(env, order)
        done = env.event()
        stop = simpy.events.Timeout(env, 3.0)
        stop.callbacks.append(lambda _e: done.succeed())
        if run == "simpy":
            env.run(until=done)
        else:
            run_until(env, done)
        logs.append((order, env.now))
    assert logs[0] == logs[1]
    # ties in time go in scheduling order (c1 was scheduled before a0); "late" is never reached
    assert [name for _, name in logs[1][0]] == ["c", "a", "b", "c1", "a0", "d", "a1"]


def test_run_until_raises_a_failed_event_and_an_empty_schedule():
    env = simpy.Environment()
    bad = env.event()
    bad.fail(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        run_until(env, env.event())
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        run_until(simpy.Environment(), simpy.Environment().event())


def test_driver_timers_are_simpy_timeouts_in_simpy_order():
    """``_after`` puts the same heap entry on the queue as ``Timeout(env, delay, value)``."""
    cfg = make_config(cluster=_one_replica(latency=ONE_SECOND))
    with RunSession(cfg, mode="sim", record=False) as session:
        driver = SimDriver(session.core, {}, cold_start_s={})
    env = driver.env
    seen: list = []
    t2 = simpy.events.Timeout(env, 1.0, "y")
    t2.callbacks.append(lambda e: seen.append(("timeout", e._value)))
    t1 = driver._after(1.0, lambda e: seen.append(("after", e._value)), "x")
    assert isinstance(t1, simpy.events.Timeout) and t1.triggered and t1.ok and t1.value == "x"
    (at2, p2, e2, _), (at1, p1, e1, _) = sorted(env._queue)
    assert (at1, p1, e1) == (at2, p2, e2 + 1)  # same time and priority, the next sequence number
    with pytest.raises(ValueError, match="Negative delay"):
        driver._after(-1.0, seen.append, None)
    env.run()
    assert seen == [("timeout", "y"), ("after", "x")] and env.now == 1.0


def test_arrivals_and_ticks_beside_the_heap_run_in_heap_order():
    """The next arrival and the next tick are kept beside SimPy's heap (`SimDriver._next_beside`);
    the same replay through SimPy's own loop (``until_s`` set: every timer on the heap) sees the
    same events in the same order, ties in time included (arrivals on tick and batch boundaries)."""
    trace = [TraceRequest(f"r{i}", t, 100, n) for i, (t, n) in enumerate(
        [(0.0, 3), (1.0, 2), (1.0, 1), (2.0, 4), (2.5, 1), (3.0, 2), (5.0, 1), (5.0, 3), (9.0, 2)])]
    runs = []
    ticks = {"tick_s": 0.5, "metrics_interval_s": 0.5}
    for sim in (ticks, {**ticks, "until_s": 1e6}):
        res = replay_with(trace=trace, cluster=_one_replica(latency=ONE_SECOND), sim=sim)
        events = [(type(e).__name__, e.time_s, getattr(e, "action", None), getattr(e, "subject", None))
                  for e in res.events]
        finished = sorted((r.request_id, r.scheduled_s, r.first_token_s, r.finish_s) for r in res.requests)
        runs.append((events, finished, res.summary["num_completed"]))
    assert runs[0] == runs[1]
    assert runs[0][2] == len(trace)
    assert any(name == "MetricSample" and t == 1.0 for name, t, *_ in runs[0][0])  # a tick at an arrival's time


def test_the_driver_s_own_stream_is_made_when_first_read():
    import numpy as np

    with RunSession(make_config(), mode="sim", record=False) as session:
        driver = SimDriver(session.core, {}, cold_start_s={}, seed=3)
        assert driver._rng is None
        assert driver.rng is driver.rng
        assert driver.rng.random(3).tolist() == np.random.default_rng([3, 7]).random(3).tolist()
