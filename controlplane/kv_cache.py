"""The core's KV-cache bookkeeping: how many blocks each worker's running requests hold, what a
prefix cache saves a prompt, and what a preempted request loses (like vLLM's KVCacheManager,
but counting blocks rather than allocating them: the worker, simulated or real, holds the data).
"""

from __future__ import annotations

from typing import Any

from controlplane.types import UNLIMITED_KV_BLOCKS, Request, Worker

__all__ = ["KVCacheManager"]


class KVCacheManager:
    """Counts KV blocks per worker and asks the prefix-cache hooks; owned by one `ControlPlane`."""

    __slots__ = ("_calls",)

    def __init__(self, calls: Any) -> None:
        self._calls = calls  # the core's `PolicyCalls` (rebound on a config reload)

    def bind(self, calls: Any) -> None:
        self._calls = calls

    @staticmethod
    def recount(w: Worker, extra_tokens: int = 0) -> None:
        """Set ``w.num_kv_blocks_used`` from its running requests (plus ``extra_tokens`` about to be
        prefilled); nothing to count without a KV budget."""
        if w.num_kv_blocks >= UNLIMITED_KV_BLOCKS:
            return  # no KV budget: nobody reads the count
        bs = w.kv_block_size
        used = -(-extra_tokens // bs) if extra_tokens else 0
        for r in w.running:  # Request.context_tokens, inlined: this runs twice per batch
            used += (r.num_computed_tokens + r.output_tokens - r.recompute_tokens + bs - 1) // bs
        w.num_kv_blocks_used = used

    def prefix_hit(self, w: Worker, r: Request) -> int:
        """Ask the prefix caches how much of ``r``'s prompt ``w`` holds; mark it computed.

        At least one token is left to compute: its logits give the first output token (as vLLM does).
        """
        calls = self._calls
        cached = calls.call_observer(calls.prefix_lookup, w, r)
        if not cached or cached < 0:
            return 0
        cached = min(int(cached), r.prompt_tokens + r.recompute_tokens - 1)
        if cached <= 0:
            return 0
        r.num_computed_tokens = r.cached_tokens = cached
        if r.cache_hit is None:
            r.cache_hit = "prefix"
        return cached

    def prefix_store(self, w: Worker, r: Request) -> None:
        """``r``'s prompt is in ``w``'s KV cache now: tell the prefix caches."""
        calls = self._calls
        calls.prefix_store(calls.ctx, w, r)

    @staticmethod
    def drop(r: Request) -> None:
        """``r`` lost its KV (preempted, or its worker is gone): its output so far is prefilled again."""
        r.recompute_tokens = r.output_tokens
        r.num_computed_tokens = 0
