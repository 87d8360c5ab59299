"""The exact response cache."""

from __future__ import annotations

import pytest

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


def test_an_answer_computed_after_a_prefix_cache_hit_is_stored():
    # A prefix hit reused prompt KV blocks, but the answer was generated: it is stored like any other (it was
    # not, since "prefix" is a truthy cache_hit: 4 exact hits of 114 were left with prefix-cache enabled).
    cache = ExactCache()
    computed = _req("a", "hi")
    computed.cache_hit = "prefix"
    cache.cp_cache_store(ctx=make_context(), request=computed)
    assert cache.cp_cache_lookup(ctx=make_context(), request=_req("b", "hi")).response_text == "answer to hi"


@pytest.mark.parametrize("router", [["least-loaded"], ["least-loaded", "prefix-cache"], ["prefix-only", "prefix-cache"]])
def test_a_replay_with_prefix_cache_hits_the_exact_cache_as_often_as_one_without(router):
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    trace = [TraceRequest(request_id=f"r{i}", arrival_s=0.5 * i, prompt_tokens=48, output_tokens=8,
                          prompt=f"prompt {i % 20}", hash_ids=(7, 8, 100 + i % 20), hash_block_tokens=16,
                          params=(("temperature", 0),)) for i in range(60)]
    enabled = ["queue-limit", "exact-cache", *router, "continuous-batching", "fixed-replicas", "static-memory",
               "builtin-latency-models"]
    res = replay_with(trace=trace, plugins={"enabled": enabled},
                      cluster={"models": [{"name": "default", "replicas": 4, "num_kv_blocks": 2000}]})
    # each of the 20 prompts is computed once (its first request, which may reuse the shared prefix), then served
    assert sum(r.cache_hit == "exact" for r in res.requests) == 40


def _tenant_req(rid: str, tenant: str | None) -> Request:
    r = _req(rid, "what is our revenue?")
    r.tenant = tenant
    r.output_text = f"{tenant}'s answer"
    return r


def test_a_tenant_is_served_only_its_own_answers_unless_shared_across_tenants():
    ctx = make_context()
    isolated, shared = ExactCache(), ExactCache(ExactCache.Settings(shared_across_tenants=True))
    for cache in (isolated, shared):
        cache.cp_cache_store(ctx=ctx, request=_tenant_req("a", "acme"))
        cache.cp_cache_store(ctx=ctx, request=_tenant_req("u", None))
    assert isolated.cp_cache_lookup(ctx=ctx, request=_tenant_req("b", "globex")) is None  # acme's was served
    assert isolated.cp_cache_lookup(ctx=ctx, request=_tenant_req("c", "acme")).response_text == "acme's answer"
    assert isolated.cp_cache_lookup(ctx=ctx, request=_tenant_req("v", None)).response_text == "None's answer"
    assert shared.cp_cache_lookup(ctx=ctx, request=_tenant_req("b", "globex")) is not None


def test_a_replay_with_tenants_never_serves_one_tenants_answer_to_another():
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    trace = [TraceRequest(request_id=f"r{i}", arrival_s=1.0 * i, prompt_tokens=48, output_tokens=8,
                          tenant=("acme", "globex")[i // 3 % 2], prompt=f"prompt {i % 3}", params=(("temperature", 0),))
             for i in range(12)]  # acme asks 3 prompts, then globex the same 3, twice
    hits = {s: [r.request_id for r in replay_with(trace=trace, plugins={"settings": {"exact-cache": {
        "shared_across_tenants": s}}}).requests if r.cache_hit] for s in (False, True)}
    assert sorted(hits[False], key=lambda x: int(x[1:])) == ["r6", "r7", "r8", "r9", "r10", "r11"]
    assert len(hits[True]) == 9  # everything after acme's first three


def _serving(**worker) -> object:
    from controlplane.testing import make_config

    return make_context(config=make_config(cluster={"models": [{"name": "default", "worker": worker}]}))


def test_another_model_served_under_the_same_name_never_gets_the_old_models_answers():
    # A daemon restarted with --preset small-llama under the name tiny-llama read tiny-llama's answers from Redis.
    cache = ExactCache()
    cache.cp_cache_store(ctx=_serving(preset="tiny-llama"), request=_req("a", "hi"))
    for other in ({"preset": "small-llama"}, {"path": "/models/tiny"}, {"preset": "tiny-llama", "seed": 1},
                  {"preset": "tiny-llama", "precision": "fp32"}):
        assert cache.cp_cache_lookup(ctx=_serving(**other), request=_req("b", "hi")) is None, other
    # the same weights on another device, compiled, or at their default seed and precision: the same answers
    for same in ({"preset": "tiny-llama", "device": "cpu", "compile": True, "max_seq_len": 512},
                 {"preset": "tiny-llama", "seed": 0, "precision": "auto"}):
        assert cache.cp_cache_lookup(ctx=_serving(**same), request=_req("c", "hi")) is not None, same


def test_each_instance_has_its_own_entries():
    a, b = ExactCache(), ExactCache()
    a.cp_cache_store(ctx=make_context(), request=_req("a", "hi"))
    assert b.cp_cache_lookup(ctx=make_context(), request=_req("b", "hi")) is None


def test_an_answer_cut_at_4_tokens_is_not_served_to_a_request_for_200():
    cache = ExactCache()
    short = _req("a", "hi")  # generated under max_tokens 4 and cut there
    cache.cp_cache_store(ctx=make_context(), request=short)
    wants_more = Request("b", 0.0, 10, 200, model="default", prompt="hi")
    assert cache.cp_cache_lookup(ctx=make_context(), request=wants_more) is None
    same = Request("c", 0.0, 10, 4, model="default", prompt="hi")
    assert cache.cp_cache_lookup(ctx=make_context(), request=same).output_tokens == 4


def test_an_answer_that_stopped_by_itself_serves_any_request_with_room_for_it():
    cache = ExactCache()
    stopped = Request("a", 0.0, 10, 50, model="default", prompt="hi")
    stopped.output_tokens, stopped.output_text = 7, "done."
    cache.cp_cache_store(ctx=make_context(), request=stopped)
    hit = cache.cp_cache_lookup(ctx=make_context(), request=Request("b", 0.0, 10, 200, model="default", prompt="hi"))
    assert (hit.response_text, hit.output_tokens) == ("done.", 7)
    assert cache.cp_cache_lookup(ctx=make_context(), request=Request("c", 0.0, 10, 6, model="default", prompt="hi")) is None


def test_a_cache_hit_counts_the_cached_answer_s_tokens():
    from controlplane.testing import replay_with
    from controlplane.types import RequestStatus
    from sim.traces.record import TraceRequest

    def row(i: int, t: float, max_out: int) -> TraceRequest:
        return TraceRequest(request_id=f"r{i}", arrival_s=t, prompt_tokens=10, output_tokens=max_out, prompt="same")

    res = replay_with(trace=[row(0, 0.0, 4), row(1, 5.0, 4), row(2, 10.0, 200)])
    by_id = {r.request_id: r for r in res.requests}
    assert by_id["r1"].cache_hit == "exact" and by_id["r1"].output_tokens == 4
    assert by_id["r2"].cache_hit is None and by_id["r2"].output_tokens == 200  # cut at 4: not its answer
    assert all(r.status is RequestStatus.COMPLETED for r in res.requests)


def test_responses_a_guardian_blocks_or_has_not_passed_are_never_cached():
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    def trace(n: int) -> list[TraceRequest]:
        return [TraceRequest(request_id=f"r{i}", arrival_s=10.0 * i, prompt_tokens=10, output_tokens=4,
                             prompt="same") for i in range(n)]

    guard = {"sampled-guardian": {"rate": 1.0, "mode": "async"}}
    blocked = replay_with(trace=trace(3), plugins={"settings": guard}, sim={"guardian_block_rate": 1.0})
    assert [r.cache_hit for r in blocked.requests] == [None, None, None]
    passed = replay_with(trace=trace(3), plugins={"settings": guard}, sim={"guardian_block_rate": 0.0})
    assert [r.cache_hit for r in passed.requests] == [None, "exact", "exact"]


def _replay_of_repeats(**overrides):
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    trace = [TraceRequest(request_id=f"r{i}", arrival_s=10.0 * i, prompt_tokens=10, output_tokens=40, prompt="same")
             for i in range(3)]
    res = replay_with(trace=trace, **overrides)
    return res, {r.request_id: r for r in res.requests}


def test_a_cache_hit_says_why_it_was_served():
    _, by_id = _replay_of_repeats()  # the reason was None, in the rows and in a live reply
    assert by_id["r1"].cache_hit == "exact" and by_id["r1"].reason == "exact cache hit (same prompt and parameters)"
    assert by_id["r0"].cache_hit is None and by_id["r0"].reason is None


def test_a_cache_hit_has_no_tpot_and_still_meets_a_tpot_target():
    from controlplane.request_latency import request_latencies

    res, by_id = _replay_of_repeats(slo={"ttft_s": 5.0, "tpot_s": 0.5})
    assert [by_id[f"r{i}"].cache_hit for i in range(3)] == [None, "exact", "exact"]
    assert request_latencies(by_id["r1"])[1] is None  # no decode, no time per output token (it was 0.0)
    assert request_latencies(by_id["r0"])[1] > 0
    assert res.summary["tpot_p50_s"] == pytest.approx(request_latencies(by_id["r0"])[1])  # the computed one alone
    assert res.summary["slo_attainment"] == 1.0  # a hit with no TPOT meets a TPOT target


def test_answers_for_two_max_tokens_do_not_overwrite_each_other():
    # "hi" at temperature 0 with max_tokens 4,4,200,200,4,4,200 was miss,hit,miss,hit,miss,hit,miss: one
    # entry per prompt, overwritten by each length's answer in turn
    cache, ctx, served = ExactCache(), make_context(), []
    for i, max_out in enumerate([4, 4, 200, 200, 4, 4, 200]):
        r = Request(f"r{i}", 0.0, 10, max_out, model="default", prompt="hi", params=(("temperature", 0),))
        hit = cache.cp_cache_lookup(ctx=ctx, request=r)
        served.append(hit is not None and hit.output_tokens == max_out)
        if hit is None:
            r.output_tokens, r.output_text = max_out, f"{max_out} tokens, cut"
            cache.cp_cache_store(ctx=ctx, request=r)
    assert served == [False, True, False, True, True, True, True]


def test_settings_the_backend_does_not_use_are_warned_of_by_name(monkeypatch, caplog):
    import logging

    import plugins.caching as caching

    monkeypatch.setattr(caching, "_warned", set())
    caplog.set_level(logging.WARNING, logger="plugins.caching")
    ExactCache(ExactCache.Settings(redis_url="redis://127.0.0.1:6379/5"))  # backend: memory
    redis = ExactCache(ExactCache.Settings(backend="redis", capacity=5, eviction="lfu", ttl_s=60))
    redis.store.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all(len(line.splitlines()) == 1 for line in lines)
    assert "'redis_url' is ignored with backend: memory" in lines[0]
    assert "'capacity' is ignored with backend: redis" in lines[1] and "'eviction'" in lines[2]
    assert not any("ttl_s" in line for line in lines)  # Redis expires entries after ttl_s: it applies
