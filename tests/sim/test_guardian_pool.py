"""Simulated guardian replicas: batches, queues, timeouts and what they cost."""

from __future__ import annotations

import pytest

from controlplane import hookimpl
from controlplane.decisions import GuardianPlan
from controlplane.testing import replay_with
from controlplane.types import RequestStatus
from sim.traces.record import TraceRequest


#: One served replica per request: n requests at t=0 generate at once and ask their checks together (one replica
#: ready at t=0 starts the first arrival's batch at once, the others in the next).
APART = {"models": [{"name": "default", "replicas": 4}]}


def _run(spec, n=3, cluster=None, **settings):
    trace = [TraceRequest(str(i), 0.0, 16, 1) for i in range(n)]
    return replay_with(trace=trace, plugins={"settings": {"sampled-guardian": {
        "rate": 1.0, "mode": "sync", "guardian": spec["name"], **settings}}}, guardians={"models": [spec]},
        **({"cluster": cluster} if cluster else {}))


def test_a_check_past_its_timeout_answers_timeout_and_a_queued_one_never_runs():
    spec = {"name": "g", "replicas": 1, "timeout_s": 1.5, "latency": {"base_s": 1.0, "max_batch": 1}}
    res = _run(spec)
    verdicts = sorted(r.guardian_verdict for r in res.requests)
    assert verdicts == ["pass", "timeout", "timeout"]
    g = res.summary["guardians"]["g"]
    # the first check ran 0-1 s, the second 1-2 s (its verdict came too late), the third never ran
    assert g["checks"] == 3 and g["batches"] == 2 and g["timeouts"] == 2
    assert res.summary["guardian_gpu_seconds"] == pytest.approx(2.0)
    assert all(r.status is RequestStatus.COMPLETED for r in res.requests)  # fail open (the default)


def test_a_batch_checks_several_at_once_priced_by_its_tokens():
    spec = {"name": "g", "replicas": 1, "gpus_per_replica": 2,
            "latency": {"base_s": 0.5, "per_token_s": 0.01, "max_batch": 8}}
    res = _run(spec, n=4, cluster=APART)
    g = res.summary["guardians"]["g"]
    # one batch of 4 output checks, each 16 prompt + 1 answer token: 0.5 + 0.01 * 68 s, on 2 GPUs
    assert g["batches"] == 1
    assert res.summary["guardian_gpu_seconds"] == pytest.approx(2 * (0.5 + 0.01 * 68))
    assert {round(r.finish_s - r.first_token_s, 6) for r in res.requests} == {round(0.5 + 0.68, 6)}


def test_an_input_check_prices_only_the_prompt():
    spec = {"name": "g", "latency": {"base_s": 0.0, "per_token_s": 0.01, "max_batch": 1}}
    res = _run(spec, n=1, stages=["input"])
    assert res.summary["guardian_gpu_seconds"] == pytest.approx(0.16)


def test_mean_wait_counts_the_checks_that_timed_out_in_the_queue_at_their_timeout():
    spec = {"name": "g", "replicas": 1, "timeout_s": 1.5, "latency": {"base_s": 1.0, "max_batch": 1}}
    g = _run(spec).summary["guardians"]["g"]
    # waits: about 0 s (ran at once), 1 s (ran when the first was done, too late), 1.5 s (never
    # ran: its timeout); the answers were asked a few ms apart, as their generations ended
    assert g["mean_wait_s"] == pytest.approx((0.0 + 1.0 + 1.5) / 3, abs=0.01)


def test_the_guardians_replicas_are_priced_for_the_whole_run_apart_from_the_served_models():
    spec = {"name": "g", "replicas": 2, "gpus_per_replica": 1, "gpu": "h100-80gb",
            "latency": {"base_s": 0.1, "max_batch": 8}}
    s = _run(spec, n=4, cluster=APART).summary
    end = s["sim_end_s"]
    assert s["guardians"]["g"]["held_gpu_seconds"] == pytest.approx(2 * end, rel=1e-6)
    assert s["guardian_held_gpu_seconds"] == pytest.approx(2 * end, rel=1e-6)
    assert s["guardian_gpu_seconds"] == pytest.approx(0.1)  # busy: one batch
    assert s["guardian_gpu_hours"] == pytest.approx(2 * end / 3600, rel=1e-6)
    assert s["guardian_cost_usd"] == pytest.approx(2 * end / 3600 * 4.00, rel=1e-6)  # h100-80gb list price
    assert s["total_cost_usd"] == pytest.approx(s["cost_usd"] + s["guardian_cost_usd"], rel=1e-6)
    none = replay_with(trace=[TraceRequest(str(i), 0.0, 16, 1) for i in range(4)], cluster=APART).summary
    assert none["gpu_seconds"] == s["gpu_seconds"] and none["cost_usd"] == s["cost_usd"]  # served models alone
    assert "guardian_cost_usd" not in none


def test_a_guardian_without_a_gpu_of_its_own_is_priced_at_the_served_models_gpu_and_a_cpu_one_costs_nothing():
    s = _run({"name": "g", "gpus_per_replica": 0}, n=1).summary
    assert s["guardian_held_gpu_seconds"] == 0 and s["guardian_cost_usd"] == 0 and s["total_cost_usd"] == s["cost_usd"]
    s = _run({"name": "g", "replicas": 3}, n=1).summary
    assert s["guardian_cost_usd"] == pytest.approx(3 * s["sim_end_s"] / 3600 * 2.50, rel=1e-6)  # a100-80gb


class _PlanNaming:
    """A third-party plan (no settings the built-in planners would warn about) naming one guardian."""

    name = "plan-naming"

    def __init__(self, guardian: str) -> None:
        self.guardian = guardian

    @hookimpl
    def cp_guardian_plan(self, ctx, request, stage):
        return GuardianPlan(True, guardian=self.guardian, mode="sync", reason="all") if stage == "output" else None


def test_an_undeclared_guardian_beside_declared_ones_answers_unavailable_as_live_and_is_warned_of_once(caplog):
    trace = [TraceRequest(str(i), 0.0, 16, 1) for i in range(3)]
    with caplog.at_level("WARNING", logger="sim.guardian_pool"):
        res = replay_with(_PlanNaming("gaurd"), trace=trace, sim={"guardian_latency_s": 5.0},
                          guardians={"models": [{"name": "guard", "replicas": 1}]})
    assert [r.guardian_verdict for r in res.requests] == ["unavailable"] * 3
    assert all(r.status is RequestStatus.COMPLETED and r.finish_s < 1.0 for r in res.requests)  # no made-up delay
    assert res.summary["guardians"]["guard"]["checks"] == 0
    warnings = [r.getMessage() for r in caplog.records if "'gaurd'" in r.getMessage()]
    assert len(warnings) == 1 and "guardians.models does not declare it (declared: guard)" in warnings[0]


def test_with_no_guardian_declared_a_plans_guardian_is_the_fixed_delay_and_the_label():
    trace = [TraceRequest(str(i), 0.0, 16, 1) for i in range(3)]
    res = replay_with(_PlanNaming("any"), trace=trace, sim={"guardian_latency_s": 5.0})
    assert {r.guardian_verdict for r in res.requests} <= {"pass", "block"}
    assert all(r.finish_s >= 5.0 for r in res.requests)


def test_the_summary_counts_answers_retracted_after_the_reply_and_checks_by_stage():
    # `runs compare` of sync-all vs async-all showed "blocked by guardians 96 vs 0" and nothing of the
    # async run's blocks, which came after the reply
    trace = [TraceRequest(str(i), i * 0.1, 16, 2, prompt=f"p{i}") for i in range(6)]
    spec = {"name": "g", "latency": {"base_s": 0.5}}
    out = {}
    for mode in ("sync", "async"):
        res = replay_with(trace=trace, sim={"guardian_block_rate": 1.0}, guardians={"models": [spec]},
                          plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": mode, "guardian": "g",
                                                                     "stages": ["input", "output"]}}})
        out[mode] = res.summary
        assert res.summary["guardians"]["g"]["checks_input"] == 6
    assert out["sync"]["num_blocked"] == 6 and out["sync"]["guardian_blocks_after_reply"] == 0
    assert out["sync"]["guardians"]["g"]["checks_output"] == 0  # blocked at the prompt: no answer
    # async: the prompt's block comes after the 2-token answer was served (a retraction), the answer's
    # check finds it blocked already: one retraction per request, not two
    assert out["async"]["num_blocked"] == 0 and out["async"]["num_completed"] == 6
    assert out["async"]["guardian_blocks_after_reply"] == 6
    assert out["async"]["guardian_busy_s"] == out["async"]["guardians"]["g"]["busy_s"] > 0


def test_a_run_stopped_at_until_leaves_no_answered_row_pending(tmp_path):
    # `sim replay --until 200` with async answer checks left 30 completed rows `pending` in a finished run,
    # and the summary said nothing of them
    from controlplane.testing import stored_rows

    url = f"sqlite:///{tmp_path / 'until.db'}"
    trace = [TraceRequest(str(i), i * 0.5, 16, 4) for i in range(400)]
    res = replay_with(trace=trace, db_url=url, sim={"until_s": 100.0},
                      guardians={"models": [{"name": "judge", "timeout_s": 30.0,
                                             "latency": {"base_s": 2.0, "max_batch": 2}}]},
                      plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "async", "guardian": "judge"}}})
    rows = [r for r in stored_rows(url, res.run_id, "requests") if r["status"] == "completed"]
    assert rows and not [r for r in rows if r["guardian_verdict"] == "pending"]
    cut = res.summary["guardian_checks_cut_off"]
    assert cut > 0 and res.summary["guardians"]["judge"]["cut_off"] == cut
    assert sum(r["guardian_verdict"] == "timeout" for r in rows) >= cut  # through on_error (open): served
    why = [d.reason for d in res.decisions if d.action == "guardian_verdict" and d.payload["verdict"] == "timeout"]
    assert sum(w == "no verdict by the run's end (--until 100 s)" for w in why) == cut
    assert res.summary["guardian_sampling"]["sampled-guardian"]["answers_served_without_verdict"] >= cut
    from controlplane.cli.summary_table import guardian_rows
    assert ("guardian judge: checks cut off at --until", (cut,)) in guardian_rows(res.summary)


def test_a_cache_hit_under_a_check_every_answer_plan_reads_no_verdict_and_is_told_apart_by_cache_hit():
    # docs/guardians.md, "A cache hit's row": the hit is not checked (guardian_verdict NULL, as an unchecked
    # answer's); its cache_hit column tells it apart; the answer it serves was stored by an earlier request
    # whose check passed or failed open (an answer whose check timed out open is cached too).
    trace = [TraceRequest(f"r{i}", i * 5.0, 12, 8, prompt="the same prompt") for i in range(3)]
    plan = {"plugins": {"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync", "guardian": "g"}}}}
    for spec, first in (({"name": "g"}, "pass"),
                        ({"name": "g", "timeout_s": 0.001, "latency": {"base_s": 0.5}}, "timeout")):
        res = replay_with(trace=trace, guardians={"models": [spec]}, **plan)
        assert [(r.cache_hit, r.guardian_verdict) for r in res.requests] == [(None, first), ("exact", None),
                                                                             ("exact", None)]
        assert [d.subject for d in res.decisions if d.action == "guardian_check"] == ["r0"]
        assert res.summary["guardian_sampling"]["sampled-guardian"]["answers"] == 1  # generated answers only


def test_guardians_priced_at_the_default_latency_are_warned_of_once_and_named_in_the_summary():
    # A rules guardian read 20 ms a check and a causal-lm judge 0.02 s where live measured ~0.39 s: nothing said so.
    import warnings

    from sim.guardian_pool import UncalibratedLatencyWarning

    models = [{"name": "rules", "kind": "rules", "gpus_per_replica": 0},
              {"name": "judge", "latency": {"base_s": 0.39, "max_batch": 1}}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = replay_with(trace=[TraceRequest(str(i), i * 1.0, 16, 1) for i in range(3)], guardians={"models": models},
                          plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync",
                                                                     "guardians": ["rules", "judge"]}}})
    (w,) = [w for w in caught if w.category is UncalibratedLatencyWarning]  # once for the run
    assert str(w.message).startswith("guardians.models.0.latency (rules): the default, so the simulator prices each "
                                     "batch of checks at 0.02 s")
    assert "mean_check_s" in str(w.message)
    assert res.summary["guardian_latency_uncalibrated"] == ["rules"]  # the judge's latency was set
    calibrated = replay_with(trace=[TraceRequest("0", 0.0, 16, 1)], guardians={"models": models[1:]}, plugins={
        "settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync", "guardian": "judge"}}})
    assert "guardian_latency_uncalibrated" not in calibrated.summary
