"""The seed design's dynamic batcher, and a static one-request-at-a-time baseline.

``dynamic-batching`` forms request-level batches, as Triton's or TorchServe's dynamic batchers
do, and runs each to completion (nobody joins a running batch; that is what continuous
batching changes):

* a batch starts when ``max_batch_size`` requests with the same generation parameters wait
  (``group_by_params``: ``Request.params``, e.g. temperature and stop strings, `batch_key`: not a
  request's ``seed``, which is its own draws', nor ``top_p`` / ``top_k`` of a greedy request, which
  draws nothing), or when the
  oldest waiting request has waited ``max_wait_s``. Until then the plan is empty with
  ``wake_after_s`` set to that deadline, so the simulator wakes the replica at exactly
  ``arrival_s + max_wait_s`` (to the simulated microsecond and below);
* waiting requests are taken by priority (larger first), then age; the batch is the group of
  the first of them, in that order, up to the size, the replica's ``max_num_seqs`` and
  ``max_batch_tokens`` (summed prefill tokens) and its free KV blocks;
* the queue is bounded: at admission, when ``max_queued`` requests of the model wait (on all
  its replicas: one logical queue, as in the seed), the request is refused with
  ``ReasonCode.QUEUE_FULL`` (HTTP 429).

While a batch decodes it is planned like ``continuous-batching``'s decode step (many
iterations at once, preempting the newest when KV blocks run out). Of ``continuous-batching``'s
settings it takes those that apply to a batch run to completion: ``long_prompts`` (a prompt over
``max_batch_tokens`` is batched alone, or refused) and ``max_iterations``. Its ``policy``,
``chunk_size``, ``watermark`` and ``max_padding`` shape the iterations of a batch that requests join
and leave (chunked prefill beside running decodes, room kept for them, prefills of mixed lengths);
given to ``dynamic-batching`` they are refused as settings errors, not ignored.

``static-batching`` is the same machinery with one request at a time and no wait: the
baseline that neither batches nor overlaps requests.
"""

from __future__ import annotations

import heapq
from itertools import islice

from typing import Literal

from pydantic import Field, model_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import Admission, BatchPlan
from controlplane.types import UNLIMITED_KV_BLOCKS, ReasonCode

from plugins.batching import ContinuousBatching, in_priority_order, priority_then_age

#: `continuous-batching`'s settings that shape iterations requests join and leave: refused here.
_CONTINUOUS_ONLY = ("policy", "chunk_size", "watermark", "max_padding")

#: Slack when comparing run times: a wake-up scheduled for a deadline may land a rounding error
#: before it (well under a simulated microsecond); it counts as the deadline.
_EPS_S = 1e-9


#: Generation parameters that are a request's own and never part of a batch's (`batch_key`): the live engine
#: draws each sequence from its own generator seeded from its ``seed`` (`controlplane.live.sampling`), so a
#: seeded request gets the same tokens alone or in any batch. As a key every seeded request was a group of
#: its own: 8 concurrent seeded requests ran one batch each, and under load clients timed out.
PER_SEQUENCE_PARAMS = frozenset({"seed"})

#: Parameters of the draw: a greedy request (temperature 0) draws nothing, so they change none of its tokens.
_DRAW_PARAMS = frozenset({"top_p", "top_k"})


def batch_key(params: tuple) -> tuple:
    """What requests batched together share of their ``Request.params``: all but `PER_SEQUENCE_PARAMS`, and
    for a greedy one (``temperature`` 0) also without ``top_p`` / ``top_k``."""
    greedy = dict(params).get("temperature", 0.0) == 0
    return tuple((k, v) for k, v in params
                 if k not in PER_SEQUENCE_PARAMS and not (greedy and k in _DRAW_PARAMS))


def _first_group(q, size: int, by_params: bool) -> tuple[list, float]:
    """The batch candidates and the oldest arrival among a replica's waiting requests ``q``: the first ``size``
    of them in `priority_then_age` order that share the generation parameters of the first (`batch_key`; any,
    without ``by_params``), and the smallest ``arrival_s``. Equal to sorting the queue and filtering it, without doing
    so: a queue already in that order (`in_priority_order`; as it is but for preemptions and re-routed
    requests) is read from its head, any other one picked from (`heapq.nsmallest`: the sort's first ``size``,
    ties in queue order). An overloaded replica's queue holds thousands; sorting and filtering it for every
    batch made an overloaded ``static-batching`` replay several times slower."""
    ordered = len(q) < 2 or in_priority_order(q)
    head = q[0] if ordered else min(q, key=priority_then_age)
    if by_params:
        key = batch_key(head.params)
        match = (r for r in q if (r.params == head.params or batch_key(r.params) == key))
    else:
        match = q
    if ordered:
        return list(islice(match, size)), head.arrival_s
    return heapq.nsmallest(size, match, key=priority_then_age), min(r.arrival_s for r in q)


class DynamicBatching(ContinuousBatching):
    """Request-level batches: size or max wait, priority then age, same generation parameters."""

    name = "dynamic-batching"

    class Settings(PluginSettings):
        max_batch_size: int = Field(8, ge=1)
        max_wait_s: float = Field(0.1, ge=0)
        max_queued: int | None = Field(100, ge=0)  # waiting requests of a model; None: unbounded
        group_by_params: bool = True
        # continuous-batching's, as they apply to a batch run to completion (see the module's docstring)
        long_prompts: Literal["alone", "reject"] = "alone"  # a prompt over max_batch_tokens: batched alone, or refused
        max_iterations: int = Field(1 << 20, ge=1)  # cap on a multi-iteration decode step

        @model_validator(mode="before")
        @classmethod
        def _not_continuous(cls, data):
            given = sorted(k for k in _CONTINUOUS_ONLY if isinstance(data, dict) and k in data)
            if given:
                raise ValueError(
                    f"{', '.join(given)}: continuous-batching settings that dynamic-batching and static-batching do "
                    "not take: their batches run to completion, prefill first, nobody joining (no chunked prefill "
                    "beside running decodes, no KV room kept for them, no padded prefill mix); remove them, or use "
                    "continuous-batching")
            return data

    def __init__(self, settings=None) -> None:
        Plugin.__init__(self, settings)  # (continuous-batching's policy choice does not apply)

    @hookimpl
    def cp_admit_request(self, ctx, request):
        cap = self.settings.max_queued
        if cap is None:
            return None
        queued = sum(len(w.waiting) for w in ctx.workers.values() if w.model == request.model and w.is_alive)
        if queued >= cap:
            return Admission(False, f"queue full: {queued} requests wait for a batch (max_queued {cap})",
                             code=ReasonCode.QUEUE_FULL)
        return None

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        w = worker
        if w.running:  # a batch is under way: run it to completion, nobody joins
            return self._decode_all(w, w.running, f"{len(w.waiting)} waiting for the batch to finish")
        if not w.waiting:
            return BatchPlan(reason="nothing to run")
        s = self.settings
        q = w.waiting
        size = min(s.max_batch_size, w.max_num_seqs)
        group, oldest = _first_group(q, size, s.group_by_params)
        now = ctx.now_s
        deadline = oldest + s.max_wait_s
        if len(group) < size and now + _EPS_S < deadline:
            return BatchPlan(wake_after_s=deadline - now,
                             reason=f"{len(group)}/{size} of a batch; oldest waits until {deadline:.6f}")
        return self._take(w, group, size, "full batch" if len(group) >= size else "max wait reached")

    def _take(self, w, group, size: int, why: str) -> BatchPlan:
        bs = w.kv_block_size
        limited = w.num_kv_blocks < UNLIMITED_KV_BLOCKS
        free = w.num_kv_blocks - w.num_kv_blocks_used
        batch, tokens = [], 0
        stop = ""  # what ended the batch before the group did (said in the reason)
        for r in group:
            if len(batch) >= size:
                break
            n = r.remaining_prefill_tokens
            need = -(-r.prefill_target_tokens // bs)
            if limited and need > free:
                stop = f"KV cache: {r.request_id} needs {need} blocks, {free} free"
                break
            if batch and tokens + n > w.max_batch_tokens:
                stop = (f"token budget: {r.request_id}'s {n} prompt tokens would pass max_batch_tokens "
                        f"{w.max_batch_tokens}")
                break
            if not batch and n > w.max_batch_tokens and self.settings.long_prompts == "reject":
                break
            batch.append((r, n))
            tokens += n
            free -= need
        if not batch:
            return BatchPlan(reason=f"{group[0].request_id} fits neither the token budget nor the KV cache")
        if len(batch) == 1 and tokens > w.max_batch_tokens:
            stop = f"prompt over max_batch_tokens {w.max_batch_tokens}: alone"
        iterations = 1 + self._decode_horizon(w, batch)
        of = f"{len(batch)} of {size}" if why == "full batch" else str(len(batch))
        return BatchPlan(prefill=tuple(batch), max_iterations=iterations,
                         reason=f"{why}: batch of {of} ({tokens} prefill tokens){'; ' + stop if stop else ''}")


class StaticBatching(DynamicBatching):
    """One request at a time, run to completion: the no-batching baseline."""

    name = "static-batching"

    class Settings(DynamicBatching.Settings):
        max_batch_size: int = Field(1, ge=1)
        max_wait_s: float = Field(0.0, ge=0)
        max_queued: int | None = Field(None, ge=0)
