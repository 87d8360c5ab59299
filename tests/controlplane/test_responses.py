"""The core's guardian checks (controlplane.responses): input and output stages, sync and async,
parallel verdicts and their combination, fail-open/closed, cascades, and what reaches the caches."""

from __future__ import annotations

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import CacheHit, GuardianPlan
from controlplane.testing import make_config, make_trace, replay_with
from controlplane.types import ReasonCode, RequestStatus
from sim.traces import read_trace
from sim.traces.record import TraceRequest
from tests.fixtures.common import FIXTURES

#: Perfect simulated guardians (noise 0): harmful scores 0.9975, benign 0.0025.
ALWAYS = {"name": "always", "threshold": 0.0}  # every score blocks
NEVER = {"name": "never", "threshold": 1.0}  # no score reaches 1: never blocks
JUDGE = {"name": "judge"}


def guard(**settings):
    return {"settings": {"sampled-guardian": {"rate": 1.0, **settings}}}


def by_id(result):
    return {r.request_id: r for r in result.requests}


def test_a_blocked_prompt_never_reaches_a_worker():
    res = replay_with(trace=make_trace(20, qps=4), plugins=guard(stages=["input"], mode="sync"),
                      sim={"guardian_block_rate": 1.0})
    assert {(r.status, r.reason_code, r.worker_id, r.output_tokens) for r in res.requests} == {
        (RequestStatus.BLOCKED, ReasonCode.BLOCKED, None, 0)}
    assert not [d for d in res.decisions if d.action in ("route", "batch")]
    assert res.summary["num_blocked"] == 20 and res.summary["num_completed"] == 0


def test_a_passed_prompt_goes_on_to_generation_after_its_check():
    plain = by_id(replay_with(trace=make_trace(10, qps=1)))
    checked = replay_with(trace=make_trace(10, qps=1), plugins=guard(stages=["input"], mode="sync"),
                          sim={"guardian_latency_s": 0.5})
    for r in checked.requests:
        assert r.status is RequestStatus.COMPLETED and r.guardian_verdict == "pass"
        assert r.scheduled_s >= r.arrival_s + 0.5 > plain[r.request_id].scheduled_s


def test_a_blocked_answer_is_withheld_without_a_refusal_code():
    res = replay_with(trace=make_trace(10, qps=2), plugins=guard(mode="sync"), sim={"guardian_block_rate": 1.0})
    for r in res.requests:
        assert r.status is RequestStatus.BLOCKED and r.reason_code is None and r.output_tokens > 0
        assert r.guardian_verdict == "block" and r.reason.startswith("blocked by guardian")
    assert res.summary["goodput_rps"] == 0 and res.summary["e2e_p99_s"] is None


def test_async_checks_do_not_delay_and_a_late_block_is_recorded():
    plain = by_id(replay_with(trace=make_trace(10, qps=2)))
    res = replay_with(trace=make_trace(10, qps=2), plugins=guard(mode="async"),
                      sim={"guardian_block_rate": 1.0, "guardian_latency_s": 3.0})
    for r in res.requests:
        assert r.status is RequestStatus.COMPLETED and r.finish_s == plain[r.request_id].finish_s
    late = [d for d in res.decisions if d.action == "guardian_block_after_reply"]
    assert sorted(d.subject for d in late) == sorted(plain)


@pytest.mark.parametrize(("combine", "weights", "blocked"), [
    ("any", (1, 1, 1), True),  # one of three blocks
    ("majority", (1, 1, 1), False),  # one of three is no majority
    ("weighted", (3, 1, 1), True),  # 3/5 of the weight >= 0.5
    ("weighted", (1, 1, 1), False),  # 1/3 < 0.5
])
def test_parallel_guardians_combine_by_the_rule(combine, weights, blocked):
    models = [{**g, "weight": w} for g, w in zip((ALWAYS, NEVER, {"name": "never2", "threshold": 1.0}), weights)]
    res = replay_with(trace=make_trace(6, qps=2),
                      plugins=guard(mode="sync", guardians=["always", "never", "never2"], combine=combine),
                      guardians={"models": models})
    assert {r.status for r in res.requests} == {RequestStatus.BLOCKED if blocked else RequestStatus.COMPLETED}
    outcomes = [d for d in res.decisions if d.action == "guardian_outcome"]
    assert len(outcomes) == 6
    assert all(d.payload["verdicts"] == {"always": "block", "never": "pass", "never2": "pass"} for d in outcomes)
    per_guardian = [d for d in res.decisions if d.action == "guardian_verdict"]
    assert sorted({d.payload["guardian"] for d in per_guardian}) == ["always", "never", "never2"]


@pytest.mark.parametrize(("on_error", "status", "verdict"), [
    ("open", RequestStatus.COMPLETED, "timeout"), ("closed", RequestStatus.BLOCKED, "block")])
def test_a_guardian_that_times_out_fails_open_or_closed(on_error, status, verdict):
    slow = {"name": "slow", "timeout_s": 0.1, "on_error": on_error, "latency": {"base_s": 1.0}}
    res = replay_with(trace=make_trace(5, qps=1), plugins=guard(mode="sync", guardian="slow"),
                      guardians={"models": [slow]})
    assert {(r.status, r.guardian_verdict) for r in res.requests} == {(status, verdict)}
    for r in res.requests:  # the reply waited for the timeout, not for the slow check
        assert r.finish_s - r.first_token_s < 0.5 + 0.1


def test_a_cascade_escalates_only_what_the_screen_flags():
    screen = {"name": "screen", "threshold": 0.99, "quality": {"separation": 2.0, "noise": 1.0},
              "latency": {"base_s": 0.01}}
    judge = {"name": "judge", "latency": {"base_s": 0.2}}
    res = replay_with(trace=make_trace(200, qps=20),
                      plugins={"enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas",
                                           "static-memory", "cascade-guardian", "builtin-latency-models"],
                               "settings": {"cascade-guardian": {"escalate_above": 0.5}}},
                      guardians={"models": [screen, judge]}, sim={"guardian_block_rate": 0.2})
    escalated = {d.subject for d in res.decisions if d.action == "guardian_escalate"}
    screened = {d.subject: d.payload["score"] for d in res.decisions
                if d.action == "guardian_verdict" and d.payload["guardian"] == "screen"}
    assert len(screened) == 200 and 0 < len(escalated) < 200
    assert escalated == {rid for rid, s in screened.items() if s >= 0.5}
    judged = {d.subject: d.payload["verdict"] for d in res.decisions
              if d.action == "guardian_verdict" and d.payload["guardian"] == "judge"}
    assert set(judged) == escalated
    for r in res.requests:  # the judge decides what it saw; the screen alone never blocks here
        want = judged.get(r.request_id, "pass")
        assert r.guardian_verdict == want
        assert r.status is (RequestStatus.BLOCKED if want == "block" else RequestStatus.COMPLETED)
    assert res.summary["guardians"]["judge"]["checks"] == len(escalated)


def test_saturated_guardians_queue_and_cost_gpu_seconds():
    one = {"name": "one", "replicas": 1, "latency": {"base_s": 1.0, "max_batch": 1}, "timeout_s": 100}
    trace = [TraceRequest(str(i), 0.0, 16, 1) for i in range(4)]
    apart = {"models": [{"name": "default", "replicas": 4}]}  # (each answer on its own replica: all at once)
    res = replay_with(trace=trace, plugins=guard(mode="sync", guardian="one"), guardians={"models": [one]},
                      cluster=apart)
    waits = sorted(r.finish_s - r.first_token_s for r in res.requests)
    assert waits == pytest.approx([1.0, 2.0, 3.0, 4.0], abs=1e-6)  # one replica: one check at a time
    assert res.summary["guardian_gpu_seconds"] == pytest.approx(4.0)
    two = {**one, "replicas": 2}
    res2 = replay_with(trace=trace, plugins=guard(mode="sync", guardian="one"), guardians={"models": [two]},
                       cluster=apart)
    assert sorted(r.finish_s - r.first_token_s for r in res2.requests) == pytest.approx([1, 1, 2, 2], abs=1e-6)


def _prompts():
    return list(read_trace(FIXTURES / "prompts.jsonl", "canonical"))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_blocked_answer_is_never_served_from_the_cache(mode):
    res = replay_with(trace=_prompts(), plugins=guard(mode=mode), sim={"guardian_block_rate": 1.0})
    assert not [r for r in res.requests if r.cache_hit]
    assert res.summary["cache_hits"] == 0


def test_an_answer_is_cached_only_once_its_verdict_is_known():
    # greet-2 arrives 5 s after greet-1: before greet-1's 10 s check ends, so it is generated again;
    # once a verdict passed, later repeats are served from the cache.
    trace = _prompts()
    later = [TraceRequest("greet-4", 60.0, 12, 8, prompt="Say hello to the cluster.")]  # (ids are unique)
    res = replay_with(trace=trace + later, plugins=guard(mode="async"), sim={"guardian_latency_s": 10.0})
    rows = by_id(res)
    assert rows["greet-2"].cache_hit is None and rows["greet-4"].cache_hit == "exact"
    passed = {r.request_id for r in res.requests if r.guardian_verdict == "pass"}
    assert "greet-1" in passed


def test_unknown_combine_rule_and_duplicate_guardians_are_config_errors():
    from controlplane.errors import ConfigError
    from controlplane.config import load_config

    with pytest.raises(ConfigError, match="guardians.combine"):
        load_config(overrides={"guardians": {"combine": "vote"}})
    with pytest.raises(ConfigError, match="guardian names must be unique"):
        load_config(overrides={"guardians": {"models": [JUDGE, JUDGE]}})


class CheckOnly(Plugin):
    """Checks the answers of the named requests only (sync)."""

    name = "check-only"

    def __init__(self, ids):
        super().__init__()
        self.ids = set(ids)

    @hookimpl
    def cp_guardian_plan(self, ctx, request, stage):
        if stage == "output" and request.request_id in self.ids:
            return GuardianPlan(True, "guardian", "sync", "picked")
        return GuardianPlan(False)


def test_an_unchecked_cached_answer_is_not_served_once_its_prompt_was_blocked():
    # r0 is not checked (its 8-token answer is cached unchecked); r1 asks for 16 tokens (no hit), is
    # checked and blocked; r2 asks for 8 again and would hit r0's entry: the core refuses the hit.
    prompt = "Say hello to the cluster."
    trace = [TraceRequest("r0", 0.0, 12, 8, prompt=prompt), TraceRequest("r1", 10.0, 12, 16, prompt=prompt),
             TraceRequest("r2", 20.0, 12, 8, prompt=prompt)]
    res = replay_with(CheckOnly({"r1", "r2"}), trace=trace, sim={"guardian_block_rate": 1.0})
    rows = by_id(res)
    assert rows["r1"].cache_hit is None and rows["r1"].status is RequestStatus.BLOCKED
    refused = [d.subject for d in res.decisions if d.action == "cache_hit_refused"]
    assert refused == ["r2"] and rows["r2"].cache_hit is None and rows["r2"].status is RequestStatus.BLOCKED
    # without r1's block, r2 is served r0's cached answer
    plain = by_id(replay_with(CheckOnly({"r2"}), trace=[trace[0], trace[2]], sim={"guardian_block_rate": 1.0}))
    assert plain["r2"].cache_hit == "exact"


def test_combine_reports_failures_rather_than_a_pass():
    from controlplane.guardian_checks import combine
    from controlplane.guardian_config import GuardiansConfig

    cfg = GuardiansConfig(models=[{"name": "a"}, {"name": "b"}, {"name": "c", "on_error": "closed"}])
    both_failed = combine(cfg, None, {"a": ("timeout", None, "slow"), "b": ("timeout", None, "slow")})
    assert both_failed.verdict == "timeout" and "a: timeout (slow)" in both_failed.reason
    mixed = combine(cfg, None, {"a": ("error", None, "x"), "b": ("unavailable", None, None)})
    assert mixed.verdict == "error"
    closed = combine(cfg, "majority", {"a": ("pass", 0.1, None), "c": ("error", None, "boom")})
    assert closed.verdict == "pass"  # one block of two voters is no majority
    assert combine(cfg, "any", {"a": ("pass", 0.1, None), "c": ("error", None, "boom")}).verdict == "block"
    with pytest.raises(ValueError, match="unknown guardian combine rule 'vote'"):
        combine(cfg, "vote", {"a": ("pass", 0.1, None)})


def test_an_async_prompt_block_stops_the_generation_and_names_the_guardian():
    # 0.5 s checks on long answers (~1-3 s each here): every block arrives mid-generation.
    trace = make_trace(8, qps=1, output_tokens=256)
    plain = by_id(replay_with(trace=trace))
    res = replay_with(trace=trace, plugins=guard(stages=["input"], mode="async"),
                      sim={"guardian_block_rate": 1.0, "guardian_latency_s": 0.5})
    for r in res.requests:
        p = plain[r.request_id]
        assert r.status is RequestStatus.BLOCKED and r.reason_code is ReasonCode.BLOCKED
        assert r.reason == "blocked by guardian: simulated label: harmful"
        assert 0 < r.output_tokens < p.output_tokens  # stopped when the verdict came, not run to its end
        assert r.finish_s < p.finish_s and r.finish_s <= r.arrival_s + 0.5 + 0.05  # at the next batch boundary
    assert res.summary["num_blocked"] == 8 and res.summary["goodput_rps"] == 0


class _TextlessCache(Plugin):
    """A cache that hits every prompt without keeping any text."""

    name = "textless-cache"

    @hookimpl
    def cp_cache_lookup(self, ctx, request):
        return CacheHit("exact", 0.001, reason="remembered", output_tokens=8)


def test_a_live_cache_hit_without_text_is_the_plugins_error_and_the_request_is_generated():
    from controlplane import actions as act
    from controlplane import events as ev
    from controlplane.session import RunSession
    from controlplane.testing import EventLog
    from controlplane.types import Request

    log = EventLog()
    cfg = make_config(cluster={"models": [{"name": "m", "replicas": 1}]})
    core = RunSession(cfg, mode="live", record=False, extra_plugins=[_TextlessCache(), log]).core
    (start,) = [a for a in core.start() if isinstance(a, act.StartWorker)]
    core.handle(ev.WorkerReady(0.0, start.worker_id))
    r = Request("q0", 1.0, 10, 4, model="m", prompt="hello")
    out = core.handle(ev.RequestArrived(1.0, r))
    assert any(isinstance(a, act.StartBatch) for a in out) and not r.cache_hit  # a miss: generated
    (error,) = [d for d in log.decisions if d.is_error]
    assert (error.plugin, error.hook, error.subject) == ("textless-cache", "cp_cache_lookup", "q0")
    assert "CacheHit.response_text is None in a live run" in error.reason


def test_a_simulated_cache_hit_needs_no_text():
    res = replay_with(_TextlessCache(), trace=make_trace(5))
    assert res.summary["cache_hits"] == 5 and res.summary["num_plugin_errors"] == 0
