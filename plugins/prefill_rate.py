"""The prefill time per prompt token ``p`` that `queue-limit`'s ``max_finish_s`` prices prompts at
(`plugins.finish_time`).

``p`` is the rate at which a replica's queue of prompts drains **when prefill is what holds the queue back**: the
seconds of a span in which the batcher left prompts waiting for want of prefill budget, over the prompt tokens
prefilled in it. It is wall time, so it includes what runs beside the prefill in the same iterations (decodes mixed
into Sarathi's chunks, the driver's round trips); it is not the prefill cost of one prompt on an idle replica.

A span counts only where that is so. It is measured at the same looks as the iteration times, from one look (the
mark) to a later one at which

- a batch formed since the mark (the worker's ``current_batch_id`` differs; a look between batches, as a request
  finishes, or within the mark's batch keeps the mark: a batch reports its prefill at its end, so the span goes on
  until a later batch runs, and its time and tokens are counted together);
- the request last in the queue at the mark is still waiting there: every batch formed since passed it over;
- and the batch has room for the queue's head now: a batch slot free (``max_num_seqs``) and, with a KV budget, free
  blocks for its prompt. The batch was then full of prefill, not of requests.

Requests waiting at two looks did not mean that (until 2026-12-07, when that was the test): on a live CPU replica
(tiny-llama, iterations of 0.1 to 1 s) the requests that arrived during each iteration were waiting at its look and
joined the next iteration, which was mostly decodes; and a queue waiting for batch slots or KV blocks is held back by
the decodes of the running requests. Either way a span's seconds were divided by the few prompt tokens that joined
in it: 34,532 us a token, where a 600-token prompt took about 0.2 s, refused requests near idle 26 s later
(`predicted to finish in 25.0 s > max_finish_s 24 s (60 tokens at 103 ms per iteration, 544 prompt tokens at 34532
us each ...)`) that finished in 1.5 s. In such cases no span counts: prefill is not what makes a request late there,
and the decode ahead prices the wait (a ``p`` measured before, where prefill did hold a queue back, still stands).

The tokens are the progress of the running requests' computed tokens since the mark (one that joined since counted
less its prefix-cache hit) and of those that finished since (`finished`: a short answer may join and leave between
two looks). Spans and tokens are kept per model as weighted sums (the newest span weighing ``alpha``) with the run
time last updated, and ``p`` is their ratio. A ``p`` not updated for ``horizon_s`` is forgotten (a slow ``p`` refuses,
so it would never be corrected otherwise), and a fresh span replaces a forgotten one rather than averaging with it.
Before the first span, or once forgotten, prefill is not priced: that errs fast, which corrects itself, since ``p``
is measured within a span or two of prefill holding a queue back, which is when it matters.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.types import RequestStatus

__all__ = ["PrefillRate", "batch_room"]


def batch_room(w, prompt_tokens: int, kv_used: int) -> tuple[int, int]:
    """``(free, slots)`` on ``w`` for a request of ``prompt_tokens``: the batch slots free for it now and how many
    requests run at once, both bounded by what the free KV blocks hold beside the running ones (``kv_used`` blocks
    used), where ``w`` has a KV budget."""
    free = w.max_num_seqs - len(w.running)
    slots = w.max_num_seqs
    if w.has_kv_budget:
        fits = (w.num_kv_blocks - kv_used) // max(1, w.blocks_for(prompt_tokens))
        free = min(free, fits)
        slots = min(slots, len(w.running) + fits)
    return free, slots


@dataclass(slots=True, frozen=True)
class _Mark:
    at_s: float
    computed: dict[str, int]  # running request id -> prompt tokens computed
    last_waiting: object | None  # the request last in the queue (None: nothing waited)
    batch_id: int | None


class PrefillRate:
    """The prefill time per prompt token per model, measured while prefill held a queue back (module docstring)."""

    def __init__(self, horizon_s: float, alpha: float, max_span_s: float) -> None:
        self.horizon_s = horizon_s
        self.alpha = alpha
        self.max_span_s = max_span_s  # a longer span (no batch formed within it) is dropped
        self._sums: dict[str | None, tuple[float, float, float]] = {}  # model -> (span s, tokens, run time updated)
        self._marks: dict[str, _Mark] = {}
        self._left: dict[str, int] = {}  # worker -> prompt tokens prefilled since its mark by requests gone since

    def look(self, w, now_s: float, computed: dict[str, int], kv_used: int) -> None:
        """A look at ``w`` (``computed``: its running requests' prompt tokens computed as of now; ``kv_used``: its KV
        blocks used as of now): a span ends here if a batch formed since the mark, and counts if prefill held the
        queue back throughout it."""
        wid = w.worker_id
        mark = self._marks.get(wid)
        batch_id = w.current_batch_id
        fresh = mark is not None and now_s - mark.at_s <= self.max_span_s
        if fresh and (batch_id is None or batch_id == mark.batch_id):
            return  # no batch formed since the mark: the span goes on
        waiting = w.waiting
        self._marks[wid] = _Mark(now_s, computed, waiting[-1] if waiting else None, batch_id)
        left = self._left.pop(wid, 0)
        if fresh and self._held_by_prefill(w, mark.last_waiting, kv_used):
            self._add(w.model, now_s - mark.at_s, left + _prefilled(w.running, computed, mark.computed), now_s)

    @staticmethod
    def _held_by_prefill(w, last_waiting, kv_used: int) -> bool:
        """The request last in the queue at the mark still waits on ``w``, and the batch has room for the queue's
        head: the batches formed since left it for want of prefill budget, not of batch slots or KV blocks."""
        if last_waiting is None or last_waiting.status is not RequestStatus.WAITING or not w.waiting:
            return False
        if last_waiting.worker_id != w.worker_id:
            return False
        return batch_room(w, w.waiting[0].prompt_tokens, kv_used)[0] > 0

    def _add(self, model, span_s: float, tokens: int, now_s: float) -> None:
        old = self._sums.get(model)
        if old is not None and now_s - old[2] <= self.horizon_s:
            a = self.alpha
            span_s, tokens = (1 - a) * old[0] + a * span_s, (1 - a) * old[1] + a * tokens
        self._sums[model] = (span_s, tokens, now_s)

    def finished(self, request) -> None:
        """Count the prompt tokens ``request`` (gone from its replica's running set) prefilled since its replica's
        mark: the span that ends next includes them."""
        wid = request.worker_id
        mark = self._marks.get(wid) if wid is not None else None
        if mark is None or request.scheduled_s is None:
            return
        c = mark.computed.get(request.request_id)
        if c is None:
            if request.scheduled_s < mark.at_s:
                return  # it ran before the mark and left since (counted then, or never seen)
            c = request.cached_tokens
        n = request.num_computed_tokens - c
        if n > 0:
            self._left[wid] = self._left.get(wid, 0) + n

    def forget(self, worker_id: str) -> None:
        self._marks.pop(worker_id, None)
        self._left.pop(worker_id, None)

    def rate(self, model, now_s: float) -> float | None:
        """``model``'s prefill time per prompt token (None: none measured within ``horizon_s``)."""
        p = self._sums.get(model)
        if p is None:
            return None
        if now_s - p[2] > self.horizon_s:
            del self._sums[model]  # stale: see the module's docstring
            return None
        return p[0] / p[1] if p[1] > 0 else None


def _prefilled(running, computed: dict[str, int], before: dict[str, int]) -> int:
    """Prompt tokens the ``running`` requests computed since ``before`` (one that joined since: less its prefix-cache
    hit)."""
    n = 0
    for r in running:
        c = before.get(r.request_id)
        d = computed[r.request_id] - (r.cached_tokens if c is None else c)
        if d > 0:
            n += d
    return n
