"""When would a new request finish? A prediction from the queue and the observed token time.

`queue-limit`'s ``max_finish_s`` refuses a request predicted to finish later than that after it
arrives (the daemon sets it from ``--request-timeout``): under overload, requests the replicas
cannot serve in time are refused at once, with an honest ``retry-after``, instead of all of them
queueing until every one times out.

The rate it needs is the **time of one iteration** (one token for each running request) **at a
batch size**: a larger batch is slower per iteration, and a rate learnt at one size misleads at
another (learnt from a small batch, it admits a burst that then runs too slowly; learnt from a
full one, it refuses what a small batch would serve). It is measured on each replica between
two looks ``SAMPLE_S`` to ``SAMPLE_MAX_S`` apart (it looks as requests arrive, batches start and requests finish): the running requests present
both times made ``n`` tokens in ``dt`` seconds, ``k`` of them, so an iteration took ``dt * k / n``.
Samples are kept per model as exponentially weighted means per batch size (the larger of the two
looks') rounded up to a power of two. Each bounds the time at another size: one at a larger size
from above (a larger batch is never faster), one at a smaller size scaled up in proportion (an
iteration grows slower than its batch); the least bound is the prediction, so a stale slow sample
cannot shut admission out while another size was seen faster.
Only the run time and the cluster view are read: the same in both modes.

On the replica where it would finish soonest, a request with ``L`` tokens to generate finishes at

    start + L x t(B),   B = the batch it joins: running + waiting + 1, at most the batch limit
    start = 0 when a batch slot is free for it and every waiting request ahead of it, else
          = t(limit) x (tokens still to generate by the running and waiting requests) / limit

(the work ahead spread over the batch's slots). ``L`` and the tokens still to generate are what
each request is expected to take (`plugins.output_lengths`): its ``max_output_tokens`` at most, a
high quantile of the model's finished answers once enough finished, at least 1 while it runs;
before that, its ``max_output_tokens``, the most it can take. Before any iteration was timed, a
request is admitted only if it gets a batch slot at once (nothing can be predicted, and nothing
queues blind). A replica with nothing running or waiting always takes the request
(`Prediction.idle`): waiting cannot make it sooner, and the times it measures replace stale ones,
so admission can never shut itself out.
"""

from __future__ import annotations

from dataclasses import dataclass

from plugins.output_lengths import OutputLengths

__all__ = ["SAMPLE_MAX_S", "SAMPLE_S", "FinishTimes", "Prediction"]

SAMPLE_S = 0.25  # shortest span an iteration time is measured over (several iterations)
SAMPLE_MAX_S = 2.0  # longest: the batch size must not have changed much meanwhile
_ALPHA = 0.3  # weight of a new sample


@dataclass(slots=True, frozen=True)
class Prediction:
    finish_s: float | None  # seconds from now; None: no iteration time known yet
    worker_id: str
    token_s: float | None  # the iteration time it used
    waits: bool  # the request would wait for a batch slot
    idle: bool = False  # nothing running or waiting there
    tokens: int = 0  # the tokens the request is expected to generate (L)


def _bucket(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class FinishTimes:
    """Iteration times per model and batch size, and the predictions made from them."""

    def __init__(self, lengths: OutputLengths | None = None) -> None:
        self.lengths = lengths if lengths is not None else OutputLengths()
        self._times: dict[str | None, dict[int, float]] = {}  # model -> batch bucket -> iteration s
        self._marks: dict[str, tuple[float, dict[str, int]]] = {}  # worker -> (time, tokens by request)

    def look(self, w, now_s: float) -> None:
        """Measure ``w``'s iteration time since the last look (if ``SAMPLE_S`` passed)."""
        mark = self._marks.get(w.worker_id)
        if mark is not None and now_s - mark[0] < SAMPLE_S:
            return
        tokens = {r.request_id: r.output_tokens for r in w.running}
        self._marks[w.worker_id] = (now_s, tokens)
        if mark is None or not tokens or now_s - mark[0] > SAMPLE_MAX_S:
            return
        then, before = mark
        common = [rid for rid in tokens if rid in before]
        made = sum(tokens[rid] - before[rid] for rid in common)
        if made > 0:
            t = (now_s - then) * len(common) / made
            times = self._times.setdefault(w.model, {})
            b = _bucket(max(len(tokens), len(before)))
            old = times.get(b)
            times[b] = t if old is None else (1 - _ALPHA) * old + _ALPHA * t

    def forget(self, worker_id: str) -> None:
        self._marks.pop(worker_id, None)

    def iteration_s(self, model, batch: int) -> float | None:
        """The iteration time of ``model`` at ``batch`` requests (None: none timed yet)."""
        times = self._times.get(model)
        if not times:
            return None
        b = _bucket(batch)
        # A larger batch is never faster, and an iteration grows slower than its batch: the times
        # seen at other sizes bound this one's from above; the least bound is the prediction.
        return min(t if k >= b else t * b / k for k, t in times.items())

    def predict(self, workers, request, now_s: float) -> list[Prediction]:
        """The predicted finish of ``request`` on each of ``workers``."""
        return [self._predict_on(w, request, now_s) for w in workers]

    def _predict_on(self, w, request, now_s: float) -> Prediction:
        self.look(w, now_s)
        free = w.max_num_seqs - len(w.running)
        if w.has_kv_budget:  # free slots are bounded by free KV blocks too
            free = min(free, w.num_free_kv_blocks // max(1, w.blocks_for(request.prompt_tokens)))
        waits = len(w.waiting) >= free
        batch = min(w.max_num_seqs, len(w.running) + len(w.waiting) + 1)
        token_s = self.iteration_s(w.model, batch)
        idle = not w.running and not w.waiting
        tokens = self.lengths.expected(request)
        if token_s is None:
            return Prediction(None, w.worker_id, None, waits, idle, tokens)
        start = 0.0
        if waits:
            ahead = sum(self.lengths.remaining(r) for r in w.running)
            ahead += sum(self.lengths.remaining(r) for r in w.waiting)
            start = token_s * ahead / max(1, w.max_num_seqs)
        return Prediction(start + token_s * tokens, w.worker_id, token_s, waits, idle, tokens)
