"""The simulator's guardian ground truth: synthetic labels at the stated rates, fixed per text,
and scores that are as informative as a guardian's quality says."""

from __future__ import annotations

import numpy as np
import pytest

from controlplane.testing import make_requests
from sim.guardian_labels import LabelModel


def test_labels_follow_the_stated_rates_per_tenant():
    reqs = make_requests(20000)
    for i, r in enumerate(reqs):
        r.tenant = "risky" if i % 4 == 0 else None
    m = LabelModel(0.02, {"risky": 0.3}, seed=1)
    risky = [m.is_harmful(r) for r in reqs if r.tenant == "risky"]
    other = [m.is_harmful(r) for r in reqs if r.tenant is None]
    assert np.mean(risky) == pytest.approx(0.3, abs=0.02)
    assert np.mean(other) == pytest.approx(0.02, abs=0.005)


def test_the_same_prompt_has_one_label_and_one_score():
    a, b = make_requests(2)
    a.prompt = b.prompt = "same text"
    m = LabelModel(0.5, seed=4)
    assert m.is_harmful(a) == m.is_harmful(b)
    assert m.score("g", "output", a, 3.0, 1.0) == m.score("g", "output", b, 3.0, 1.0)


def test_a_noisy_score_is_informative_but_overlaps():
    reqs = make_requests(5000)
    m = LabelModel(0.2, seed=2)
    labels = np.array([m.is_harmful(r) for r in reqs])
    noisy = np.array([m.score("cheap", "output", r, 3.0, 1.5) for r in reqs])
    perfect = np.array([m.score("judge", "output", r, 12.0, 0.0) for r in reqs])
    assert ((perfect >= 0.5) == labels).all()
    assert noisy[labels].mean() > noisy[~labels].mean() + 0.3  # informative
    assert ((noisy >= 0.5) != labels).mean() > 0.05  # but wrong on a fair share


def test_bad_tenant_rates_name_the_setting():
    with pytest.raises(ValueError, match="guardian_tenant_block_rates"):
        LabelModel(0.1, {"x": 1.5})


def test_tenant_rates_beside_a_response_cache_are_warned_of_only_where_it_shares_answers_across_tenants(caplog):
    import logging

    from controlplane.testing import make_trace, replay_with

    rates = {"guardian_tenant_block_rates": {"bad": 1.0}}

    def warned(**overrides):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sim.guardian_pool"):
            replay_with(trace=make_trace(5), sim=rates, **overrides)
        return [r.getMessage() for r in caplog.records if r.name == "sim.guardian_pool"]

    # exact-cache is on and keys on the tenant (the default): a tenant is served only its own answers. The run
    # warned "exact-cache keys answers on the text alone" here, which was false.
    assert warned() == []
    shared = warned(plugins={"settings": {"exact-cache": {"shared_across_tenants": True}}})
    assert len(shared) == 1 and "exact-cache shares answers across tenants" in shared[0]
    assert warned(plugins={"enabled": ["builtin-latency-models", "continuous-batching", "least-loaded"]}) == []
