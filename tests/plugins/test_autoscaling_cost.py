"""Capacity from the mean of each request's own prefill cost (`RequestCosts`, `capacity_from: request_costs`)."""

from __future__ import annotations

import pytest

from controlplane.events import RequestArrived
from controlplane.scaling import RecentLatencies, build_scaling_context
from controlplane.testing import make_config, make_context, make_requests, make_trace, replay_with
from plugins.autoscaling_cost import RequestCosts
from plugins.autoscaling_forecast import replica_capacity
from plugins.autoscaling_slo import SLOPlanner
from tests.fixtures.common import assert_conserved
from tests.plugins.test_autoscaling_policies import oscillations, replay_beside_a_shadow, scale_events


def _square(prompt: float) -> float:
    return 1e-6 * prompt * prompt


def test_the_cost_equivalent_prompt_is_the_one_whose_price_is_the_mean_price():
    costs = RequestCosts(window_s=60.0, min_requests=2)
    assert costs.effective_prompt(0.0, _square) is None  # nothing arrived yet
    for t, p in ((1.0, 1000.0), (2.0, 3000.0)):
        costs.add(t, p)
    # a convex price: the mean price (5 ms) is the price of sqrt(5) thousand tokens, not of the mean 2000
    assert costs.effective_prompt(3.0, _square) == pytest.approx(5 ** 0.5 * 1000, rel=1e-2)  # a 1% grid
    assert costs.mean_prompt() == pytest.approx(2000.0)
    linear = RequestCosts(window_s=60.0, min_requests=2)
    for t, p in ((1.0, 1000.0), (2.0, 3000.0)):
        linear.add(t, p)
    assert linear.effective_prompt(3.0, lambda p: 1e-4 * p) == pytest.approx(2000.0, rel=1e-2)  # linear: the mean


def test_the_window_keeps_the_last_seconds_but_at_least_the_last_requests():
    costs = RequestCosts(window_s=10.0, min_requests=2)
    for t, p in ((0.0, 4000.0), (1.0, 1000.0), (2.0, 1000.0), (3.0, 1000.0)):
        costs.add(t, p)
    assert costs.effective_prompt(5.0, _square) > 2000.0  # the long prompt is in the window: it weighs its cost
    assert costs.effective_prompt(11.0, _square) == pytest.approx(1000.0, rel=1e-2)  # 11 s later it left
    assert len(costs) == 3
    assert costs.effective_prompt(100.0, _square) == pytest.approx(1000.0, rel=1e-2)
    assert len(costs) == 2  # the last two stay


def test_each_point_of_the_price_grid_is_priced_once():
    calls = []

    def price(p: float) -> float:
        calls.append(p)
        return _square(p)

    costs = RequestCosts(window_s=1e9, min_requests=1)
    for i in range(1000):
        costs.add(float(i), 1000.0 if i % 2 else 1004.0)  # both within half a step of the same point
    first = costs.effective_prompt(1000.0, price)
    assert len(calls) == 1 and first == pytest.approx(1000.0, rel=1e-2)
    costs.add(1001.0, 50000.0)
    costs.effective_prompt(1002.0, price)
    assert len(calls) <= 2 + 12  # the new point, and a bisection over the ~400 points between


def _linear(prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
    return 0.005 + 1e-4 * prefill_tokens + 5e-4 * decode_seqs + 1e-7 * context_tokens * decode_seqs


def test_a_replica_charged_a_longer_prefill_serves_fewer_requests():
    kw = dict(prompt_tokens=512, output_tokens=64, tpot_s=0.05, ttft_s=1.0, max_num_seqs=256, kv_tokens=None,
              chunk_tokens=512)
    plain = replica_capacity(_linear, **kw)
    assert replica_capacity(_linear, prefill_tokens=512, **kw) == plain  # the prompt itself: the same
    heavier = replica_capacity(_linear, prefill_tokens=1024, **kw)
    assert heavier.rate_per_s < plain.rate_per_s


def _convex(prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
    """Prefill attention grows with the square of the tokens prefilled together."""
    return 0.005 + 1e-4 * prefill_tokens + 2e-8 * prefill_tokens ** 2 + 5e-4 * decode_seqs


def test_the_planner_charges_heavy_tailed_prompts_their_mean_cost():
    ctx = make_context(config=make_config(slo={"ttft_s": 30.0, "tpot_s": 0.1}))
    reqs = make_requests(100, prompt_tokens=1000, output_tokens=64, interval_s=0.1)
    for i, r in enumerate(reqs):
        r.prompt_tokens = 19000 if i % 10 == 0 else 1000  # mean 2800; one in 10 costs far more
    decisions = {}
    for how in ("mean_shape", "request_costs", "cost_ratio"):
        shape = 1400.0 if how == "cost_ratio" else 2800.0  # no request finished: the shape is the default
        p = SLOPlanner(SLOPlanner.Settings(capacity_from=how, max_replicas=64, default_prompt_tokens=shape,
                                           default_output_tokens=64.0))
        for r in reqs:
            p.cp_on_event(ctx, RequestArrived(r.arrival_s, r))
        s = build_scaling_context(model="default", now_s=10.0, configured_replicas=1, workers=[], unrouted=[],
                                  arrivals=100, tick_s=10.0, recent=RecentLatencies(60.0), iteration_s=_convex)
        decisions[how] = p.cp_scale(ctx, "default", s)
    mean, costs = decisions["mean_shape"], decisions["request_costs"]
    assert "prefill_work_tokens" not in mean.signals
    work = costs.signals["prefill_work_tokens"]
    mean_price = sum(_convex(r.prompt_tokens, 0, 0) for r in reqs) / len(reqs)
    assert _convex(int(work), 0, 0) == pytest.approx(mean_price, rel=1e-2) and work > 2800
    assert costs.signals["capacity_per_replica_per_s"] < mean.signals["capacity_per_replica_per_s"]
    assert costs.target_replicas >= mean.target_replicas
    assert "the mean price of 100 arrived" in costs.reason
    ratio = decisions["cost_ratio"]  # the shape's mean prompt (1400) times the window's cost-equivalent / mean 2800
    assert ratio.signals["prefill_work_tokens"] == pytest.approx(1400 * work / 2800, rel=1e-3)
    assert "at the mean prompt 1400" in ratio.reason
    with pytest.raises(ValueError):
        SLOPlanner.Settings(capacity_from="median")


CLUSTER = {"models": [{"name": "default", "replicas": 1, "cold_start_s": 20.0}]}


def _steady_heavy_tail(n: int, qps: float):
    return [type(r)(r.request_id, r.arrival_s, r.prompt_tokens * (8 if i % 10 == 0 else 1), r.output_tokens)
            for i, r in enumerate(make_trace(n, qps=qps, prompt_tokens=512, output_tokens=64, seed=5))]


def test_priced_request_costs_on_a_steady_heavy_tailed_load_do_not_oscillate():
    trace = _steady_heavy_tail(4000, 10.0)
    res = replay_with(SLOPlanner(SLOPlanner.Settings(max_replicas=16)),  # the default: cost_ratio
                      trace=trace, cluster=CLUSTER, slo={"ttft_s": 2.0, "tpot_s": 0.1})
    assert_conserved(res.summary)
    assert res.summary["num_completed"] == len(trace)
    events = scale_events(res)
    assert max(e[2] for e in events) >= 2 and oscillations(events, 300.0) == 0  # it scaled, and never back and forth
    scales = [d for d in res.decisions if d.action == "scale"]
    assert scales and all("prefill_work_tokens" in d.payload["signals"] for d in scales)


def test_a_shadow_planner_pricing_request_costs_changes_no_request():
    trace = _steady_heavy_tail(3000, 10.0)
    # the default capacity_from: cost_ratio
    (_, rows_plain), (shadowed, rows_shadow) = replay_beside_a_shadow(trace, CLUSTER, {"policies": ["slo-planner"]})
    assert rows_plain == rows_shadow and len(rows_plain) == len(trace)
    shadow = [d for d in shadowed.decisions if d.action == "shadow_scale"]
    assert shadow and any("mean price" in d.reason for d in shadow)
