"""Prefix (KV-block) caching: reuse the prompt blocks a replica already computed.

Requests that carry prefix-block hashes (``Request.hash_ids``, e.g. the Mooncake trace: one
hash per 512-token block, equal hashes = equal prefixes) can skip the prefill of their leading
blocks when the replica still holds them, as vLLM's automatic prefix caching does. Two plugins:

* ``prefix-cache`` keeps, per replica, an LRU set of block hashes whose KV is resident. The core
  asks it (``cp_prefix_lookup``) when a request's prefill starts on a replica: the leading run
  of hashes found there is served from cache, so the prefill computes only the rest (the latency
  model sees those tokens as ``prefill_context_tokens``). When a prefill completes
  (``cp_prefix_store``) the request's blocks are inserted. Capacity is bounded by the replica's
  free KV blocks at that moment (``ctx.kv_blocks_used``; cached blocks live in the free part of the pool and are
  evicted first, LRU), or by ``capacity_blocks``. A router's peek (``cp_prefix_peek``) sees the cache as of now:
  the free KV blocks a running batch left by now, and the prompts it completed by now stored (``ctx.prefilled_now``;
  the core stores them at the batch's end, which in the simulator's fast mode comes many decode iterations after
  the prefill), so the fast and exact modes route alike. A stored or hit prompt's blocks are touched
  last block first, so within a prompt the tail is evicted before the head (vLLM's order): only
  a leading run of blocks can hit, and a cache smaller than one prompt keeps that prompt's head.
* ``prefix-affinity`` is an optional cache-aware router: it remembers which replica last
  received each block hash and sends a request to the replica holding most of its blocks,
  unless that replica is more than ``max_imbalance`` requests busier than the least loaded.
  A starting replica is a candidate only when its expected wait (the rest of its cold start
  plus its queued work) is below every ready replica's (``plugins.routing_wait``).

Tenancy: both key a request's blocks within its tenant (`request_blocks`, `controlplane.prefix_scope`): a tenant's
prompt blocks serve, and steer the routing of, only that tenant's requests (a hit is observable: another tenant
could test guesses of a prompt's start); untenanted requests share one space, their hashes unchanged.
``shared_across_tenants: true`` shares blocks across tenants (prefix-cache's setting rules the live workers' KV
store too).

Simplification: a hit saves compute, not memory; the KV budget still counts each request's
full context (shared blocks are not deduplicated), which is conservative.
"""

from __future__ import annotations

from collections import OrderedDict

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import RouteDecision
from controlplane.prefix_scope import prefix_scope, scoped_hashes

from plugins.routing_wait import ReadinessGate
from plugins.scorers import ReplicaStats


def request_blocks(request, shared_across_tenants: bool) -> tuple[int, ...]:
    """The request's prefix-block hashes as caches and routers key them: within its tenant unless
    ``shared_across_tenants`` (`controlplane.prefix_scope`)."""
    return scoped_hashes(request.hash_ids, prefix_scope(request.tenant, shared_across_tenants))


def _touch_tail_first(cache: OrderedDict, hashes) -> None:
    """Make a prompt's blocks the most recently used, its last block first and its first block last, so that
    eviction takes a prompt's tail before its head (as vLLM frees a request's blocks in reverse order): a block
    is reused only after every block before it, and a cache smaller than one prompt keeps the prompt's head
    rather than a tail no lookup can reach."""
    for h in reversed(hashes):
        cache[h] = None
        cache.move_to_end(h)


class PrefixCache(Plugin):
    """Per-replica LRU cache of prompt KV blocks by prefix hash (automatic prefix caching)."""

    name = "prefix-cache"

    class Settings(PluginSettings):
        capacity_blocks: int | None = Field(None, ge=0)  # hash blocks per replica; None: its free KV blocks
        block_tokens: int = Field(512, ge=1)  # tokens per hash when a request does not say
        shared_across_tenants: bool = False  # false: a tenant's prompt blocks serve only that tenant

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._caches: dict[str, OrderedDict[int, None]] = {}
        # worker -> (the prompts its running batch completed by now, its cache with them stored): `_cache_now`
        self._as_of_now: dict[str, tuple[tuple[str, ...], OrderedDict[int, None]]] = {}
        self.num_lookups = 0
        self.num_hits = 0  # lookups that found at least one block
        self.lookup_tokens = 0  # prompt tokens of every looked-up request
        self.hit_tokens = 0  # of which served from cache

    def _blocks(self, request) -> tuple[int, ...]:
        return request_blocks(request, self.settings.shared_across_tenants)

    def _block_tokens(self, request) -> int:
        return request.hash_block_tokens or self.settings.block_tokens

    def capacity(self, worker, block_tokens: int, ctx=None) -> int:
        """Hash blocks the replica can keep now: its free KV blocks as of now (``ctx.kv_blocks_used``: in the
        simulator's fast mode a running batch's decode iterations finished by now count, as in the exact mode)."""
        if self.settings.capacity_blocks is not None:
            return self.settings.capacity_blocks
        used = worker.num_kv_blocks_used if ctx is None else ctx.kv_blocks_used(worker)
        free_tokens = max(0, worker.num_kv_blocks - used) * worker.kv_block_size
        return free_tokens // block_tokens

    @staticmethod
    def _trim(cache: OrderedDict, capacity: int) -> None:
        while len(cache) > capacity:
            cache.popitem(last=False)

    @hookimpl
    def cp_prefix_lookup(self, ctx, worker, request):
        if not request.hash_ids:
            return None
        self.num_lookups += 1
        self.lookup_tokens += request.prompt_tokens
        cache = self._caches.get(worker.worker_id)
        if not cache:
            return 0
        self._as_of_now.pop(worker.worker_id, None)  # (it changes the cache)
        bt = self._block_tokens(request)
        self._trim(cache, self.capacity(worker, bt, ctx))
        blocks = self._blocks(request)
        n = 0
        for h in blocks:
            if h not in cache:
                break
            n += 1
        _touch_tail_first(cache, blocks[:n])
        # What the core applies (`KVCacheManager.prefix_hit`): one token at least is computed, its logits the first
        # output token's, so a prompt found whole counts one token less. (The summary's ``prefix_hit_tokens``
        # counted it whole: 129 tokens more than the stored rows' ``cached_tokens`` on a Mooncake run.)
        tokens = max(0, min(n * bt, request.prompt_tokens, request.prompt_tokens + request.recompute_tokens - 1))
        if tokens:
            self.num_hits += 1
            self.hit_tokens += tokens
        return tokens

    @hookimpl
    def cp_prefix_peek(self, ctx, worker, request):
        """The tokens a lookup would find now, read-only (what routers score replicas by)."""
        if not request.hash_ids:
            return None
        cache = self._cache_now(ctx, worker)
        if not cache:
            return 0
        bt = self._block_tokens(request)
        room = self.capacity(worker, bt, ctx)
        if len(cache) > room:  # what a lookup would trim first: the least recently used blocks
            lost = set(list(cache)[:len(cache) - room])
        else:
            lost = ()
        n = 0
        for h in self._blocks(request):
            if h not in cache or h in lost:
                break
            n += 1
        return min(n * bt, request.prompt_tokens)

    @hookimpl
    def cp_prefix_store(self, ctx, worker, request):
        if not request.hash_ids:
            return
        cache = self._caches.get(worker.worker_id)
        if cache is None:
            cache = self._caches[worker.worker_id] = OrderedDict()
        self._as_of_now.pop(worker.worker_id, None)
        _touch_tail_first(cache, self._blocks(request))
        self._trim(cache, self.capacity(worker, self._block_tokens(request), ctx))

    def _cache_now(self, ctx, worker) -> OrderedDict | None:
        """``worker``'s cache as of now, for a peek: with the prompts its running batch completed by now stored
        (``ctx.prefilled_now``). The core stores them as it applies the batch, at its end; in the simulator's fast
        mode a prefill batch goes on decoding for many iterations, the exact mode stores them after the first, so a
        router peeking in between saw the blocks there and not here. Made once per batch (a copy of the cache)."""
        wid = worker.worker_id
        cache = self._caches.get(wid)
        pending = [r for r in ctx.prefilled_now(worker) if r.hash_ids] if ctx is not None else ()
        if not pending:
            return cache
        key = tuple(r.request_id for r in pending)
        seen = self._as_of_now.get(wid)
        if seen is not None and seen[0] == key:
            return seen[1]
        view = OrderedDict(cache) if cache else OrderedDict()
        for r in pending:  # as `cp_prefix_store` will: at the count of KV blocks it reads then, the batch's start's
            _touch_tail_first(view, self._blocks(r))
            self._trim(view, self.capacity(worker, self._block_tokens(r)))
        self._as_of_now[wid] = (key, view)
        return view

    def stats(self) -> dict[str, float | int]:
        """Lookups, hits and the prefix-token hit ratio (served from cache / looked-up prompt tokens)."""
        return {
            "prefix_lookups": self.num_lookups,
            "prefix_hits": self.num_hits,
            "prefix_hit_tokens": self.hit_tokens,
            "prefix_lookup_tokens": self.lookup_tokens,
            "prefix_token_hit_ratio": round(self.hit_tokens / self.lookup_tokens, 6) if self.lookup_tokens else None,
        }

    @hookimpl
    def cp_run_finished(self, ctx, summary):
        summary.update(self.stats())


class PrefixAffinity(Plugin):
    """Route a request to the replica that received most of its prefix blocks (cache-aware routing)."""

    name = "prefix-affinity"

    class Settings(PluginSettings):
        max_imbalance: int = Field(2, ge=0)  # extra queued+running requests tolerated for a cache hit
        max_entries: int = Field(1_000_000, ge=1)  # block hashes remembered (LRU)
        shared_across_tenants: bool = False  # as prefix-cache's: false, a tenant's blocks say where only its own ran

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._owner: OrderedDict[int, str] = OrderedDict()  # block hash -> replica that last got it
        # tokens per busy second, pooled, for the starting replicas' expected wait (it weighs no replica's speed)
        self._speeds = ReplicaStats(time_batches=False)
        self._gate = ReadinessGate()

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        if not request.hash_ids:
            return None  # no prefix information: let the next router decide
        keep, _ = self._gate.pool(ctx, workers, self._speeds, request)  # a starting replica only if less backed up
        if len(keep) < len(workers):
            workers = [workers[i] for i in keep]
        least = min(workers, key=lambda w: w.load)
        by_id = {w.worker_id: w for w in workers}
        # The replica that got the deepest block of the request's leading run of known blocks
        # holds the longest reusable prefix (hot shared blocks, like a system prompt, are on
        # every replica and say little; a conversation's own blocks say where it ran).
        depth: dict[str, int] = {}
        owner = self._owner
        blocks = request_blocks(request, self.settings.shared_across_tenants)
        for i, h in enumerate(blocks, 1):
            wid = owner.get(h)
            if wid is None:
                break  # only a leading run of known blocks can be reused
            if wid in by_id:
                depth[wid] = i
        best, why = least, f"no cached prefix: least loaded ({least.load} queued+running)"
        if depth:
            wid, n = max(depth.items(), key=lambda kv: (kv[1], -by_id[kv[0]].load))
            w = by_id[wid]
            if w.load <= least.load + self.settings.max_imbalance:
                best, why = w, f"prefix of {n} blocks last sent here ({w.load} queued+running)"
            else:
                why = f"prefix owner {wid} too busy ({w.load} vs {least.load}): least loaded"
        for h in blocks:
            owner[h] = best.worker_id
            owner.move_to_end(h)
        while len(owner) > self.settings.max_entries:
            owner.popitem(last=False)
        return RouteDecision(best.worker_id, why)

    @hookimpl
    def cp_on_event(self, ctx, event):
        self._speeds.observe(event)
        self._gate.observe(ctx, event)  # the gate keeps which replicas are starting: no scan per request
