"""Cache stores: the in-process store's bounds and eviction, and the Redis store against the real
server (the shared one on 6379, and a server of this test's own that it stops mid-run)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from plugins.cache_backends import MemoryStore, RedisStore, StoreSettings, open_store
from tests.fixtures.common import REDIS_URL


def _need(ok: bool, message: str) -> None:
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: Redis tests must run)")
    pytest.skip(message)


@pytest.fixture
def shared_redis():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.RedisError as exc:
        _need(False, f"Redis at {REDIS_URL} is unreachable: {exc}")
    ns = f"test-{uuid.uuid4().hex[:8]}"
    stores = []

    def make(**kw):
        s = RedisStore(REDIS_URL, namespace=ns, **kw)
        stores.append(s)
        return s

    yield make
    client = redis.Redis.from_url(REDIS_URL)
    for k in client.scan_iter(f"{ns}:*"):
        client.delete(k)
    for s in stores:
        s.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server on a free port that this test starts and stops (never the shared one)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_redis():
    _need(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


# -- in-process store ---------------------------------------------------------------------------

def test_memory_store_round_trip_ttl_and_access_counts():
    s = MemoryStore()
    s.set("k", b"v", ttl_s=10.0, now_s=0.0)
    assert s.get("k", now_s=5.0) == b"v"
    assert s.get("k", now_s=10.0) == b"v"
    assert s.access_count("k") == 2
    assert s.get("k", now_s=10.01) is None  # expired
    assert s.access_count("k") == 0 and len(s) == 0
    s.set("k", b"v", now_s=0.0)
    s.delete("k")
    assert s.get("k", now_s=0.0) is None


def test_lru_evicts_the_least_recently_used():
    s = MemoryStore(max_entries=2, eviction="lru")
    s.set("a", b"1", now_s=0)
    s.set("b", b"2", now_s=0)
    s.get("a", now_s=0)
    s.set("c", b"3", now_s=0)
    assert (s.get("a", now_s=0), s.get("b", now_s=0), s.get("c", now_s=0)) == (b"1", None, b"3")


def test_lfu_evicts_the_least_often_used_even_if_recent():
    s = MemoryStore(max_entries=2, eviction="lfu")
    s.set("a", b"1", now_s=0)
    for _ in range(3):
        s.get("a", now_s=0)
    s.set("b", b"2", now_s=0)
    s.get("b", now_s=0)  # b is the most recent, but used once
    s.set("c", b"3", now_s=0)
    assert s.get("a", now_s=0) == b"1" and s.get("b", now_s=0) is None


def test_ttl_eviction_drops_the_entry_that_expires_soonest():
    s = MemoryStore(max_entries=2, eviction="ttl")
    s.set("long", b"1", ttl_s=100, now_s=0)
    s.set("short", b"2", ttl_s=10, now_s=0)
    s.get("short", now_s=0)
    s.set("new", b"3", ttl_s=50, now_s=0)
    assert s.get("short", now_s=1) is None and s.get("long", now_s=1) == b"1" and s.get("new", now_s=1) == b"3"


def test_expired_entries_go_before_any_live_one_is_evicted():
    s = MemoryStore(max_entries=2, eviction="lru")
    s.set("old", b"1", ttl_s=1, now_s=0)
    s.set("live", b"2", now_s=0)
    s.get("old", now_s=0.5)  # old is the most recently used ...
    s.set("new", b"3", now_s=5)  # ... but expired by now: it goes, not live
    assert s.get("live", now_s=5) == b"2" and s.get("new", now_s=5) == b"3" and len(s) == 2


def test_byte_bound_evicts_until_it_fits_and_refuses_oversized_values():
    s = MemoryStore(max_entries=100, max_bytes=30, eviction="lru")
    s.set("a", b"x" * 9, now_s=0)  # 10 bytes with its key
    s.set("b", b"x" * 9, now_s=0)
    s.set("c", b"x" * 9, now_s=0)
    assert s.bytes_used == 30
    s.set("d", b"x" * 14, now_s=0)  # 15 bytes: a and b must go
    assert s.get("a", now_s=0) is None and s.get("b", now_s=0) is None
    assert s.get("c", now_s=0) is not None and s.get("d", now_s=0) is not None and s.bytes_used == 25
    s.set("big", b"x" * 40, now_s=0)
    assert s.get("big", now_s=0) is None and s.bytes_used == 25 and s.evictions == 2


def test_many_accesses_keep_the_eviction_heap_small_and_correct():
    s = MemoryStore(max_entries=50, eviction="lfu")
    for i in range(50):
        s.set(f"k{i}", b"v", now_s=0)
    for rep in range(200):
        s.get(f"k{rep % 49}", now_s=0)  # k49 is never read
    assert len(s._heap) <= 4 * len(s) + 64
    s.set("new", b"v", now_s=0)
    assert s.get("k49", now_s=0) is None and len(s) == 50


def test_bad_values_name_the_key():
    s = MemoryStore()
    with pytest.raises(TypeError, match="'k'"):
        s.set("k", "text", now_s=0)
    with pytest.raises(ValueError, match="ttl_s"):
        s.set("k", b"v", ttl_s=0, now_s=0)
    with pytest.raises(ValueError, match="eviction"):
        MemoryStore(eviction="fifo")


def test_open_store_builds_what_the_settings_name():
    assert isinstance(open_store(), MemoryStore)
    m = open_store(StoreSettings(max_entries=3, max_bytes=99, eviction="lfu"))
    assert (m.max_entries, m.max_bytes, m.eviction) == (3, 99, "lfu")
    r = open_store(StoreSettings(backend="redis", namespace="x"), namespace="exact-cache")
    assert isinstance(r, RedisStore) and r.namespace == "x:exact-cache"
    r.close()


# -- Redis store --------------------------------------------------------------------------------

def test_redis_round_trip_ttl_and_access_counts(shared_redis):
    s = shared_redis()
    s.set("k", b"\x00bin", ttl_s=0.3, now_s=0)
    assert s.get("k", now_s=0) == b"\x00bin" and s.get("k", now_s=0) == b"\x00bin"
    assert s.access_count("k") == 2
    time.sleep(0.45)  # Redis's own clock expires it
    assert s.get("k", now_s=0) is None and s.access_count("k") == 0
    s.set("k", b"v", now_s=0)
    s.delete("k")
    assert s.get("k", now_s=0) is None
    assert s.get("never", now_s=0) is None and s.access_count("never") == 0  # a miss creates nothing


def test_two_processes_share_entries_through_redis(shared_redis):
    writer = shared_redis()
    code = ("import sys; from plugins.cache_backends import RedisStore; "
            "s = RedisStore(sys.argv[1], namespace=sys.argv[2]); v = s.get('shared', now_s=0); "
            "s.set('reply', b'seen:' + (v or b'none'), ttl_s=30, now_s=0); print(s.failures)")
    writer.set("shared", b"from-parent", ttl_s=30, now_s=0)
    out = subprocess.run([os.sys.executable, "-c", code, REDIS_URL, writer.namespace],
                         capture_output=True, text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(
                             os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert writer.get("reply", now_s=0) == b"seen:from-parent"


def test_a_redis_stop_mid_run_degrades_to_misses_with_one_warning_and_recovers(own_redis, caplog):
    s = RedisStore(f"redis://127.0.0.1:{own_redis.port}/0", namespace="t", retry_after_s=0.2)
    s.set("a", b"1", ttl_s=60, now_s=0)
    assert s.get("a", now_s=0) == b"1"
    caplog.set_level(logging.INFO, logger="plugins.cache_backends")
    own_redis.stop()
    started = time.monotonic()
    for i in range(50):  # a run keeps going: misses, skipped writes, no exception
        assert s.get("a", now_s=i) is None
        s.set(f"w{i}", b"x", ttl_s=60, now_s=i)
        s.delete("a")
        assert s.access_count("a") == 0
    assert time.monotonic() - started < 5.0  # no call waits long for a dead server
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "failed" in warnings[0].getMessage()
    assert s.failures >= 1 and not s.available
    own_redis.start()  # an empty server (no persistence): the entry is gone, writes work again
    time.sleep(0.25)
    assert s.get("a", now_s=100) is None
    s.set("b", b"2", ttl_s=60, now_s=100)
    assert s.get("b", now_s=100) == b"2" and s.available
    assert any("reachable again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    s.close()


def test_redis_settings_errors_name_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="backend"):
        StoreSettings(backend="memcached")


def test_a_redis_that_answers_with_an_error_is_a_miss_with_one_warning(shared_redis, caplog):
    """A database index the server does not have (`/99`): every call raised ResponseError, each a plugin error,
    with no back-off; docs/caching.md says every Redis error becomes a miss."""
    shared_redis()  # (the server answers: checked by the fixture)
    s = RedisStore(REDIS_URL.rsplit("/", 1)[0] + "/99", namespace="t", retry_after_s=0.5)
    caplog.set_level(logging.INFO, logger="plugins.cache_backends")
    for i in range(10):
        s.set("k", b"v", ttl_s=60, now_s=i * 0.1)
        assert s.get("k", now_s=i * 0.1) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "DB index is out of range" in warnings[0], warnings
    assert s.failures == 2  # the rest waited out the back-off
    s.close()


def test_a_redis_url_that_is_not_one_is_refused_naming_the_setting():
    from pydantic import ValidationError

    from plugins.caching import ExactCache

    with pytest.raises(ValidationError, match=r"redis_url[\s\S]*redis://, rediss:// or unix:// URL, got 'htp://x'"):
        ExactCache.Settings(backend="redis", redis_url="htp://x")
    with pytest.raises(ValidationError, match="redis_url"):
        StoreSettings(backend="redis", redis_url="localhost:6379")
    for url in ("http://:hunter2@127.0.0.1:6379/0", "http://127.0.0.1:6379/0?password=hunter2"):  # its password: ***
        with pytest.raises(ValidationError) as refused:
            ExactCache.Settings(backend="redis", redis_url=url)
        assert refused.value.errors()[0]["msg"].endswith(f"got {url.replace('hunter2', '***')!r}")


def test_only_a_simulated_run_gets_a_redis_namespace_of_its_own(shared_redis):
    from controlplane.context import RunInfo
    from plugins.cache_backends import scope_to_run

    class Ctx:
        def __init__(self, mode):
            self.run = RunInfo(run_id=None, mode=mode, seed=0)

    live, sim, memory = shared_redis(), shared_redis(), MemoryStore()
    ns = live.namespace
    scope_to_run(live, Ctx("live"))
    assert live.namespace == ns  # daemons share the configured namespace
    scope_to_run(sim, Ctx("sim"))
    assert sim.namespace.startswith(ns + ":sim-")
    scope_to_run(sim, Ctx("sim"))
    assert sim.namespace.count(":sim-") == 1  # once
    scope_to_run(memory, Ctx("sim"))  # in-process: nothing to do


def test_a_redis_url_password_is_never_logged(caplog):
    """An unreachable Redis store's warning names its URL with the password hidden."""
    pytest.importorskip("redis")
    from plugins.cache_backends import RedisStore

    caplog.set_level(logging.INFO, logger="plugins.cache_backends")
    store = RedisStore("redis://:hunter2@127.0.0.1:1/0")  # port 1: nothing listens there
    assert store.get("k", now_s=0.0) is None
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "failed (Error 111" in logged and "redis://:***@127.0.0.1:1/0" in logged
    assert "hunter2" not in logged
    store.close()


def test_exact_cache_takes_the_redis_backends_retry_after_s():
    # docs/caching.md described it under exact-cache's Redis backend; the settings refused it.
    from plugins.caching import ExactCache

    cache = ExactCache(ExactCache.Settings(backend="redis", redis_url=REDIS_URL, retry_after_s=5.0))
    try:
        assert isinstance(cache.store, RedisStore) and cache.store.retry_after_s == 5.0
    finally:
        cache.store.close()
    assert ExactCache.Settings().retry_after_s == 1.0


def test_an_unreachable_redis_is_tried_less_and_less_often_in_run_time():
    # One try per simulated second: with a host name that does not resolve (0.12 s a try, which
    # socket_timeout_s does not bound) a 300-request replay took 20-24 s instead of 3.7 s.
    pytest.importorskip("redis")
    store = RedisStore("redis://127.0.0.1:1/0", retry_after_s=1.0)  # port 1: nothing listens there
    for t in range(300):
        assert store.get("k", now_s=float(t)) is None
    # tries at 0, 1, 3, 7, 15, 31, 63, then every 60 s of run time: 123, 183, 243 (it was 300 tries)
    assert store.failures == 10
    store.close()


def test_an_outage_s_start_and_end_are_kept_for_the_core_to_record(own_redis):
    """A Redis outage showed only as one log line: its start and end are now kept (`take_outages`), once each, for
    the core to record as ``cache_store_down`` / ``cache_store_up`` decisions."""
    assert MemoryStore().take_outages() == [] and not MemoryStore.reports_outages
    s = RedisStore(f"redis://127.0.0.1:{own_redis.port}/0", namespace="t", retry_after_s=0.2)
    assert s.reports_outages and s.get("a", now_s=0) is None and s.take_outages() == []
    own_redis.stop()
    for t in range(5):
        s.get("a", now_s=float(t))
    ((at, down, why),) = s.take_outages()
    assert (at, down) == (0.0, True) and why.startswith(f"Redis cache store at redis://127.0.0.1:{own_redis.port}/0 "
                                                         "failed (") and why.endswith("serving misses until it answers")
    assert s.take_outages() == []  # taken
    own_redis.start()
    assert s.get("a", now_s=100.0) is None
    assert s.take_outages() == [(100.0, False, f"Redis cache store at redis://127.0.0.1:{own_redis.port}/0 is "
                                                "reachable again")]
    s.close()


def test_a_replay_records_a_redis_outage_as_one_decision():
    from controlplane.testing import make_config, replay_with
    from sim.traces.record import TraceRequest

    pytest.importorskip("redis")
    trace = [TraceRequest(f"r{i}", 1.0 * i, 12, 4, prompt=f"question {i % 3}") for i in range(20)]
    plugins = {"enabled": make_config().plugins.enabled,
               "settings": {"exact-cache": {"backend": "redis", "redis_url": "redis://127.0.0.1:1/3"}}}  # nobody there
    result = replay_with(trace=trace, plugins=plugins)
    outages = [d for d in result.decisions if d.action.startswith("cache_store_")]
    assert [(d.hook, d.plugin, d.action, d.subject) for d in outages] == [
        ("cp_cache_lookup", "exact-cache", "cache_store_down", "exact-cache")]
    assert "redis://127.0.0.1:1/3 failed (" in outages[0].reason and outages[0].payload == {
        "url": "redis://127.0.0.1:1/3"}


def test_a_redis_store_counts_its_outages_and_the_run_time_they_lasted(own_redis):
    """The run summary's ``cache_store_outages`` / ``cache_store_down_s`` come from these totals: an outage counts
    from the first call that failed to the first that answered again, one going on until the time asked."""
    assert MemoryStore().outage_totals(50.0) == (0, 0.0)
    s = RedisStore(f"redis://127.0.0.1:{own_redis.port}/0", namespace="t", retry_after_s=0.0)
    s.get("a", now_s=1.0)
    assert s.outage_totals(2.0) == (0, 0.0)
    own_redis.stop()
    for t in (3.0, 4.0, 5.0):
        s.get("a", now_s=t)
    assert s.outage_totals(7.5) == (1, 4.5)  # going on since 3.0
    own_redis.start()
    s.get("a", now_s=10.0)
    assert s.outage_totals(20.0) == (1, 7.0)  # 3.0 to 10.0
    own_redis.stop()
    s.get("a", now_s=21.0)
    s.count_outages_from(30.0)  # a run starts during an outage: it counts from the start
    assert s.outage_totals(32.0) == (1, 2.0)
    own_redis.start()
    s.get("a", now_s=33.0)
    s.count_outages_from(40.0)
    assert s.outage_totals(50.0) == (0, 0.0)
    s.close()
