"""Prefix blocks stay with their tenant unless shared_across_tenants: the cache, the affinity router, a replay."""

from __future__ import annotations

import pytest

from controlplane.prefix_scope import prefix_scope, prefixes_shared_across_tenants, scoped_hashes
from controlplane.testing import make_context, make_requests, make_worker, replay_with
from plugins.prefix_cache import PrefixAffinity, PrefixCache
from sim.traces import TraceRequest

PRICED = {"base_s": 0.0, "prefill_s_per_token": 1e-3, "prefill_s_per_token_context": 0.0,
          "decode_s_per_seq": 0.01, "decode_s_per_context_token": 0.0}
ENABLED = ["prefix-cache", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
           "builtin-latency-models"]


def _req(rid, hashes, tenant=None):
    r = make_requests(1, prompt_tokens=512 * len(hashes), prefix=rid)[0]
    r.hash_ids, r.hash_block_tokens, r.tenant = tuple(hashes), 512, tenant
    return r


def test_scoped_hashes_keep_prefixes_apart_per_scope_and_untenanted_hashes_unchanged():
    assert scoped_hashes((1, 2, 3), None) == (1, 2, 3)
    a, b = scoped_hashes((1, 2, 3), "team-a"), scoped_hashes((1, 2, 3), "team-b")
    assert a != b and not set(a) & set(b) and scoped_hashes((1, 2, 9), "team-a")[:2] == a[:2]
    assert prefix_scope("team-a", False) == "team-a"
    assert prefix_scope("team-a", True) is None and prefix_scope(None, False) is None
    assert not prefixes_shared_across_tenants({}) and not prefixes_shared_across_tenants({"prefix-cache": None})
    assert prefixes_shared_across_tenants({"prefix-cache": {"shared_across_tenants": True}})


@pytest.mark.parametrize("shared", [False, True])
def test_a_tenant_finds_only_its_own_prefixes_unless_shared_across_tenants(shared):
    w = make_worker()
    cache, ctx = PrefixCache(PrefixCache.Settings(shared_across_tenants=shared)), make_context(workers=[w])
    cache.cp_prefix_store(ctx=ctx, worker=w, request=_req("a", [1, 2, 3], tenant="team-a"))
    guess = _req("b", [1, 2, 9], tenant="team-b")
    assert cache.cp_prefix_peek(ctx=ctx, worker=w, request=guess) == (1024 if shared else 0)
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=guess) == (1024 if shared else 0)
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("a2", [1, 2, 9], tenant="team-a")) == 1024
    assert cache.cp_prefix_lookup(ctx=ctx, worker=w, request=_req("n", [1, 2, 9])) == (1024 if shared else 0)


def test_affinity_follows_only_the_tenants_own_prefixes():
    a, b = make_worker("default-0"), make_worker("default-1")
    router, ctx = PrefixAffinity(), make_context(workers=[a, b])
    assert router.cp_route_request(ctx=ctx, request=_req("x", [1, 2, 3], "team-a"), workers=[a, b]).worker_id == a.worker_id
    d = router.cp_route_request(ctx=ctx, request=_req("y", [1, 2, 3], "team-b"), workers=[b, a])
    assert d.worker_id == b.worker_id and "no cached prefix" in d.reason  # team-a's blocks say nothing to team-b
    shared = PrefixAffinity(PrefixAffinity.Settings(shared_across_tenants=True))
    shared.cp_route_request(ctx=ctx, request=_req("x", [1, 2, 3], "team-a"), workers=[a, b])
    assert shared.cp_route_request(ctx=ctx, request=_req("y", [1, 2, 3], "team-b"), workers=[b, a]).worker_id == "default-0"


@pytest.mark.parametrize("shared", [False, True])
def test_a_replay_reuses_a_prefix_across_tenants_only_when_shared(shared):
    trace = [TraceRequest("a1", 0.0, 2048, 2, tenant="team-a", hash_ids=(11, 12, 13, 14), hash_block_tokens=512),
             TraceRequest("b1", 10.0, 2048, 2, tenant="team-b", hash_ids=(11, 12, 13, 15), hash_block_tokens=512),
             TraceRequest("a2", 20.0, 2048, 2, tenant="team-a", hash_ids=(11, 12, 13, 16), hash_block_tokens=512)]
    res = replay_with(trace=trace, cluster={"models": [{"name": "default", "replicas": 1, "latency": PRICED}]},
                      plugins={"enabled": ENABLED, "settings": {"prefix-cache": {"shared_across_tenants": shared}}})
    cached = {r.request_id: r.cached_tokens for r in res.requests}
    assert cached == {"a1": 0, "b1": 1536 if shared else 0, "a2": 1536}
