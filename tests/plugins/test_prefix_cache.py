"""Prefix (KV-block) caching: the cache plugin, the core's use of it, cache-aware routing."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from controlplane import hookspecs
from controlplane.testing import make_context, make_requests, make_worker, replay_with
from plugins.prefix_cache import PrefixAffinity, PrefixCache
from sim.traces import TraceRequest, read_trace

MOONCAKE = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces" / "mooncake_fast25" / "conversation_trace.jsonl"
# Prefill costs 1 ms per computed token plus 0.5 ms per (computed token x 1k cached tokens); decodes 10 ms.
PREFILL_PRICED = {"base_s": 0.0, "prefill_s_per_token": 1e-3, "prefill_s_per_token_context": 0.0,
                  "decode_s_per_seq": 0.01, "decode_s_per_context_token": 0.0}


def _req(rid, hashes, prompt=None, **kw):
    r = make_requests(1, prompt_tokens=prompt or 512 * len(hashes), prefix=rid)[0]
    r.hash_ids, r.hash_block_tokens = tuple(hashes), 512
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_hooks_are_specified_with_docstrings():
    assert hookspecs.cp_prefix_lookup.__doc__.strip() and hookspecs.cp_prefix_store.__doc__.strip()
    assert hookspecs.cp_prefix_lookup.controlplane_spec["firstresult"] is True
    assert not hookspecs.cp_prefix_store.controlplane_spec["firstresult"]


def test_only_the_leading_run_of_cached_blocks_hits():
    cache, w = PrefixCache(), make_worker()
    ctx = make_context(workers=[w])
    cache.cp_prefix_store(ctx=ctx, worker=w, request=_req("a", [1, 2, 3]))
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("b", [1, 2, 9, 3])) == 1024
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("c", [9, 1, 2])) == 0
    # capped at the prompt, less the token the core always computes (`KVCacheManager.prefix_hit`)
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("d", [1, 2, 3], prompt=1300)) == 1299
    other = make_worker("default-1")
    assert cache.cp_prefix_lookup(ctx=ctx, worker=other, request=_req("e", [1])) == 0  # per replica
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=make_requests(1)[0]) is None  # no hashes: defer
    s = cache.stats()
    assert (s["prefix_lookups"], s["prefix_hits"], s["prefix_hit_tokens"]) == (4, 2, 1024 + 1299)


def test_capacity_is_the_replicas_free_kv_blocks_and_eviction_is_lru():
    # 100 free blocks of 16 tokens hold 3 blocks of 512 tokens.
    w = make_worker(num_kv_blocks=200, num_kv_blocks_used=100, kv_block_size=16)
    cache, ctx = PrefixCache(), make_context(workers=[w])
    cache.cp_prefix_store(ctx=ctx, worker=w, request=_req("a", [1, 2]))
    cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("b", [1]))  # touch 1: 2 is now the oldest
    cache.cp_prefix_store(ctx=ctx, worker=w, request=_req("c", [7, 8]))
    assert list(cache._caches[w.worker_id]) == [1, 8, 7]  # least recently used first; a prompt's tail before its head
    w.num_kv_blocks_used = 168  # memory got tight: only one block fits at the next use
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("d", [7])) == 511  # (found whole: one computed)
    assert list(cache._caches[w.worker_id]) == [7]
    fixed = PrefixCache(PrefixCache.Settings(capacity_blocks=1))
    fixed.cp_prefix_store(ctx=ctx, worker=w, request=_req("e", [4, 5]))
    assert list(fixed._caches[w.worker_id]) == [4]  # a prompt's head outlives its tail


def test_a_cache_smaller_than_one_prompt_keeps_its_head_and_evicts_its_tail_first():
    # vLLM frees a request's blocks last block first: its head stays longest, and the head is what a
    # lookup can reuse (only a leading run hits). Evicting the head first made a 3-block cache useless
    # for 5-block prompts: every lookup missed.
    w = make_worker()
    cache, ctx = PrefixCache(PrefixCache.Settings(capacity_blocks=3)), make_context(workers=[w])
    cache.cp_prefix_store(ctx=ctx, worker=w, request=_req("a", [1, 2, 3, 4, 5]))
    assert list(cache._caches[w.worker_id]) == [3, 2, 1]
    assert cache.cp_prefix_peek(ctx=ctx, worker=w, request=_req("b", [1, 2, 3, 4, 5])) == 3 * 512
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("b", [1, 2, 3, 4, 5])) == 3 * 512
    # a second prompt sharing two head blocks: its own tail goes first, the shared head stays
    cache.cp_prefix_store(ctx=ctx, worker=w, request=_req("c", [1, 2, 6, 7]))
    assert list(cache._caches[w.worker_id]) == [6, 2, 1]
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("d", [1, 2, 3])) == 2 * 512
    # a hit touches the hit blocks tail first as well: the head ends the most recently used
    assert list(cache._caches[w.worker_id]) == [6, 2, 1]


def test_a_hit_skips_the_cached_part_of_the_prefill_and_the_model_sees_it_as_context():
    shared = [11, 12, 13]
    trace = [
        TraceRequest("first", 0.0, 2048, 2, hash_ids=(*shared, 14), hash_block_tokens=512),
        TraceRequest("second", 10.0, 2048, 2, hash_ids=(*shared, 15), hash_block_tokens=512),
        TraceRequest("stranger", 20.0, 2048, 2, hash_ids=(21, 22, 23, 24), hash_block_tokens=512),
    ]
    res = replay_with(trace=trace, plugins={"enabled": ["prefix-cache", "least-loaded", "continuous-batching",
                                                        "fixed-replicas", "static-memory", "builtin-latency-models"]},
                      cluster={"models": [{"name": "default", "replicas": 1, "latency": PREFILL_PRICED}]})
    by_id = {r.request_id: r for r in res.requests}
    first, second, stranger = by_id["first"], by_id["second"], by_id["stranger"]
    assert (first.cached_tokens, second.cached_tokens, stranger.cached_tokens) == (0, 1536, 0)
    assert second.cache_hit == "prefix" and first.cache_hit is None
    ttft = {k: r.first_token_s - r.arrival_s for k, r in by_id.items()}
    assert ttft["first"] == pytest.approx(2.048) and ttft["stranger"] == pytest.approx(2.048)
    assert ttft["second"] == pytest.approx(0.512)  # only the last 512 tokens are computed
    assert res.summary["prefix_token_hit_ratio"] == pytest.approx(1536 / (3 * 2048), abs=1e-6)
    # the second request was computed (its last 512 tokens): not a response-cache hit
    assert res.summary["cache_hits"] == 0 and res.summary["cache_hit_rate"] == 0.0
    from controlplane.cli.summary_table import summary_table
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(summary_table(res.summary, "run"))
    text = console.export_text()
    assert "response cache hit rate" in text
    # (a share, labelled as one: it read "prefix cache: prompt tokens reused │ 0.25", a count's label)
    reused = next(line for line in text.splitlines() if "prompt tokens reused" in line)
    assert "prefix cache: share of prompt tokens reused" in reused and "0.25" in reused


def test_a_fully_cached_prompt_still_computes_its_last_token():
    trace = [TraceRequest(str(i), 10.0 * i, 1024, 2, hash_ids=(1, 2), hash_block_tokens=512) for i in range(2)]
    res = replay_with(trace=trace, plugins={"enabled": ["prefix-cache", "least-loaded", "continuous-batching",
                                                        "fixed-replicas", "static-memory", "builtin-latency-models"]},
                      cluster={"models": [{"name": "default", "replicas": 1, "latency": PREFILL_PRICED}]})
    second = {r.request_id: r for r in res.requests}["1"]
    assert second.cached_tokens == 1023 and second.first_token_s - second.arrival_s == pytest.approx(0.001)
    # the summary counts what the core applied: 1023, not the whole 1024 (it counted 1024)
    assert (res.summary["prefix_hits"], res.summary["prefix_hit_tokens"]) == (1, 1023)


def test_a_one_token_prompt_found_in_the_cache_is_no_hit():
    cache, w = PrefixCache(), make_worker()
    ctx = make_context(workers=[w])
    cache.cp_prefix_store(ctx=ctx, worker=w, request=_req("a", [1]))
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("b", [1], prompt=1)) == 0  # the core computes it
    assert cache.stats()["prefix_hits"] == 0
    # a preempted request's recompute counts: its prompt is cached whole (its output tokens are computed again)
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("c", [1], recompute_tokens=5)) == 512


def test_affinity_routes_to_the_replica_holding_the_deepest_prefix_unless_it_is_too_busy():
    a, b = make_worker("default-0"), make_worker("default-1")
    router, ctx = PrefixAffinity(), make_context(workers=[a, b])
    assert router.cp_route_request(ctx=ctx, request=_req("x", [1, 2, 3]), workers=[a, b]).worker_id == "default-0"
    assert router.cp_route_request(ctx=ctx, request=_req("y", [1, 7]), workers=[b, a]).worker_id == "default-0"
    b.running = make_requests(0)
    a.running = make_requests(5, prefix="busy")  # 5 > 0 + max_imbalance 2
    d = router.cp_route_request(ctx=ctx, request=_req("z", [1, 2, 3, 4]), workers=[a, b])
    assert d.worker_id == "default-1" and "too busy" in d.reason
    assert router.cp_route_request(ctx=ctx, request=make_requests(1)[0], workers=[a, b]) is None


def _offline_leading_ratio(rows) -> float:
    """Prefix-token hit ratio of one infinite cache filled at arrival (the data README's 37.4% rule)."""
    seen, hit, total = set(), 0, 0
    for t in rows:
        n = 0
        for h in t.hash_ids:
            if h not in seen:
                break
            n += 1
        hit += min(n * 512, t.prompt_tokens)
        total += t.prompt_tokens
        seen.update(t.hash_ids)
    return hit / total


def _mooncake(n: int):
    if not MOONCAKE.exists():
        pytest.skip(f"no Mooncake trace at {MOONCAKE}")
    return list(islice(read_trace(MOONCAKE, "mooncake", rng=np.random.default_rng(0)), n))


def _cluster(replicas: int) -> dict:
    return {"models": [{"name": "kimi", "replicas": replicas, "latency_model": "roofline",
                        "latency": {"model": "meta-llama/Meta-Llama-3-70B", "gpu": "h100-80gb", "tensor_parallel": 4},
                        "model_spec": "meta-llama/Meta-Llama-3-70B", "gpu": "h100-80gb", "gpus_per_replica": 4,
                        "max_batch_tokens": 131072}]}


def _hit_ratio(trace, router: str, replicas: int, capacity: int | None = None) -> float:
    enabled = [router, "least-loaded", "prefix-cache", "continuous-batching", "fixed-replicas", "static-memory",
               "builtin-latency-models"]
    settings = {"static-memory": {"request_slot_tokens": None}}
    if capacity is not None:
        settings["prefix-cache"] = {"capacity_blocks": capacity}
    res = replay_with(trace=trace, cluster=_cluster(replicas), sim={"tick_s": 10.0},
                      plugins={"enabled": list(dict.fromkeys(enabled)), "settings": settings})
    assert res.summary["num_completed"] == len(trace)
    return res.summary["prefix_token_hit_ratio"]


def test_mooncake_the_whole_trace_has_the_documented_infinite_cache_hit_ratio():
    assert _offline_leading_ratio(_mooncake(20_000)) == pytest.approx(0.374, abs=0.0005)


def test_mooncake_slice_an_unbounded_cache_on_one_replica_reaches_the_offline_ratio():
    trace = _mooncake(1500)
    offline = _offline_leading_ratio(trace)
    simulated = _hit_ratio(trace, "least-loaded", 1, capacity=10**9)
    # Blocks enter the cache when a prefill completes, not at arrival: a little below.
    assert offline - 0.03 < simulated <= offline + 1e-5


def test_mooncake_slice_the_summarys_hit_tokens_are_the_stored_cached_tokens():
    """The analyst's check: prefix-cache and weighted-router on 4 replicas. The summary's prefix_hit_tokens counted
    a prompt found whole in full, the core (and the stored ``cached_tokens``) one token less."""
    trace = [t for t in _mooncake(1600) if t.prompt_tokens <= 7000][:1500]
    res = replay_with(trace=trace, plugins={"enabled": ["queue-limit", "weighted-router", "prefix-cache",
                                                        "continuous-batching", "fixed-replicas", "static-memory",
                                                        "builtin-latency-models"]},
                      cluster={"models": [{"name": "default", "replicas": 4}]})
    s = res.summary
    whole = [r for r in res.requests if r.cached_tokens == r.prompt_tokens - 1]
    assert whole and s["num_preemptions"] == 0  # (a preempted request is looked up, and counted, again)
    assert s["prefix_hit_tokens"] == sum(r.cached_tokens for r in res.requests)
    assert s["prefix_hits"] == sum(1 for r in res.requests if r.cached_tokens)


def test_mooncake_slice_cache_aware_routing_raises_the_hit_ratio():
    trace = _mooncake(1500)
    spread = _hit_ratio(trace, "least-loaded", 4, capacity=10**9)
    affine = _hit_ratio(trace, "prefix-affinity", 4, capacity=10**9)
    assert affine > spread + 0.05
