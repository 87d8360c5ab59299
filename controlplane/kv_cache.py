"""The core's KV-cache bookkeeping: how many blocks each worker's running requests hold, what a
prefix cache saves a prompt, and what a preempted request loses (like vLLM's KVCacheManager,
but counting blocks rather than allocating them: the worker, simulated or real, holds the data).
"""

from __future__ import annotations

from typing import Any

from controlplane.types import UNLIMITED_KV_BLOCKS, Batch, Request, Worker

__all__ = ["KVCacheManager"]


class KVCacheManager:
    """Counts KV blocks per worker and asks the prefix-cache hooks; owned by one `ControlPlane`."""

    __slots__ = ("_calls", "_held", "room")

    def __init__(self, calls: Any) -> None:
        self._calls = calls  # the core's `PolicyCalls` (rebound on a config reload)
        # worker id -> (blocks its running requests held at the last count, the block size then)
        self._held: dict[str, tuple[int, int]] = {}
        # model -> the most tokens one of its workers' KV caches was planned to hold (`planned`)
        self.room: dict[str, int] = {}

    def planned(self, w: Worker) -> None:
        """A memory plan set ``w``'s KV budget: `room` keeps the largest any worker of its model got
        (a budget-less worker: no limit), so that a request needing more than that at its arrival
        (prompt + max output tokens) is known never to fit, before it runs for hours to find out."""
        tokens = w.num_kv_blocks * w.kv_block_size
        if tokens > self.room.get(w.model, 0):
            self.room[w.model] = tokens

    def bind(self, calls: Any) -> None:
        self._calls = calls

    def recount(self, w: Worker, extra_tokens: int = 0) -> None:
        """Set ``w.num_kv_blocks_used`` from its running requests (plus ``extra_tokens`` about to be
        prefilled); nothing to count without a KV budget."""
        if w.num_kv_blocks >= UNLIMITED_KV_BLOCKS:
            if self._held:
                self._held.pop(w.worker_id, None)  # a budget set later counts afresh
            return  # no KV budget: nobody reads the count
        bs = w.kv_block_size
        used = 0
        for r in w.running:  # Request.context_tokens, inlined: this runs once per batch
            used += (r.num_computed_tokens + r.output_tokens - r.recompute_tokens + bs - 1) // bs
        self._held[w.worker_id] = (used, bs)
        w.num_kv_blocks_used = used + (-(-extra_tokens // bs) if extra_tokens else 0)

    def batch_started(self, w: Worker, joined: list[Request] | None, prefill_tokens: int) -> None:
        """A batch with a prefill starts: ``w.num_kv_blocks_used`` as `recount` (w, prefill_tokens)
        sets it, without going over every running request.

        Since the last count (every batch's end, and each preemption, cancellation or stall of a
        running request, counts them all) the running requests' contexts have not changed and
        the only new ones are ``joined``: their blocks are added to what was held. ``joined`` None
        (a running request's context changed: a prefix hit), no count yet, or a new block size
        (a memory plan) count them all."""
        if w.num_kv_blocks >= UNLIMITED_KV_BLOCKS:
            return
        bs = w.kv_block_size
        held = self._held.get(w.worker_id)
        if joined is None or held is None or held[1] != bs:
            self.recount(w, prefill_tokens)
            return
        used = held[0]
        for r in joined:
            used += (r.num_computed_tokens + r.output_tokens - r.recompute_tokens + bs - 1) // bs
        self._held[w.worker_id] = (used, bs)
        w.num_kv_blocks_used = used + (-(-prefill_tokens // bs) if prefill_tokens else 0)

    def prefill_finished(self, w: Worker, prefill: tuple[tuple[Request, int], ...], done: list[Request]) -> None:
        """A batch of prefills only, one iteration, ended (``done``: those of its requests that
        finished, still running, about to leave): ``w.num_kv_blocks_used`` as `recount` sets it
        once they left, from the count held at the batch's start and the batch's own requests.

        Nothing else's context changed meanwhile (every change to a running request recounts),
        so only the prefilled requests' blocks moved: each went from its context before the
        batch (now less the ``n`` tokens prefilled, and less the token sampled when the prompt
        completed) to its context now, and the finished ones left. While a burst queues, vLLM
        runs many such batches beside hundreds of running requests: this is their count
        without going over them."""
        if w.num_kv_blocks >= UNLIMITED_KV_BLOCKS:
            self.recount(w)
            return
        bs = w.kv_block_size
        held = self._held.get(w.worker_id)
        if held is None or held[1] != bs:
            self.recount(w)
            return
        used = held[0]
        for r, n in prefill:
            after = r.num_computed_tokens + r.output_tokens - r.recompute_tokens
            before = after - n - (r.num_computed_tokens >= r.prompt_tokens + r.recompute_tokens)
            used += (after + bs - 1) // bs - (before + bs - 1) // bs
        for r in done:
            used -= (r.num_computed_tokens + r.output_tokens - r.recompute_tokens + bs - 1) // bs
        self._held[w.worker_id] = (used, bs)
        w.num_kv_blocks_used = used

    @staticmethod
    def blocks_after(w: Worker, batch: Batch, k: int) -> int:
        """The blocks `recount` would find once ``k`` (>= 1) iterations of ``w``'s running ``batch`` applied
        (`controlplane.iterations.advance_batch`), the batch's own end excepted (k below its iterations: nothing
        of it finished). For a read mid-batch: the requests' progress is applied at the batch's end."""
        if w.num_kv_blocks >= UNLIMITED_KV_BLOCKS:
            return w.num_kv_blocks_used
        grown: dict[Request, int] = {}  # requests hash by identity
        if batch.prefill:  # (a batch of several iterations prefills whole prompts: each samples a token)
            for r, n in batch.prefill:
                grown[r] = n + 1
            for r in batch.decode:
                grown[r] = 1
            if k > 1:
                for r in batch.then_decode:
                    grown[r] = grown.get(r, 0) + k - 1
        else:
            for r in batch.decode:
                grown[r] = k
        bs = w.kv_block_size
        used = 0
        for r in w.running:
            used += (r.num_computed_tokens + r.output_tokens - r.recompute_tokens + grown.get(r, 0) + bs - 1) // bs
        return used

    def forget(self, w: Worker) -> None:
        """``w`` holds nothing now (its requests went elsewhere) or left the cluster."""
        self._held.pop(w.worker_id, None)

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
