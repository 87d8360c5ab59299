"""The exact response cache."""

from __future__ import annotations

from controlplane.testing import make_context, make_requests
from controlplane.types import Request
from plugins.caching import ExactCache


def _req(rid: str, prompt: str | None, params=(), model: str = "default") -> Request:
    r = Request(rid, 0.0, 10, 4, model=model, prompt=prompt, params=params)
    r.output_tokens = 4
    r.output_text = f"answer to {prompt}"
    return r


def test_hit_after_store_with_the_same_prompt_model_and_params():
    cache = ExactCache()
    ctx = make_context(now_s=1.0)
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("a", "hi")) is None
    cache.cp_cache_store(ctx=ctx, request=_req("a", "hi"))
    hit = cache.cp_cache_lookup(ctx=make_context(now_s=2.0), request=_req("b", "hi"))
    assert (hit.kind, hit.latency_s, hit.response_text, hit.similarity) == ("exact", 0.002, "answer to hi", 1.0)
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("c", "hi", params=(("temperature", 0.5),))) is None
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("d", "hi", model="chat")) is None


def test_requests_without_prompt_text_never_hit():
    cache = ExactCache()
    r = make_requests(1)[0]
    cache.cp_cache_store(ctx=make_context(), request=r)
    assert cache.cp_cache_lookup(ctx=make_context(), request=r) is None


def test_ttl_expires_entries():
    cache = ExactCache(ExactCache.Settings(ttl_s=10))
    cache.cp_cache_store(ctx=make_context(now_s=0.0), request=_req("a", "hi"))
    assert cache.cp_cache_lookup(ctx=make_context(now_s=10.0), request=_req("b", "hi")) is not None
    assert cache.cp_cache_lookup(ctx=make_context(now_s=10.5), request=_req("c", "hi")) is None


def test_lru_capacity_keeps_the_recently_used():
    cache = ExactCache(ExactCache.Settings(capacity=2))
    ctx = make_context()
    for p in ("a", "b"):
        cache.cp_cache_store(ctx=ctx, request=_req(p, p))
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("x", "a"))  # a is now most recent
    cache.cp_cache_store(ctx=ctx, request=_req("c", "c"))  # evicts b
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("y", "b")) is None
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("z", "a")) is not None


def test_responses_served_from_the_cache_are_not_stored_again():
    cache = ExactCache()
    served = _req("a", "hi")
    served.cache_hit = "exact"
    cache.cp_cache_store(ctx=make_context(), request=served)
    assert cache.cp_cache_lookup(ctx=make_context(), request=_req("b", "hi")) is None


def test_each_instance_has_its_own_entries():
    a, b = ExactCache(), ExactCache()
    a.cp_cache_store(ctx=make_context(), request=_req("a", "hi"))
    assert b.cp_cache_lookup(ctx=make_context(), request=_req("b", "hi")) is None
