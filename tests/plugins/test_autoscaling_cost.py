"""Capacity from the mean of each request's own prefill cost (`RequestCosts`, `capacity_from: request_costs`)."""

from __future__ import annotations

import functools
import random

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


def test_the_price_spread_is_the_second_moment_over_the_squared_mean_over_its_own_window():
    costs = RequestCosts(window_s=10.0, min_requests=1, spread_window_s=100.0)
    assert costs.price_moment_ratio() is None  # nothing priced yet
    for t, p in ((0.0, 1000.0), (1.0, 3000.0)):
        costs.add(t, p)
    costs.mean_cost(2.0, lambda p: 1e-3 * p)  # prices 1 and 3 (on the 1% grid): E[c²] 5, E[c]² 4
    assert costs.price_moment_ratio() == pytest.approx(1.25, rel=2e-2)
    costs.add(50.0, 1000.0)
    costs.mean_cost(50.0, lambda p: 1e-3 * p)
    assert len(costs) == 1  # the mean price's window kept only the newest ...
    assert costs.price_moment_ratio() == pytest.approx((1 + 9 + 1) / 3 / (5 / 3) ** 2, rel=2e-2)  # ... the spread's all
    costs.mean_cost(200.0, lambda p: 1e-3 * p)
    assert costs.price_moment_ratio() == pytest.approx(1.0)  # one price left: no spread
    same = RequestCosts(window_s=10.0, min_requests=1)
    for t in range(5):
        same.add(float(t), 2000.0)
    same.mean_cost(5.0, _square)
    assert same.price_moment_ratio() == pytest.approx(1.0)


def test_the_prefill_queue_wait_is_pollaczek_khinchine_and_a_heavier_tail_serves_fewer():
    kw = dict(prompt_tokens=2000, output_tokens=64, tpot_s=0.1, ttft_s=2.0, max_num_seqs=256, kv_tokens=None,
              chunk_tokens=512)
    plain = replica_capacity(_linear, **kw)
    assert plain.wait_s == 0.0
    equal = replica_capacity(_linear, price_moment_ratio=1.0, **kw)
    heavy = replica_capacity(_linear, price_moment_ratio=8.0, **kw)
    assert heavy.rate_per_s < equal.rate_per_s <= plain.rate_per_s
    assert heavy.limit == "ttft" and 0 < heavy.wait_s
    # the wait at the batch found, recomputed by hand: rate x ratio x S² / (2 (1 - rate x S))
    n, t = heavy.concurrency, heavy.iteration_s
    s = 4 * _linear(512, n, int(2000 + 32)) * 1.0  # 4 chunks of 512 at that batch
    rate = n / (t + s + 64 * t)
    assert heavy.wait_s == pytest.approx(rate * 8.0 * s * s / (2 * (1 - rate * s)), rel=1e-6)
    assert heavy.ttft_s + heavy.wait_s <= 2.0
    # without TTFT and TPOT targets the batch grows until the prefills arrive faster than they are served
    full = replica_capacity(_linear, price_moment_ratio=1.0, **{**kw, "prompt_tokens": 200000.0, "ttft_s": 1e9,
                                                                "tpot_s": 1e9})
    assert full.limit == "prefill queue" and full.concurrency >= 1
    assert replica_capacity(_linear, **{**kw, "prompt_tokens": 200000.0, "ttft_s": 1e9, "tpot_s": 1e9}).concurrency \
        > full.concurrency  # without the queue it would not stop there


def test_on_a_steady_load_the_planner_can_plan_the_windows_mean_with_a_queue_priced_replica():
    trace = _steady_heavy_tail(4000, 10.0)
    runs = {}
    for name, extra in (("forecast", {"steady_rate": "forecast", "prefill_queue": "off"}),
                        ("window", {"steady_rate": "window", "prefill_queue": "steady"})):
        planner, seen = SLOPlanner(SLOPlanner.Settings(max_replicas=16, **extra)), []
        decide = planner.cp_scale

        @functools.wraps(decide)  # keeps the hook marker: every tick's decision, not only the changes
        def every_tick(ctx, model, scaling, decide=decide, seen=seen):
            d = decide(ctx, model, scaling)
            seen.append(d)
            return d

        planner.cp_scale = every_tick
        res = replay_with(planner, trace=trace, cluster=CLUSTER, slo={"ttft_s": 2.0, "tpot_s": 0.1})
        assert res.summary["num_completed"] == len(trace)
        assert oscillations(scale_events(res), 300.0) == 0
        runs[name] = seen
    steady = [d.signals for d in runs["window"] if "steady_rate_per_s" in d.signals]
    assert len(steady) > 50 and not any("steady_rate_per_s" in d.signals for d in runs["forecast"])
    assert "buckets' mean" in next(d.reason for d in runs["window"] if "steady_rate_per_s" in d.signals)
    for s in steady:  # the window's mean (10 req/s arriving) plus 1.645 standard errors of a 300 s mean
        assert 8.0 < s["steady_mean_per_s"] < 12.0
        assert s["steady_rate_per_s"] == pytest.approx(
            s["steady_mean_per_s"] + 1.645 * (s["steady_mean_per_s"] / 300.0) ** 0.5, abs=2e-3)
        assert s["price_moment_ratio"] > 1.0  # one prompt in ten is 8 times longer


def test_where_the_queue_binds_the_rate_is_the_one_at_which_its_wait_just_fits():
    kw = dict(prompt_tokens=2000, output_tokens=64, tpot_s=0.1, ttft_s=2.0, max_num_seqs=256, kv_tokens=None,
              chunk_tokens=512, price_moment_ratio=8.0)
    cap = replica_capacity(_linear, **kw)
    n = cap.concurrency + 1  # the batch the wait stopped
    t = _linear(int(n * 2000 / 64), n, 2032)
    s = 4 * _linear(512, n, 2032)
    room = 2.0 - (t + s)
    fits = 2 * room / (s * (8.0 * s + 2 * room))
    assert cap.limit == "ttft" and cap.rate_per_s == pytest.approx(max(fits, cap.concurrency / (
        cap.iteration_s + 4 * _linear(512, cap.concurrency, 2032) + 64 * cap.iteration_s)))
    wait = fits * 8.0 * s * s / (2 * (1 - fits * s))  # at that rate the mean wait fills the room exactly
    assert wait == pytest.approx(room)
    assert cap.concurrency / (cap.iteration_s + 4 * _linear(512, cap.concurrency, 2032) + 64 * cap.iteration_s) \
        <= cap.rate_per_s < n / (t + s + 64 * t)  # between the rates at n - 1 and n in flight


def test_the_windows_shortest_and_longest_prompts_follow_it_as_it_slides():
    """`RequestCosts` keeps its window's shortest and longest grid keys as sliding minima and maxima (the
    bisection's bracket) instead of scanning the window whenever it changed: the same keys as a scan."""
    rng = random.Random(4)
    costs, now = RequestCosts(window_s=30.0, min_requests=5), 0.0
    for _ in range(3000):
        now += rng.expovariate(rng.choice([0.1, 1.0, 10.0]))
        for _ in range(rng.choice([0, 1, 1, 3])):
            costs.add(now, rng.choice([1.0, 100.0, 512.0, rng.lognormvariate(6.0, 2.0)]))
        if costs.effective_prompt(now, _square) is None:
            continue
        keys = [k for _, _, k, _ in costs._priced]
        assert (costs._lows[0], costs._highs[0]) == (min(keys), max(keys))
