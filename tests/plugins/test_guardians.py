"""Guardians: sampled checks."""

from __future__ import annotations

from controlplane.testing import make_context, make_requests
from plugins.guardians import SampledGuardian


def _plans(rate: float, n: int = 400, **settings):
    g = SampledGuardian(SampledGuardian.Settings(rate=rate, **settings))
    ctx = make_context(seed=5)
    return [g.cp_guardian_plan(ctx=ctx, request=r, stage="output") for r in make_requests(n)]


def test_off_by_default():
    assert _plans(0.0, 5) == [None] * 5  # no plan: nothing is checked


def test_rate_one_checks_everything_in_the_configured_mode():
    plans = _plans(1.0, 5, mode="sync", guardian="llama-guard")
    assert all(p.check and p.mode == "sync" and p.guardian == "llama-guard" for p in plans)


def test_partial_rate_samples_from_the_runs_rng():
    plans = _plans(0.25)
    share = sum(p.check for p in plans) / len(plans)
    assert 0.18 < share < 0.32
    assert [p.check for p in plans] == [p.check for p in _plans(0.25)]  # same seed, same sample


def test_sampling_nothing_without_a_verdict_store_withdraws_its_hook():
    """Rate 0 and no shared verdicts: every plan would be None, so it is not asked (`Plugin.withdraw`)."""
    marked = "controlplane_impl"
    assert getattr(SampledGuardian().cp_guardian_plan, marked, None) is None
    for settings in ({"rate": 0.1}, {"verdict_ttl_s": 60.0}):
        g = SampledGuardian(SampledGuardian.Settings(**settings))
        assert getattr(g.cp_guardian_plan, marked, None) is not None


def test_guardian_and_guardians_together_are_a_config_error():
    # `guardians` overrode `guardian`: a plan setting both checked with judge2 alone, judge silently dropped
    import pytest
    from pydantic import ValidationError

    from plugins.guardian_risk import RiskSampledGuardian

    for cls in (SampledGuardian, RiskSampledGuardian):
        with pytest.raises(ValidationError, match=r"sets both `guardian` \('judge'\) and `guardians` \(\['judge2'\]\)"):
            cls.Settings(rate=1.0, guardian="judge", guardians=["judge2"])
        assert cls.Settings(rate=1.0, guardians=["judge", "judge2"]).guardians == ("judge", "judge2")
        assert cls.Settings(rate=1.0, guardian="judge", guardians=[]).guardian == "judge"


def _stages_checked(plugin: str, **settings):
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    trace = [TraceRequest(f"r{i}", i * 0.05, 12, 4, prompt=f"prompt {i}") for i in range(1000)]
    plugins = {"enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                           plugin, "builtin-latency-models"],
               "settings": {plugin: {"mode": "sync", "stages": ["input", "output"], **settings}}}
    res = replay_with(trace=trace, plugins=plugins, sim={"guardian_block_rate": 0.0},
                      guardians={"models": [{"name": "guardian", "latency": {"base_s": 0.001}}]})
    stages: dict[str, set[str]] = {}
    for d in res.decisions:
        if d.action == "guardian_check":
            stages.setdefault(d.subject, set()).add(d.payload["stage"])
    return stages, res.summary


def test_one_draw_per_request_checks_all_its_stages_or_none():
    # rate 0.3 on [input, output] checked 1,002 of 2,000 requests: 422 the prompt only, 395 the answer only
    for plugin, settings in (("sampled-guardian", {"rate": 0.3}), ("risk-guardian", {"rate": 0.3, "min_rate": 0.3})):
        stages, summary = _stages_checked(plugin, **settings)
        assert all(s == {"input", "output"} for s in stages.values()), plugin  # never one stage alone
        assert 0.25 < len(stages) / 1000 < 0.35, (plugin, len(stages))
        sampling = summary["guardian_sampling"][plugin]
        assert sampling["answers"] == sampling["prompts"] == 1000
        assert sampling["answers_checked"] == sampling["prompts_checked"] == len(stages)
        assert sampling["answers_checked_share"] == len(stages) / 1000
        g = summary["guardians"]["guardian"]  # its checks by stage, and the share of answers it checked
        assert g["checks_input"] == g["checks_output"] == len(stages) and g["checks"] == 2 * len(stages)
        assert g["answers_checked_share"] == len(stages) / 1000


def test_a_check_without_a_verdict_is_not_counted_as_checked():
    # docs/guardians.md's saturated guardian: 1,995 of 2,000 checks timed out, and every share read 1.0
    from controlplane.cli.summary_table import summary_table
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest
    from tests.cli.test_summary_table import _text

    trace = [TraceRequest(str(i), i / 20, 16, 1) for i in range(2000)]
    judge = {"name": "g", "replicas": 1, "timeout_s": 1.0, "latency": {"base_s": 0.5, "max_batch": 4}}
    res = replay_with(trace=trace, guardians={"models": [judge]}, plugins={"settings": {
        "sampled-guardian": {"rate": 1.0, "mode": "sync", "guardian": "g"}}})
    sampling = res.summary["guardian_sampling"]["sampled-guardian"]
    assert res.summary["guardians"]["g"]["timeouts"] == 1995
    assert (sampling["answers"], sampling["answers_checked"], sampling["answers_served_without_verdict"]) == (
        2000, 5, 1995)
    assert sampling["answers_checked_by"] == {"g": 5}
    assert sampling["answers_checked_share"] == res.summary["guardians"]["g"]["answers_checked_share"] == 0.0025
    assert "answers served without a verdict" in _text(summary_table(res.summary, "run"))


def test_a_guardians_verdict_on_a_request_that_left_before_its_checks_ended_is_not_counted_as_checked():
    # An SRE soak: answers_checked_by.rules 2,635 > answers_checked 2,630: rules answered a request's answer, then
    # the request was cancelled before the judge did; its check had no last word (not checked), its verdict counted.
    from controlplane.events import RequestFinished
    from controlplane.types import Decision, RequestStatus

    g = SampledGuardian(SampledGuardian.Settings(rate=1.0, mode="sync", guardians=["rules", "judge"]))
    ctx = make_context(seed=5)
    left, stayed = make_requests(2)
    for r in (left, stayed):
        assert g.cp_guardian_plan(ctx=ctx, request=r, stage="output").check

    def verdict(r, guardian: str) -> Decision:
        return Decision(1.0, "cp_guardian_plan", guardian, "guardian_verdict", r.request_id, "ok",
                        {"guardian": guardian, "verdict": "pass", "score": 0.1, "stage": "output"})

    g.cp_on_event(ctx=ctx, event=verdict(left, "rules"))
    left.status = RequestStatus.CANCELLED
    g.cp_on_event(ctx=ctx, event=RequestFinished(1.1, left))
    g.cp_on_event(ctx=ctx, event=verdict(left, "judge"))  # (a check that ran on: the core drops its verdict)
    g.cp_on_event(ctx=ctx, event=verdict(stayed, "rules"))
    g.cp_on_event(ctx=ctx, event=verdict(stayed, "judge"))
    g.cp_on_event(ctx=ctx, event=Decision(1.2, "cp_guardian_plan", "core", "guardian_outcome", stayed.request_id,
                                          "passed", {"verdict": "pass", "stage": "output", "final": True}))
    summary: dict = {}
    g.cp_run_finished(ctx=ctx, summary=summary)
    sampling = summary["guardian_sampling"][g.name]
    assert (sampling["answers"], sampling["answers_checked"]) == (2, 1)
    assert sampling["answers_checked_by"] == {"judge": 1, "rules": 1}
