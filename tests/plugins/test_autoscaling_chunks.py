"""The TPOT of decodes beside a long prefill's chunks (`LongPrefillTPOT`, `long_prefill_miss_budget`)."""

from __future__ import annotations

import pytest

from controlplane.events import RequestArrived
from controlplane.scaling import RecentLatencies, build_scaling_context
from controlplane.testing import make_config, make_context, make_requests
from plugins.autoscaling_chunks import LongPrefillTPOT
from plugins.autoscaling_forecast import replica_capacity
from plugins.autoscaling_slo import SLOPlanner


def _chunked(prefill_tokens: int, decode_seqs: int, context_tokens: int, prefill_context_tokens: int = 0) -> float:
    """A chunk attends over its prompt's earlier chunks: its price grows with that context."""
    return (0.02 + 2e-5 * prefill_tokens + 1e-3 * decode_seqs + 1e-8 * context_tokens * decode_seqs
            + 2e-6 * prefill_tokens * prefill_context_tokens / 512)


def _three(prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
    return _chunked(prefill_tokens, decode_seqs, context_tokens)


def test_a_decode_misses_only_beside_chunks_dearer_than_the_target():
    lp = LongPrefillTPOT(_chunked, chunk_tokens=512, decode_context=2000, tpot_s=0.1, outputs=(100,))
    # chunk j of a 512-token chunked prefill beside 4 decodes: 0.02 + 0.01024 + 0.004 + 0.00008 + 0.001024 j
    costs = lp.chunk_costs(4, 100)
    assert costs[0] == pytest.approx(_chunked(512, 4, 2000, 0)) and costs[99] == pytest.approx(_chunked(512, 4, 2000,
                                                                                                       99 * 512))
    assert lp.victims(20 * 512, 4, 0.03) == 0  # its dearest chunk (0.054 s) is within the target: nobody misses
    # 100 chunks: the dearest costs 0.136 s, but a decode of 100 iterations left sees at best all 100 (mean 0.085 s)
    assert lp.victims(100 * 512, 4, 0.03) == 0
    lp.set_outputs((150,))
    few, many = lp.victims(150 * 512, 4, 0.03), lp.victims(250 * 512, 4, 0.03)
    assert lp.victims(120 * 512, 4, 0.03) == 0 < few <= many < 1  # a longer prompt: more of its chunks are dear
    # by hand: a decode of 150 with r iterations left misses when the chunks in them add more than 0.07 x 150
    excess = [c - 0.03 for c in lp.chunk_costs(4, 150)]
    hand = sum(1 for r in range(1, 151) if sum(excess[:min(r, 150)]) > 0.07 * 150 + 1e-12)
    assert few == pytest.approx(hand / 150)
    # outputs of 150 and 15: a decode in flight is one of 150 ten times as often (its life is ten times longer),
    # and one of 15 sees at most 15 chunks: it never misses here
    lp.set_outputs((150, 15))
    assert lp.victims(150 * 512, 4, 0.03) == pytest.approx(hand / 165)
    lp.set_outputs((150,))
    # the share of requests: each long prefill makes `victims` of the batch in flight beside it miss
    share = lp.miss_share(4, 0.03, [(150 * 512, 1), (1000, 99)])
    assert share == pytest.approx(4 * few / 100)
    assert lp.miss_share(8, 0.03, [(150 * 512, 1), (1000, 99)]) > 1.9 * share  # twice the batch: twice and more


def test_the_budget_lowers_a_replicas_capacity_continuously():
    kw = dict(prompt_tokens=2000, output_tokens=100, tpot_s=0.08, ttft_s=10.0, max_num_seqs=64, kv_tokens=None,
              chunk_tokens=512)
    plain = replica_capacity(_chunked, **kw)
    lp = LongPrefillTPOT(_chunked, chunk_tokens=512, decode_context=2050, tpot_s=0.1, outputs=(300,))
    prompts = [(250 * 512, 1), (2000, 299)]
    assert replica_capacity(_chunked, tpot_miss=lambda n, t: 0.0, tpot_miss_budget=0.01, **kw) == plain
    capped = replica_capacity(_chunked, tpot_miss=lambda n, t: lp.miss_share(n, t, prompts), tpot_miss_budget=0.01,
                              **kw)
    assert capped.limit == "long prefills" and capped.rate_per_s < plain.rate_per_s
    n = capped.concurrency
    assert n >= 1
    assert capped.miss_share == pytest.approx(0.01)  # the rate where the share meets the budget ...
    t_n, t_next = capped.iteration_s, _chunked(int((n + 1) * 2000 / 100), n + 1, 2050)
    low = n / (capped.ttft_s + 100 * t_n)
    high = (n + 1) / (_chunked(512, n + 1, 2050) * 4 + t_next + 100 * t_next)
    assert low <= capped.rate_per_s <= high  # ... between the rates at n and n + 1 in flight
    looser = replica_capacity(_chunked, tpot_miss=lambda n, t: lp.miss_share(n, t, prompts), tpot_miss_budget=0.02,
                              **kw)
    assert capped.rate_per_s < looser.rate_per_s <= plain.rate_per_s


def _planner_decision(estimate, budget):
    ctx = make_context(config=make_config(slo={"ttft_s": 30.0, "tpot_s": 0.1}))
    reqs = make_requests(100, prompt_tokens=2000, output_tokens=100, interval_s=0.1)
    for i, r in enumerate(reqs):
        r.prompt_tokens = 100_000 if i % 50 == 0 else 2000  # two long prompts among 100
    p = SLOPlanner(SLOPlanner.Settings(max_replicas=64, default_prompt_tokens=2000, default_output_tokens=100,
                                       long_prefill_miss_budget=budget))
    for r in reqs:
        p.cp_on_event(ctx, RequestArrived(r.arrival_s, r))
    s = build_scaling_context(model="default", now_s=10.0, configured_replicas=1, workers=[], unrouted=[],
                              arrivals=100, tick_s=10.0, recent=RecentLatencies(60.0), iteration_s=estimate)
    return p.cp_scale(ctx, "default", s)


def test_the_planner_keeps_decodes_beside_long_prefills_within_the_budget():
    off, on = _planner_decision(_chunked, None), _planner_decision(_chunked, 0.001)
    assert "long_prefill_miss_share" not in off.signals and "long prefills" not in off.reason
    assert on.signals["long_prefill_miss_share"] <= 0.001 + 1e-9
    assert on.signals["capacity_per_replica_per_s"] < off.signals["capacity_per_replica_per_s"]
    assert on.target_replicas >= off.target_replicas and "TPOT misses beside long prefills" in on.reason
    # an estimate without a prefill context cannot price a chunk: the planner says so and sizes as without it
    blind = _planner_decision(_three, 0.001)
    assert "long prefills not priced" in blind.reason
    assert blind.signals["capacity_per_replica_per_s"] == off.signals["capacity_per_replica_per_s"]
