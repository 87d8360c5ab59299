"""The exact cache's key options, eviction bounds, access counts and shared Redis backend."""

from __future__ import annotations

import shutil
import uuid

import pytest

from controlplane.testing import make_context
from controlplane.types import Request
from plugins.caching import ExactCache, cut_key, exact_key
from tests.plugins.test_cache_backends import REDIS_URL, OwnRedis, _need, shared_redis  # noqa: F401  (fixture)


def _req(rid: str, prompt: str, params=(), model: str = "default", max_out: int = 4, text: str | None = None) -> Request:
    r = Request(rid, 0.0, 10, max_out, model=model, prompt=prompt, params=params)
    r.output_tokens = max_out
    r.output_text = text if text is not None else f"answer to {prompt}"
    return r


def test_the_key_is_a_sha256_of_model_prompt_and_sorted_params():
    a = exact_key(_req("a", "hi", params=(("top_p", 0.9), ("seed", 1))))
    b = exact_key(_req("b", "hi", params=(("seed", 1), ("top_p", 0.9))))
    assert a == b and len(a) == 64
    assert exact_key(_req("c", "hi", params=(("seed", 2), ("top_p", 0.9)))) != a
    assert exact_key(_req("d", "hi", params=(("temperature", 0.7),))) is None  # sampling without a seed
    assert exact_key(_req("e", "hi", params=(("temperature", 0.7), ("seed", 3)))) is not None


def test_equal_params_written_differently_share_a_key():
    # {"temperature": 0} and {"temperature": 0.0} (a trace's int, the daemon's float) were two keys, and so
    # were stop "###" and ["###"]: a repeat missed
    def key(*params):
        return exact_key(_req("k", "hi", params=params))

    assert key(("temperature", 0)) == key(("temperature", 0.0)) == key(("temperature", -0.0))
    assert key(("top_p", 1), ("top_k", 40)) == key(("top_k", 40.0), ("top_p", 1.0))
    assert key(("stop", "###")) == key(("stop", ("###",))) == key(("stop", ["###", "###"]))
    assert key(("stop", ("a", "b"))) == key(("stop", ["b", "a"]))
    assert key(("stop", ()), ("seed", None)) == key()  # an empty stop list and a null are no value
    assert key(("temperature", 0)) != key(("temperature", 0.5), ("seed", 1))
    assert key(("top_p", 0.9)) != key(("top_p", 1.0)) and key(("stop", "a")) != key(("stop", ("a", "b")))
    assert key(("ignore_eos", True)) != key(("ignore_eos", 1))  # a bool is not a number here
    ctx = make_context()
    cache = ExactCache()
    cache.cp_cache_store(ctx=ctx, request=_req("a", "hi", params=(("temperature", 0), ("stop", "###"))))
    hit = cache.cp_cache_lookup(ctx=ctx, request=_req("b", "hi", params=(("stop", ("###",)), ("temperature", 0.0))))
    assert hit is not None and hit.kind == "exact"


def test_seed_normalisation_trims_and_lower_cases_only_when_asked():
    ctx = make_context()
    plain, norm = ExactCache(), ExactCache(ExactCache.Settings(normalise=True))
    for cache in (plain, norm):
        cache.cp_cache_store(ctx=ctx, request=_req("a", "What is my balance?"))
    assert plain.cp_cache_lookup(ctx=ctx, request=_req("b", "  what IS my balance?\n")) is None
    hit = norm.cp_cache_lookup(ctx=ctx, request=_req("b", "  what IS my balance?\n"))
    assert hit.response_text == "answer to What is my balance?"
    assert norm.cp_cache_lookup(ctx=ctx, request=_req("c", "what is my balance")) is None  # not a paraphrase cache


def test_access_counts_follow_the_hits():
    ctx = make_context()
    cache = ExactCache()
    cache.cp_cache_store(ctx=ctx, request=_req("a", "hi"))
    for i in range(3):
        assert cache.cp_cache_lookup(ctx=ctx, request=_req(f"b{i}", "hi")) is not None
    assert cache.store.access_count(cut_key(cache._key(ctx, _req("x", "hi")), 4)) == 3  # 4 tokens of 4: kept as cut there
    assert (cache.hits, cache.lookups) == (3, 3)


def test_lfu_eviction_keeps_the_popular_answer():
    ctx = make_context()
    cache = ExactCache(ExactCache.Settings(capacity=2, eviction="lfu"))
    cache.cp_cache_store(ctx=ctx, request=_req("a", "popular"))
    for i in range(5):
        cache.cp_cache_lookup(ctx=ctx, request=_req(f"p{i}", "popular"))
    cache.cp_cache_store(ctx=ctx, request=_req("b", "once"))
    cache.cp_cache_lookup(ctx=ctx, request=_req("o", "once"))
    cache.cp_cache_store(ctx=ctx, request=_req("c", "new"))
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("x", "popular")) is not None
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("y", "once")) is None


def test_ttl_eviction_drops_the_soonest_to_expire_first():
    cache = ExactCache(ExactCache.Settings(capacity=2, eviction="ttl", ttl_s=100))
    cache.cp_cache_store(ctx=make_context(now_s=0.0), request=_req("a", "old"))
    cache.cp_cache_store(ctx=make_context(now_s=50.0), request=_req("b", "newer"))
    cache.cp_cache_store(ctx=make_context(now_s=60.0), request=_req("c", "newest"))
    ctx = make_context(now_s=61.0)
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("x", "old")) is None
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("y", "newer")) is not None


def test_byte_bound_limits_what_the_cache_holds():
    ctx = make_context()
    cache = ExactCache(ExactCache.Settings(max_bytes=400))
    for i in range(20):
        cache.cp_cache_store(ctx=ctx, request=_req(f"r{i}", f"prompt {i}", text="x" * 50))
    assert cache.store.bytes_used <= 400
    assert 0 < len(cache.store) < 20
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("last", "prompt 19")) is not None
    assert cache.cp_cache_lookup(ctx=ctx, request=_req("first", "prompt 0")) is None


def test_two_caches_on_one_redis_namespace_share_answers(shared_redis):  # noqa: F811
    ns = shared_redis().namespace  # a fresh namespace the fixture cleans up
    settings = ExactCache.Settings(backend="redis", namespace=ns)
    daemon_a, daemon_b = ExactCache(settings), ExactCache(settings)
    ctx = make_context()
    daemon_a.cp_cache_store(ctx=ctx, request=_req("a", "hi", max_out=50, text="hello there"))
    hit = daemon_b.cp_cache_lookup(ctx=ctx, request=_req("b", "hi", max_out=50))
    assert (hit.response_text, hit.output_tokens) == ("hello there", 50)
    other = ExactCache(ExactCache.Settings(backend="redis", namespace=ns + "-other"))
    assert other.cp_cache_lookup(ctx=ctx, request=_req("c", "hi", max_out=50)) is None


def test_a_redis_cache_whose_settings_changed_starts_cold(shared_redis):  # noqa: F811
    # A reload reported a changed exact-cache as restarted, but on Redis it read the old entries: adding ttl_s
    # still hit (docs/daemon.md: "a changed cache starts cold"). The namespace carries the settings' fingerprint.
    ns = shared_redis().namespace  # a fresh namespace the fixture cleans up
    base = {"backend": "redis", "redis_url": REDIS_URL, "namespace": ns}
    ctx = make_context()
    ExactCache(ExactCache.Settings(**base)).cp_cache_store(ctx=ctx, request=_req("a", "hi"))
    assert ExactCache(ExactCache.Settings(**base)).cp_cache_lookup(ctx=ctx, request=_req("b", "hi")) is not None
    for changed in ({"ttl_s": 1800}, {"normalise": True}, {"shared_across_tenants": True}):
        cache = ExactCache(ExactCache.Settings(**base, **changed))
        assert cache.cp_cache_lookup(ctx=ctx, request=_req("c", "hi")) is None, changed
    # how the store is reached or bounded is not what an entry means: those still share the entries
    same = ExactCache(ExactCache.Settings(**base, socket_timeout_s=0.5, retry_after_s=2.0, latency_s=0.01))
    assert same.cp_cache_lookup(ctx=ctx, request=_req("d", "hi")) is not None


def test_a_redis_outage_is_a_miss_not_an_error():
    _need(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = OwnRedis()
    server.start()
    try:
        cache = ExactCache(ExactCache.Settings(backend="redis", redis_url=f"redis://127.0.0.1:{server.port}/0",
                                               namespace=uuid.uuid4().hex[:6]))
        ctx = make_context()
        cache.cp_cache_store(ctx=ctx, request=_req("a", "hi"))
        assert cache.cp_cache_lookup(ctx=ctx, request=_req("b", "hi")) is not None
        server.stop()
        assert cache.cp_cache_lookup(ctx=ctx, request=_req("c", "hi")) is None
        cache.cp_cache_store(ctx=ctx, request=_req("d", "other"))  # skipped, no exception
    finally:
        server.stop()


@pytest.mark.parametrize("field,value", [("eviction", "fifo"), ("backend", "memcached"), ("capacity", 0)])
def test_bad_settings_name_the_field(field, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        ExactCache.Settings(**{field: value})


def test_a_replay_on_redis_does_not_read_an_earlier_replays_answers(shared_redis):  # noqa: F811
    # A second replay of the same trace used to hit on every request (hit rate 1.0 where the
    # trace's repeats allow 0.5), and runs of one sweep read each other's entries.
    import redis

    from controlplane.testing import make_config, replay_with
    from sim.traces.record import TraceRequest

    ns = shared_redis().namespace  # a fresh namespace the fixture cleans up
    trace = [TraceRequest(f"r{i}", 10.0 * i, 12, 4, prompt=f"question {i % 5}") for i in range(10)]
    plugins = {"enabled": make_config().plugins.enabled,
               "settings": {"exact-cache": {"backend": "redis", "redis_url": REDIS_URL, "namespace": ns}}}
    rates = [replay_with(trace=trace, plugins=plugins).summary["cache_hit_rate"] for _ in range(2)]
    assert rates == [0.5, 0.5]
    assert not list(redis.Redis.from_url(REDIS_URL).scan_iter(f"{ns}:*"))  # each run dropped its own entries


def test_socket_timeout_is_a_setting_the_redis_store_uses():
    # docs/caching.md calls socket_timeout_s a setting; exact-cache refused it (extra field), so a
    # slow Redis could not be given more than 0.05 s
    pytest.importorskip("redis")
    cache = ExactCache(ExactCache.Settings(backend="redis", socket_timeout_s=0.5))
    kwargs = cache.store._client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.5 and kwargs["socket_connect_timeout"] == 0.5
    assert ExactCache.Settings().socket_timeout_s == 0.05
