"""Key-value stores behind the response caches (and anything else a plugin wants to cache).

A store maps ``str`` keys to ``bytes`` values with a TTL. Callers serialise their own values
(``orjson.dumps`` / ``orjson.loads`` is the usual choice)::

    store = open_store(StoreSettings(backend="redis", redis_url="redis://127.0.0.1:6379/0"))
    store.set("verdict:ab12", b"pass", ttl_s=3600.0, now_s=ctx.now_s)
    store.get("verdict:ab12", now_s=ctx.now_s)      # -> b"pass" or None
    store.delete("verdict:ab12")

Every method takes the caller's time as ``now_s`` (policies pass ``ctx.now_s``, so a replay stays
deterministic and no policy reads the wall clock). Two stores:

- :class:`MemoryStore` (``backend="memory"``, the default): this process only. Entries expire by
  ``now_s``; the store is bounded by entries and by bytes and evicts by ``lru``, ``lfu`` or
  ``ttl`` (the entry that expires soonest). It counts accesses per entry.
- :class:`RedisStore` (``backend="redis"``): one Redis server shared by several processes (daemons).
  Expiry is Redis's own (server time, ``ttl_s`` seconds after the write; ``now_s`` is not used),
  bounds and eviction are the server's ``maxmemory`` / ``maxmemory-policy``. Access counts live
  in the entry (a hash ``{v: value, n: hits}``). When Redis is unreachable the store degrades:
  ``get`` misses, ``set``/``delete`` are skipped, one warning is logged per outage, never an
  exception; after ``retry_after_s`` of run time it tries again, and after each further failure
  waits twice as long (up to ``MAX_RETRY_AFTER_S``), and logs when Redis is back. Each outage's
  start and end is also kept for ``take_outages`` (the core records them as decisions), and counted with the
  run time it lasted for ``outage_totals`` (the run summary's ``cache_store_outages`` / ``cache_store_down_s``).
"""

from __future__ import annotations

import heapq
import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = ["MAX_RETRY_AFTER_S", "CacheStore", "MemoryStore", "RedisStore", "RedisUrl", "StoreSettings", "open_store",
           "release_run", "scope_to_run"]


def _redis_url(url: str) -> str:
    """A URL Redis can open: refused with the setting's name when it is not one (redis-py's own error, at the
    plugin's start, named neither the setting nor the value); the value shown without its password."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        from controlplane.storage.errors import mask_password

        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {mask_password(url)!r}")
    return url


#: A plugin setting holding a Redis URL.
RedisUrl = Annotated[str, AfterValidator(_redis_url)]



def _log() -> Any:
    """This module's logger, made when something is logged (``logging`` is not imported by a
    replay that logs nothing)."""
    import logging

    return logging.getLogger(__name__)

Eviction = Literal["lru", "lfu", "ttl"]


class CacheStore(ABC):
    """``get``/``set``/``delete`` of bytes under str keys, with a TTL. Never raises for an outage."""

    #: Whether the store can be unreachable, its outages kept for `take_outages` (the core asks only those).
    reports_outages = False

    @abstractmethod
    def get(self, key: str, *, now_s: float) -> bytes | None:
        """The value stored under ``key``, or None (absent, expired, or the store unreachable).
        A hit counts one access."""

    @abstractmethod
    def set(self, key: str, value: bytes, ttl_s: float | None = None, *, now_s: float) -> None:
        """Store ``value`` under ``key`` for ``ttl_s`` seconds (None: until evicted)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Forget ``key`` (no error when it is absent)."""

    @abstractmethod
    def access_count(self, key: str) -> int:
        """Hits ``get`` counted for the entry under ``key`` since it was stored (0 when absent)."""

    def close(self) -> None:
        """Release connections (no-op for in-process stores)."""

    def take_outages(self) -> list[tuple[float, bool, str]]:
        """The store's outages begun or ended since the last call, oldest first: (run time, down, why). The core
        records each as a decision (``cache_store_down`` / ``cache_store_up``); an in-process store has none."""
        return []

    def outage_totals(self, now_s: float) -> tuple[int, float]:
        """(outages begun, seconds of run time spent in them) since the store was made or `count_outages_from`, an
        outage still going on counted until ``now_s``: what the run summary reports. (0, 0.0) for an in-process
        store, which cannot fail."""
        return 0, 0.0

    def count_outages_from(self, now_s: float) -> None:
        """Start `outage_totals` again at run time ``now_s`` (a run's start); an outage going on counts from it."""


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_s: float  # inf: no TTL
    hits: int
    last_used: int  # a sequence number, not a time
    stored: int  # sequence number of the write (ties)


class MemoryStore(CacheStore):
    """An in-process store bounded by ``max_entries`` and ``max_bytes`` (values plus keys).

    ``eviction`` picks what goes when a bound is exceeded: ``lru`` the least recently used,
    ``lfu`` the least often used (ties: least recently used), ``ttl`` the entry that expires
    soonest. Expired entries are dropped when read and before any live entry is evicted.
    """

    def __init__(self, *, max_entries: int = 10_000, max_bytes: int | None = None,
                 eviction: Eviction = "lru") -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
        if eviction not in ("lru", "lfu", "ttl"):
            raise ValueError(f"eviction must be 'lru', 'lfu' or 'ttl', got {eviction!r}")
        self.max_entries, self.max_bytes, self.eviction = max_entries, max_bytes, eviction
        self._entries: dict[str, _Entry] = {}
        self._bytes = 0
        self._seq = itertools.count()
        # Lazy heaps: (priority, key); a popped item whose priority is stale is skipped.
        self._heap: list[tuple[tuple, str]] = []
        self._expiry: list[tuple[float, int, str]] = []
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def _priority(self, e: _Entry) -> tuple:
        if self.eviction == "lfu":
            return (e.hits, e.last_used)
        if self.eviction == "ttl":
            return (e.expires_s, e.stored)
        return (e.last_used,)

    def _push(self, key: str, e: _Entry) -> None:
        heapq.heappush(self._heap, (self._priority(e), key))
        if len(self._heap) > 4 * len(self._entries) + 64:  # drop stale items now and then
            self._heap = [(self._priority(v), k) for k, v in self._entries.items()]
            heapq.heapify(self._heap)

    def _remove(self, key: str) -> None:
        e = self._entries.pop(key, None)
        if e is not None:
            self._bytes -= len(e.value) + len(key)

    def get(self, key: str, *, now_s: float) -> bytes | None:
        e = self._entries.get(key)
        if e is None:
            return None
        if now_s > e.expires_s:
            self._remove(key)
            return None
        e.hits += 1
        e.last_used = next(self._seq)
        if self.eviction != "ttl":
            self._push(key, e)
        return e.value

    def set(self, key: str, value: bytes, ttl_s: float | None = None, *, now_s: float) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"cache values are bytes, got {type(value).__name__} for key {key!r}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0 or None, got {ttl_s} for key {key!r}")
        self._remove(key)
        size = len(value) + len(key)
        if self.max_bytes is not None and size > self.max_bytes:
            return  # larger than the whole store: not cached
        self._make_room(size, now_s)  # before the insert: LFU never evicts the newcomer
        seq = next(self._seq)
        expires = float("inf") if ttl_s is None else now_s + ttl_s
        e = _Entry(bytes(value), expires, 0, seq, seq)
        self._entries[key] = e
        self._bytes += size
        self._push(key, e)
        if expires != float("inf"):
            heapq.heappush(self._expiry, (expires, seq, key))
            if len(self._expiry) > 4 * len(self._entries) + 64:
                self._expiry = [(v.expires_s, v.stored, k) for k, v in self._entries.items()
                                if v.expires_s != float("inf")]
                heapq.heapify(self._expiry)

    def _full(self, incoming: int) -> bool:
        return len(self._entries) + 1 > self.max_entries or (
            self.max_bytes is not None and self._bytes + incoming > self.max_bytes)

    def _make_room(self, incoming: int, now_s: float) -> None:
        while self._full(incoming) and self._expiry and self._expiry[0][0] < now_s:
            _, seq, key = heapq.heappop(self._expiry)
            e = self._entries.get(key)
            if e is not None and e.stored == seq:
                self._remove(key)
        while self._full(incoming):
            priority, key = heapq.heappop(self._heap)
            e = self._entries.get(key)
            if e is not None and self._priority(e) == priority:
                self._remove(key)
                self.evictions += 1

    def delete(self, key: str) -> None:
        self._remove(key)

    def access_count(self, key: str) -> int:
        e = self._entries.get(key)
        return 0 if e is None else e.hits


# One round trip: read the value and count the access only when the entry exists (HINCRBY on an
# existing hash keeps its TTL; on a missing key it would create one without a TTL).
_GET_AND_COUNT = """
local v = redis.call('HGET', KEYS[1], 'v')
if v then redis.call('HINCRBY', KEYS[1], 'n', 1) end
return v
"""


#: The longest wait between two tries of an unreachable Redis, in seconds of run time (unless
#: ``retry_after_s`` is longer).
MAX_RETRY_AFTER_S = 60.0


class RedisStore(CacheStore):
    """A store on a Redis server, shared by every process that opens the same URL and namespace.

    Unreachable Redis (refused, timed out, restarting, a host name that does not resolve): misses
    and skipped writes, one warning per outage; while it is down, calls return at once for
    ``retry_after_s`` seconds of run time (the ``now_s`` its callers pass, as for every plugin:
    never the wall clock) instead of each waiting for a timeout, and the wait doubles after each
    failed try, up to ``MAX_RETRY_AFTER_S``: a try can cost far more than ``socket_timeout_s``
    (resolving a host name is not bounded by it), so a replay pays for a few tries, not one per
    simulated second. The first answer ends the outage and the wait starts again at ``retry_after_s``.
    """

    reports_outages = True

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, namespace: str = "cp",
                 socket_timeout_s: float = 0.05, retry_after_s: float = 1.0) -> None:
        try:
            import redis
        except ModuleNotFoundError as exc:  # (not installed: one line naming the extra, not "No module named")
            if exc.name != "redis":
                raise
            from controlplane.extras import install_hint

            raise ImportError(f"backend: redis needs the Redis client: {install_hint('redis')}") from None

        self._redis_errors = (redis.exceptions.RedisError, OSError)  # every one: a miss (a database index out of
        # range too: it raised on every call, each a plugin error, with no back-off)
        from controlplane.storage.errors import mask_password

        self.url, self.namespace, self.retry_after_s = url, namespace, retry_after_s
        self._shown_url = mask_password(url)  # what the log says: never the password (redis://:PASSWORD@host)
        self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                            socket_connect_timeout=socket_timeout_s)
        self._get_and_count = self._client.register_script(_GET_AND_COUNT)
        self._down_since: float | None = None  # run time of the last failure
        self._wait_s = retry_after_s  # how long after the last failure the next try comes
        self._now_s: float | None = None  # the latest run time a caller passed
        self.failures = 0  # calls that found Redis unreachable (for tests and metrics)
        self._outages: list[tuple[float, bool, str]] = []  # begun or ended, not yet taken (`take_outages`)
        self._num_outages = 0  # begun since made or `count_outages_from` (`outage_totals`)
        self._outage_s = 0.0  # run time spent in the ones that ended
        self._outage_began: float | None = None  # run time the outage going on began (its first failed call)

    def _k(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    @property
    def available(self) -> bool:
        """False while an outage is being waited out."""
        return self._down_since is None

    @property
    def tried(self) -> bool:
        """Whether the store was called since it was made (a failed call, or any call given a run time): a
        store a reload just made has not found Redis up or down yet (the daemon's `cache_stores_down`)."""
        return self.failures > 0 or self._now_s is not None

    def _call(self, fn, default, now_s: float | None = None):
        if now_s is not None:
            self._now_s = now_s
        now = self._now_s  # delete / access_count pass no time: the latest one given stands
        if self._down_since is not None and now is not None:
            if now - self._down_since < self._wait_s:
                return default
        try:
            result = fn()
        except self._redis_errors as exc:
            self.failures += 1
            if self._down_since is None:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                _log().warning("Redis cache store at %s failed (%s): serving misses until it answers",
                            self._shown_url, why)
                self._wait_s = self.retry_after_s
                self._outages.append((now if now is not None else 0.0, True,
                                      f"Redis cache store at {self._shown_url} failed ({why}): serving misses "
                                      "until it answers"))
                self._num_outages += 1
                self._outage_began = now if now is not None else 0.0
            else:  # a retry failed too: wait longer before the next one
                self._wait_s = min(2 * self._wait_s, max(self.retry_after_s, MAX_RETRY_AFTER_S))
            self._down_since = now if now is not None else 0.0
            return default
        if self._down_since is not None:
            _log().info("Redis cache store at %s is reachable again", self._shown_url)
            self._outages.append((now if now is not None else 0.0, False,
                                  f"Redis cache store at {self._shown_url} is reachable again"))
            if self._outage_began is not None:
                self._outage_s += max(0.0, (now if now is not None else 0.0) - self._outage_began)
                self._outage_began = None
            self._down_since = None
            self._wait_s = self.retry_after_s
        return result

    def get(self, key: str, *, now_s: float) -> bytes | None:
        return self._call(lambda: self._get_and_count(keys=[self._k(key)]), None, now_s)

    def set(self, key: str, value: bytes, ttl_s: float | None = None, *, now_s: float) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"cache values are bytes, got {type(value).__name__} for key {key!r}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0 or None, got {ttl_s} for key {key!r}")

        def write():
            pipe = self._client.pipeline(transaction=True)
            k = self._k(key)
            pipe.delete(k)
            pipe.hset(k, mapping={"v": bytes(value), "n": 0})
            if ttl_s is not None:
                pipe.pexpire(k, max(1, int(ttl_s * 1000)))
            pipe.execute()

        self._call(write, None, now_s)

    def delete(self, key: str) -> None:
        self._call(lambda: self._client.delete(self._k(key)), None)

    def access_count(self, key: str) -> int:
        n = self._call(lambda: self._client.hget(self._k(key), "n"), None)
        return 0 if n is None else int(n)

    def take_outages(self) -> list[tuple[float, bool, str]]:
        taken, self._outages = self._outages, []
        return taken

    def outage_totals(self, now_s: float) -> tuple[int, float]:
        going_on = 0.0 if self._outage_began is None else max(0.0, now_s - self._outage_began)
        return self._num_outages, self._outage_s + going_on

    def count_outages_from(self, now_s: float) -> None:
        down = self._down_since is not None
        self._num_outages, self._outage_s = int(down), 0.0
        self._outage_began = now_s if down else None

    def close(self) -> None:
        self._client.close()

    def clear(self) -> None:
        """Delete every entry under this store's namespace (a simulated run's own, at its end)."""
        def drop():
            keys = list(self._client.scan_iter(f"{self.namespace}:*", count=1000))
            for i in range(0, len(keys), 1000):
                self._client.delete(*keys[i:i + 1000])

        self._call(drop, None)


def scope_to_run(store: CacheStore, ctx: Any) -> None:
    """At a run's start, count the store's outages from now on (`CacheStore.outage_totals`: the run summary's); in a
    simulated run, give a Redis store a namespace of its own (``...:sim-<random hex>``).

    Without it a replay read the entries an earlier replay (or a concurrent run of the same sweep)
    left under the same namespace: hit rates up to 1.0 where the trace allows 0.35, and guardian
    verdicts that cost no check. Live runs share the configured namespace, as daemons should."""
    now_s = getattr(ctx, "now_s", None)
    store.count_outages_from(now_s if isinstance(now_s, (int, float)) else 0.0)
    run = getattr(ctx, "run", None)
    if isinstance(store, RedisStore) and run is not None and run.mode == "sim" and ":sim-" not in store.namespace:
        import secrets

        store.namespace = f"{store.namespace}:sim-{secrets.token_hex(8)}"


def release_run(store: CacheStore, ctx: Any) -> None:
    """At a simulated run's end, drop the entries ``scope_to_run`` gave it (nothing reads them again)."""
    run = getattr(ctx, "run", None)
    if isinstance(store, RedisStore) and run is not None and run.mode == "sim" and ":sim-" in store.namespace:
        store.clear()


class StoreSettings(BaseModel):
    """Which store a cache plugin uses (a nested ``store:`` block in its settings)."""

    # an error's text shows no input: the Redis URL's password (the validator's message masks it)
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    backend: Literal["memory", "redis"] = "memory"
    max_entries: int = Field(10_000, ge=1)  # memory backend
    max_bytes: int | None = Field(None, ge=1)  # memory backend; None: entries bound only
    eviction: Eviction = "lru"  # memory backend; Redis uses its maxmemory-policy
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    namespace: str = "cp"  # key prefix in Redis: processes with the same namespace share entries
    socket_timeout_s: float = Field(0.05, gt=0)
    retry_after_s: float = Field(1.0, ge=0)


def open_store(settings: StoreSettings | None = None, *, namespace: str | None = None) -> CacheStore:
    """The store ``settings`` describe; ``namespace`` (e.g. the plugin's name) is appended to the
    settings' namespace so that two caches on one Redis never read each other's keys."""
    s = settings or StoreSettings()
    if s.backend == "redis":
        ns = s.namespace if namespace is None else f"{s.namespace}:{namespace}"
        return RedisStore(s.redis_url, namespace=ns, socket_timeout_s=s.socket_timeout_s,
                          retry_after_s=s.retry_after_s)
    return MemoryStore(max_entries=s.max_entries, max_bytes=s.max_bytes, eviction=s.eviction)
