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
