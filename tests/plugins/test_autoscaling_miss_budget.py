"""`slo-planner`'s `miss_budget`: the SLO's miss budget (`MissBudget`) lets the hold give up replicas below the
count it keeps, as many as the spare misses cover at the charge of one replica's rate over the horizon; off by
default and then changing nothing."""

from __future__ import annotations

import functools

import pytest

from controlplane.testing import make_trace
from controlplane.types import Request, RequestStatus
from plugins.autoscaling_budget import MissBudget, meets_targets
from plugins.autoscaling_slo import SLOPlanner
from tests.fixtures.common import planner_replay, with_burst
from tests.plugins.test_autoscaling_policies import scale_events


def test_the_spare_is_the_budget_of_the_finished_less_the_misses_and_buys_replicas_at_their_charge():
    b = MissBudget(0.01, risk=0.5)
    assert b.spare == 0 and b.releasable(4.0, 30.0) == 0  # nothing finished: nothing to spend
    for i in range(1000):
        b.add(met=i % 500 != 0)  # 2 misses in 1,000
    assert b.finished == 1000 and b.misses == 2
    assert b.spare == pytest.approx(8.0)
    assert b.per_replica(0.2, 30.0) == pytest.approx(3.0)  # 0.5 x 0.2 req/s x 30 s
    assert b.releasable(0.2, 30.0) == 2  # floor(8 / 3)
    assert b.releasable(4.0, 30.0) == 0  # one replica's charge (60) is more than the spare
    assert b.releasable(0.0, 30.0) == 0
    for _ in range(20):
        b.add(met=False)  # over budget: nothing below the hold
    assert b.spare < 0 and b.releasable(0.2, 30.0) == 0


def test_a_budget_or_risk_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="miss_budget must be in"):
        MissBudget(1.0)
    with pytest.raises(ValueError, match="miss_budget_risk must be in"):
        MissBudget(0.01, risk=0.0)
    with pytest.raises(ValueError):
        SLOPlanner.Settings(miss_budget=0.0)
    with pytest.raises(ValueError):
        SLOPlanner.Settings(miss_budget=0.01, miss_budget_risk=1.5)


def _request(status, ttft, tpot, output=11):
    r = Request("r", 10.0, 100, output)
    r.status, r.output_tokens = status, output
    r.first_token_s = 10.0 + ttft
    r.finish_s = r.first_token_s + tpot * (output - 1)
    return r


def test_a_request_meets_the_targets_as_the_benchmark_counts_it():
    assert meets_targets(_request(RequestStatus.COMPLETED, 1.5, 0.05), 2.0, 0.1)
    assert not meets_targets(_request(RequestStatus.COMPLETED, 2.5, 0.05), 2.0, 0.1)
    assert not meets_targets(_request(RequestStatus.COMPLETED, 1.5, 0.2), 2.0, 0.1)
    assert meets_targets(_request(RequestStatus.COMPLETED, 1.5, 9.0, output=1), 2.0, 0.1)  # no TPOT to miss
    assert not meets_targets(_request(RequestStatus.REJECTED, 1.5, 0.05), 2.0, 0.1)


def _trace():
    """Short prompts at 0.5 req/s for ~1,600 s, with 20 s bursts of 12 req/s every 300 s from 100 s: a load
    never called steady, where the hold keeps each burst's count through the quiet minutes."""
    trace = make_trace(800, qps=0.5, prompt_tokens=256, output_tokens=64, seed=3)
    for i, at in enumerate((100.0, 400.0, 700.0, 1000.0, 1300.0)):
        trace = with_burst(trace, make_trace(240, qps=12.0, prompt_tokens=512, output_tokens=64, seed=11 + i), at)
        trace = [type(r)(f"{i}{r.request_id}", r.arrival_s, r.prompt_tokens, r.output_tokens) for r in trace]
    return trace


@functools.cache
def _replay(**settings):
    return planner_replay(_trace(), **settings)


def test_off_by_default_and_a_budget_too_small_to_buy_a_replica_changes_nothing():
    base, tiny = _replay(), _replay(miss_budget=1e-6)
    assert SLOPlanner.Settings().miss_budget is None
    assert scale_events(base) == scale_events(tiny)
    assert base.summary["gpu_seconds"] == tiny.summary["gpu_seconds"]
    assert not any("miss budget" in d.reason for d in base.decisions)


def test_a_spare_budget_gives_up_replicas_below_the_hold_and_says_so():
    base, on = _replay(), _replay(miss_budget=0.2, miss_budget_risk=0.05)
    top = max(e[2] for e in scale_events(base))
    assert top == max(e[2] for e in scale_events(on)) and top >= 2  # the same burst response
    below = [d for d in on.decisions if d.action == "scale" and "miss budget" in d.reason]
    assert below and all(d.payload["to"] < d.payload["from"] for d in below)
    assert on.summary["gpu_seconds"] < base.summary["gpu_seconds"]
    # the worst-case charge at the same budget buys fewer replicas: never fewer GPU-seconds than the lighter one
    worst = _replay(miss_budget=0.2, miss_budget_risk=1.0)
    assert on.summary["gpu_seconds"] <= worst.summary["gpu_seconds"] <= base.summary["gpu_seconds"]
