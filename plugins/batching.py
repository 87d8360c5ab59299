"""Batching: iteration-level (continuous) batching with a paged KV-cache budget.

``policy: vllm`` follows vLLM's original scheduler (as Vidur models it): waiting prefills go
first and a batch is either all prefills or all decodes; running requests are evicted (to be
recomputed) newest first when KV blocks run out. ``policy: sarathi`` mixes decodes with chunked
prefills under a per-iteration token budget (Sarathi-Serve / vLLM chunked prefill).

While nothing can change a batch's membership, a decode batch asks for many iterations at
once (``max_iterations``): up to the first request to finish or the iteration where KV blocks
would run out. The core interrupts the run early when a new request arrives.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import BatchPlan

UNLIMITED_BLOCKS = 1 << 30


def kv_horizon(context_tokens: np.ndarray, block_size: int, num_blocks: int, max_iterations: int) -> int:
    """How many decode iterations fit before the batch needs more than ``num_blocks`` blocks.

    Iteration ``j`` (from 0) needs ``sum(ceil((c + j) / block_size))`` blocks.
    """
    if num_blocks >= UNLIMITED_BLOCKS:
        return max_iterations

    def need(j: int) -> int:
        return int(((context_tokens + (j + block_size - 1)) // block_size).sum())

    if need(max_iterations - 1) <= num_blocks:
        return max_iterations
    lo, hi = 0, max_iterations - 1  # need(lo) fits (checked by the caller), need(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if need(mid) <= num_blocks:
            lo = mid
        else:
            hi = mid
    return lo + 1


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class ContinuousBatching(Plugin):
    """Continuous batching, vLLM or Sarathi style, with KV-block admission and preemption."""

    name = "continuous-batching"

    class Settings(PluginSettings):
        policy: Literal["vllm", "sarathi"] = "vllm"
        watermark: float = Field(0.01, ge=0, lt=1)  # share of KV blocks kept free for decodes
        chunk_size: int = Field(512, ge=1)  # sarathi: token budget per iteration
        max_iterations: int = Field(1 << 20, ge=1)  # cap on a multi-iteration decode step

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if self.settings.policy == "sarathi":
            return self._sarathi(worker)
        return self._vllm(worker)

    # --- vLLM: prefill-first, homogeneous batches ----------------------------------------------

    def _vllm(self, w):
        bs = w.kv_block_size
        limited = w.num_kv_blocks < UNLIMITED_BLOCKS
        watermark = int(self.settings.watermark * w.num_kv_blocks) if limited else 0
        free = w.num_kv_blocks - w.num_kv_blocks_used
        prefill = []
        longest = 0
        blocker = ""
        for r in w.waiting:
            n = r.remaining_prefill_tokens
            if limited and free - _blocks(r.prefill_target_tokens, bs) < watermark:
                blocker = f"{r.request_id} needs {_blocks(r.prefill_target_tokens, bs)} KV blocks, {free} free"
                break
            longest_if = max(longest, n)
            if (len(prefill) + 1) * longest_if > w.max_batch_tokens:
                blocker = f"{r.request_id}: {n} prompt tokens exceed the batch budget of {w.max_batch_tokens}"
                break
            if len(w.running) + len(prefill) >= w.max_num_seqs:
                blocker = f"batch full ({w.max_num_seqs} sequences)"
                break
            prefill.append((r, n))
            free -= _blocks(r.prefill_target_tokens, bs)
            longest = longest_if
        if prefill:
            return BatchPlan(prefill=tuple(prefill), reason=f"prefill {len(prefill)} waiting")
        if not w.running:
            return BatchPlan(reason=blocker)
        return self._decode_all(w, w.running, blocker)

    def _decode_all(self, w, running, blocker: str = ""):
        bs = w.kv_block_size
        steps = min(self.settings.max_iterations, min(r.remaining_output_tokens for r in running))
        if w.num_kv_blocks >= UNLIMITED_BLOCKS:
            return BatchPlan(decode=tuple(running), max_iterations=steps, reason="decode all running")
        ctx_tokens = np.fromiter((r.context_tokens for r in running), dtype=np.int64, count=len(running))
        need_now = int(((ctx_tokens + (bs - 1)) // bs).sum())
        if need_now <= w.num_kv_blocks:
            horizon = kv_horizon(ctx_tokens, bs, w.num_kv_blocks, steps)
            why = "decode all running" if not blocker else f"decode all running; waiting: {blocker}"
            return BatchPlan(decode=tuple(running), max_iterations=horizon, reason=why)
        # Out of KV blocks: evict the newest arrivals until the rest fit (they recompute later).
        order = sorted(range(len(running)), key=lambda i: (running[i].arrival_s, i))
        keep = list(order)
        evicted = []
        while keep and need_now > w.num_kv_blocks:
            i = keep.pop()
            need_now -= _blocks(int(ctx_tokens[i]), bs)
            evicted.append(running[i])
        keep.sort()
        decode = tuple(running[i] for i in keep)
        if not decode:
            return BatchPlan(preempt=tuple(evicted), reason="KV cache full: evicted every running request")
        steps = min(self.settings.max_iterations, min(r.remaining_output_tokens for r in decode))
        horizon = kv_horizon(ctx_tokens[keep], bs, w.num_kv_blocks, steps)
        return BatchPlan(
            decode=decode,
            preempt=tuple(evicted),
            max_iterations=horizon,
            reason=f"KV cache full: preempted {len(evicted)} newest",
        )

    # --- Sarathi: decodes plus chunked prefills under a token budget --------------------------

    def _sarathi(self, w):
        budget = self.settings.chunk_size
        bs = w.kv_block_size
        limited = w.num_kv_blocks < UNLIMITED_BLOCKS
        decode = [r for r in w.running if r.is_decoding]
        partial = [r for r in w.running if not r.is_decoding]
        budget -= len(decode)
        free = w.num_kv_blocks - w.num_kv_blocks_used - len(decode)
        prefill = []
        for r in partial:
            if budget <= 0:
                break
            n = min(r.remaining_prefill_tokens, budget)
            prefill.append((r, n))
            budget -= n
            free -= _blocks(n, bs)
        watermark = int(self.settings.watermark * w.num_kv_blocks) if limited else 0
        for r in w.waiting:
            if budget <= 0 or len(w.running) + len(prefill) - len(partial) >= w.max_num_seqs:
                break
            if limited and free - _blocks(r.prefill_target_tokens, bs) < watermark:
                break
            n = min(r.remaining_prefill_tokens, budget)
            prefill.append((r, n))
            budget -= n
            free -= _blocks(r.prefill_target_tokens, bs)
        if prefill:
            return BatchPlan(prefill=tuple(prefill), decode=tuple(decode),
                             reason=f"{len(decode)} decodes + {len(prefill)} prefill chunks")
        if decode:
            return self._decode_all(w, decode)
        return BatchPlan(reason="nothing fits the KV cache or token budget")
