"""Batching: iteration-level (continuous) batching with a paged KV-cache budget.

``policy: vllm`` follows vLLM's original scheduler (as Vidur models it): waiting prefills go
first and a batch is either all prefills or all decodes; running requests are evicted (to be
recomputed) newest first when KV blocks run out; with ``max_padding`` (for engines that pad a prefill
batch to its longest prompt) a prompt joins a prefill batch only while the padding stays within that
ratio of the real tokens. ``policy: sarathi`` mixes decodes with chunked
prefills under a per-iteration token budget (Sarathi-Serve / vLLM chunked prefill).

Both keep ``watermark`` (a share of the KV blocks) free for the running requests' decodes when a
new request's prefill starts; on a replica with nothing running there are no decodes to keep them
for, and the first prompt may take every block: the core admits a request whose prompt and
``max_tokens`` fit the KV cache, and one whose prompt needed more than all blocks but the watermark's
waited at the head of the queue for an empty replica, only to be refused there.

While nothing can change a batch's membership, a decode batch asks for many iterations at
once (``max_iterations``): up to the first request to finish or the iteration where KV blocks
would run out. The core interrupts the run early when a new request arrives.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import BatchPlan
from controlplane.types import UNLIMITED_KV_BLOCKS


def kv_horizon(context_tokens, block_size: int, num_blocks: int, max_iterations: int,
               used_blocks: int | None = None) -> int:
    """How many decode iterations fit before the batch needs more than ``num_blocks`` blocks.

    Iteration ``j`` (from 0) needs ``sum(ceil((c + j) / block_size))`` blocks; the caller has
    checked that iteration 0 fits. Each request takes one more block every ``block_size``
    iterations, first at iteration ``(-c) % block_size + 1``, so the answer is closed-form:
    ``q`` whole periods of ``block_size`` iterations use ``q`` blocks per request, then the
    ``r + 1``-th earliest first-increment in the next period is the first that does not fit.
    O(n log n) in the batch size, independent of ``max_iterations``, and O(n) when ``q`` whole
    periods already cover ``max_iterations`` (the common case). ``used_blocks``: the blocks
    ``context_tokens`` hold, when the caller has counted them.
    """
    if num_blocks >= UNLIMITED_KV_BLOCKS:
        return max_iterations
    # (a list or tuple of ints, as the batching policies pass, is read as it is: no copy per batch)
    ctx = context_tokens if isinstance(context_tokens, (list, tuple)) else [int(c) for c in context_tokens]
    n = len(ctx)
    if n == 0:
        return max_iterations
    bs = block_size
    free = num_blocks - (used_blocks if used_blocks is not None else sum((int(c) + bs - 1) // bs for c in ctx))
    q, r = divmod(free, n)
    if q * bs >= max_iterations:
        return max_iterations  # every request takes a block at most every bs iterations: room enough
    offsets = sorted((-int(c)) % bs for c in ctx)
    horizon = q * bs + offsets[r] + 1
    return horizon if horizon < max_iterations else max_iterations


#: ``max_padding``: waiting requests passed over for one prefill batch before it is closed.
PADDING_LOOKAHEAD = 128


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


def _no_room(request_id: str, need: int, free: int, watermark: int) -> str:
    """Why a waiting request's prefill does not start: the blocks it needs, those free, and those of them the
    watermark keeps for the running requests' decodes."""
    kept = f" of which the watermark keeps {watermark} for running decodes" if watermark and need <= free else ""
    return f"{request_id} needs {need} KV blocks, {free} free{kept}"


class ContinuousBatching(Plugin):
    """Continuous batching, vLLM or Sarathi style, with KV-block admission and preemption."""

    name = "continuous-batching"
    #: Serves waiting requests first come, first served (`PolicyContext.serves_by_priority`).
    serves_by_priority = False

    class Settings(PluginSettings):
        policy: Literal["vllm", "sarathi"] = "vllm"
        watermark: float = Field(0.01, ge=0, lt=1)  # share of KV blocks kept free for decodes
        chunk_size: int = Field(512, ge=1)  # sarathi: token budget per iteration
        # vllm: a prompt longer than the batch token budget is prefilled alone, or rejected
        long_prompts: Literal["alone", "reject"] = "alone"
        max_iterations: int = Field(1 << 20, ge=1)  # cap on a multi-iteration decode step
        # vllm, for engines that pad a prefill batch to its longest prompt (the live CausalLMBackend):
        # a prompt joins the batch only while sequences x longest stays within max_padding x the real
        # tokens; one that would not is left for a later iteration and the next waiting ones are
        # tried (up to PADDING_LOOKAHEAD of them). None: off (any mix of lengths, up to the budgets).
        max_padding: float | None = Field(None, ge=1)

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._form = self._sarathi if self.settings.policy == "sarathi" else self._vllm
        self._fifo = type(self)._queue is ContinuousBatching._queue  # the queue is w.waiting as it is

    def _queue(self, w):
        """The waiting requests in the order this policy serves them (FIFO here)."""
        return w.waiting

    @staticmethod
    def _evict_key(r):
        """Running requests sorted by this key; the last are evicted first (newest arrivals here)."""
        return (r.arrival_s,)

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        return self._form(worker)

    # --- vLLM: prefill-first, homogeneous batches ----------------------------------------------

    def _vllm(self, w):
        if not w.waiting:  # the common case: nothing to prefill, decode everything running
            return self._decode_all(w, w.running) if w.running else BatchPlan(reason="nothing to run")
        bs = w.kv_block_size
        limited = w.num_kv_blocks < UNLIMITED_KV_BLOCKS
        watermark = int(self.settings.watermark * w.num_kv_blocks) if limited else 0
        free = w.num_kv_blocks - w.num_kv_blocks_used
        prefill = []
        longest = 0
        blocker = ""
        pad = self.settings.max_padding
        real = passed = 0
        for r in w.waiting if self._fifo else self._queue(w):
            target = r.prompt_tokens + r.recompute_tokens  # Request.prefill_target_tokens, inlined
            n = target - r.num_computed_tokens
            longest_if = n if n > longest else longest
            if pad is not None and prefill and (len(prefill) + 1) * longest_if > pad * (real + n):
                passed += 1  # this prompt would pad the batch too much: a later batch takes it
                if passed >= PADDING_LOOKAHEAD:
                    break
                continue
            need = (target + bs - 1) // bs  # blocks for the whole prefill (Vidur and vLLM reserve them)
            # (the watermark keeps blocks for running decodes: none run yet, a prompt may take them all)
            if limited and free - need < (watermark if prefill or w.running else 0):
                blocker = _no_room(r.request_id, need, free, watermark)
                break
            if len(w.running) + len(prefill) >= w.max_num_seqs:
                blocker = f"batch full ({w.max_num_seqs} sequences)"
                break
            if (len(prefill) + 1) * longest_if > w.max_batch_tokens:
                if not prefill and n > w.max_batch_tokens and self.settings.long_prompts == "alone":
                    return BatchPlan(prefill=((r, n),), reason=f"prefill {n} tokens alone: over the batch budget "
                                                               f"of {w.max_batch_tokens}")
                blocker = f"{r.request_id}: {n} prompt tokens exceed the batch budget of {w.max_batch_tokens}"
                break
            prefill.append((r, n))
            free -= need
            longest = longest_if
            real += n
        if prefill:
            iterations = 1
            if len(prefill) == len(w.waiting):  # nothing left waiting: decodes of all follow
                iterations = 1 + self._decode_horizon(w, prefill)
            # By position (prefill, decode, preempt, max_iterations, wake_after_s, expire, reason), as the
            # decodes' plan below: a dataclass called with keywords costs ~1,300 instructions more in CPython
            # 3.11, and these two plans are one per batch.
            return BatchPlan(tuple(prefill), (), (), iterations, None, (), f"prefill {len(prefill)} waiting")
        if not w.running:
            return BatchPlan(reason=blocker)
        return self._decode_all(w, w.running, blocker)

    def _decode_horizon(self, w, prefill) -> int:
        """Decode iterations of every running request that can follow this prefill (as
        :meth:`_decode_all` would plan them next) before a request finishes or the KV cache
        runs out; 0 if none can."""
        steps = self.settings.max_iterations - 1
        ctx = []
        for r, n in prefill:  # after the prefill: the whole prompt and one sampled token
            left = r.max_output_tokens - r.output_tokens - 1
            if left < steps:
                steps = left
            ctx.append(r.num_computed_tokens + n + r.output_tokens + 1 - r.recompute_tokens)
        for r in w.running:
            left = r.max_output_tokens - r.output_tokens
            if left < steps:
                steps = left
            ctx.append(r.num_computed_tokens + r.output_tokens - r.recompute_tokens)
        if steps <= 0 or w.num_kv_blocks >= UNLIMITED_KV_BLOCKS:
            return max(steps, 0)
        bs = w.kv_block_size
        used = 0
        for c in ctx:
            used += (c + bs - 1) // bs
        if used > w.num_kv_blocks:
            return 0  # the decodes would preempt first
        return kv_horizon(ctx, bs, w.num_kv_blocks, steps, used)

    def _decode_all(self, w, running, blocker: str = ""):
        bs = w.kv_block_size
        cap = self.settings.max_iterations
        if w.num_kv_blocks >= UNLIMITED_KV_BLOCKS:
            steps = min(r.max_output_tokens - r.output_tokens for r in running)
            return BatchPlan(decode=tuple(running), max_iterations=min(cap, steps), reason="decode all running")
        # One pass: KV tokens held (Request.context_tokens), blocks, fewest tokens left.
        ctx = []
        need_now = 0
        steps = cap
        for r in running:
            c = r.num_computed_tokens + r.output_tokens - r.recompute_tokens
            ctx.append(c)
            need_now += (c + bs - 1) // bs
            left = r.max_output_tokens - r.output_tokens
            if left < steps:
                steps = left
        if need_now <= w.num_kv_blocks:
            horizon = kv_horizon(ctx, bs, w.num_kv_blocks, steps, need_now)
            why = f"decode all running; waiting: {blocker}" if blocker else "decode all running"
            return BatchPlan((), tuple(running), (), horizon, None, (), why)  # by position: see `_vllm`
        # Out of KV blocks: evict the newest arrivals until the rest fit (they recompute later);
        # by priority first when the queue order is priority-aware (lower classes go first).
        key = self._evict_key
        order = sorted(range(len(running)), key=lambda i: (*key(running[i]), i))
        keep = list(order)
        evicted = []
        while keep and need_now > w.num_kv_blocks:
            i = keep.pop()
            need_now -= _blocks(ctx[i], bs)
            evicted.append(running[i])
        keep.sort()
        decode = tuple(running[i] for i in keep)
        if not decode:
            return BatchPlan(preempt=tuple(evicted), reason="KV cache full: evicted every running request")
        steps = min(cap, min(r.max_output_tokens - r.output_tokens for r in decode))
        horizon = kv_horizon([ctx[i] for i in keep], bs, w.num_kv_blocks, steps)
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
        limited = w.num_kv_blocks < UNLIMITED_KV_BLOCKS
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
        for r in self._queue(w):
            if budget <= 0 or len(w.running) + len(prefill) - len(partial) >= w.max_num_seqs:
                break
            if limited and free - _blocks(r.prefill_target_tokens, bs) < (watermark if prefill or w.running else 0):
                break  # (the watermark as `_vllm` keeps it)
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


def priority_then_age(r) -> tuple[int, float]:
    """Queue order of priority-aware policies: the most important (largest priority) first, then the oldest."""
    return (-r.priority, r.arrival_s)


def in_priority_order(queue) -> bool:
    """Whether a replica's waiting queue is already in `priority_then_age` order, so that a (stable) sort by it would
    change nothing: one priority class, and no request after one that arrived later (`WaitingQueue`'s ``priorities``
    and ``inversions``, kept as requests come and go). An overloaded replica's queue holds thousands: sorting it for
    every batch made a replay six times slower than the same replay with `continuous-batching`."""
    return len(getattr(queue, "priorities", ())) <= 1 and getattr(queue, "inversions", 1) == 0


class PriorityContinuousBatching(ContinuousBatching):
    """Continuous batching that schedules the highest priority class first and preempts it last.

    Waiting requests are served by priority, then age; when KV blocks run out the running
    requests of the lowest priority (newest first within it) are evicted first.
    """

    name = "priority-continuous-batching"
    #: Waiting requests are served by priority: the routers' expected waits count, for a request, only the queued
    #: work at its priority or above (`PolicyContext.serves_by_priority`, `plugins.routing_wait`).
    serves_by_priority = True

    def _queue(self, w):
        if len(w.waiting) < 2 or in_priority_order(w.waiting):
            return w.waiting
        return sorted(w.waiting, key=priority_then_age)

    @staticmethod
    def _evict_key(r):
        return priority_then_age(r)
