"""When would a new request finish? A prediction from the queue and the observed iteration and prefill times.

`queue-limit`'s ``max_finish_s`` refuses a request predicted to finish later than that after it
arrives (the daemon sets it from ``--request-timeout``): under overload, requests the replicas
cannot serve in time are refused at once, with an honest ``retry-after``, instead of all of them
queueing until every one times out.

The rate it needs is the **time of one iteration** (one token for each running request) **at a
batch size**: a larger batch is slower per iteration, and a rate learnt at one size misleads at
another (learnt from a small batch, it admits a burst that then runs too slowly; learnt from a
full one, it refuses what a small batch would serve). It is measured on each replica between
two looks ``SAMPLE_S`` to ``SAMPLE_MAX_S`` apart: the running requests present both times, ``k``
of them, made ``n`` tokens in ``dt`` seconds, so an iteration took ``dt * k / n``. It looks as
requests arrive and finish and, in a live run, at the start of every iteration (queue-limit's
``IterationTimed``, fed for each worker step that computed, with the run time the core started it:
the tokens that step makes are not counted yet, so the span and the tokens match). The last makes a
busy live replica timed every ``SAMPLE_S`` or so whatever the traffic: without it, a lone long request
with nothing arriving or finishing gives looks further apart than ``SAMPLE_MAX_S``, no sample, and once
every time is stale, admission falls back to free batch slots only. It does not look as batches start:
the simulator's exact mode starts one every iteration and its fast mode one every many, so the looks, and
the times measured, differed between the modes (on the bundled trace at x2 on two replicas with
``max_finish_s: 20``, 1,347 refused fast against 1,097 exact); a simulated replay looks as requests arrive
and finish, in both modes alike. A look reads the running requests' tokens as of now
(``ctx.request_progress``: a fast-mode batch of many iterations applies them at its end, the exact mode
each iteration).
Samples are kept per model as exponentially weighted means per batch size (the larger of the two
looks') rounded up to a power of two, each with the run time it was last updated.

A time at one size bounds the others': one at a larger size from above (a larger batch is never
faster), one at a smaller size ``k`` scaled up in proportion, ``t x b / k`` (an iteration grows
slower than its batch). The least and the largest of the smaller sizes, ``k1 < k2``, also give a
line, ``t2 + s x (b - k2)``, with the slope ``s`` measured between them (the widest span, the
least noise) held between 0 (flat) and ``t2 / k2`` (in proportion): an iteration's fixed cost
(reading the weights, launching kernels) is paid once per batch, so on a GPU it grows far less
than its batch, and the proportional bound alone would predict a batch of 128 sixteen times
slower than one of 8 that ran at the same speed. A size below every size measured has no smaller one:
it is taken down the line through the least and the largest sizes measured, ``t1 - s x (k1 - b)``, the
slope held the same way (between flat and ``t1 / k1``), and with one size measured in proportion,
``t1 x b / k1``, the fastest it can be (an iteration shrinks no faster than its batch). The least
of all these is the prediction.
Erring there is not symmetric: a size predicted too fast is admitted, runs and is measured within
seconds, which corrects it; a size predicted too slow is refused, so it is never run and never
measured, and the error stays. Hence the proportional guess below one size measured: taking that size's
own time instead (a larger batch is never faster: an upper bound, not an estimate), a CPU replica measured
only at a burst of 40 (39 ms an iteration) refused 11 of the next burst of 12 as 300 tokens at 39 ms, 11.7 s
against ``max_finish_s`` 5 s, where the one it admitted ran at about 4.5 ms (later bursts: 2, 4, 8 of 12
admitted, as the lone ones were measured; in a replay, which does not look at every iteration, the lone one
is never measured and every later burst is refused alike: `tests/plugins/test_finish_time_sizes.py`).

For the same reason a time not updated for ``horizon_s`` (run time, 60 s by default: queue-limit's
``iteration_horizon_s``) is forgotten once a fresher one exists. Learnt once at a large batch during a cold
start or a CPU hiccup, a slow time would otherwise bound that size (and the line above it) for good while
refusals keep batches from ever reaching it again; fresh times at the sizes that do run then
predict it instead. Until a span is measured, a live worker's own timings of its decode iterations stand in
(`FinishTimes.iteration_row`). When every time is older (the model sat idle past the horizon), the last known ones
still predict: forgetting them all made the model count as never timed, so after a minute idle a burst was
admitted blind up to the free batch slots and all of it timed out. They cannot lock a size out: an idle
replica always takes a request (below), and the first fresh time it measures retires them.

**Prefill** is priced at a second rate, the **prefill time per prompt token** ``p`` (`plugins.prefill_rate`), measured
at the same looks over the spans in which prefill held the queue back: the batches formed in the span left prompts
waiting although they had room for them (batch slots, KV blocks), for want of prefill budget. The span's seconds over
the prompt tokens prefilled in it, as a ratio of weighted sums over the recent spans, forgotten after ``horizon_s``.
Requests merely waiting do not make such a span: they may wait for batch slots or KV blocks (the decodes hold them
back), or, live, have arrived during an iteration that the next one takes them all in. Until such a span is
measured, or once ``p`` is forgotten, prefill is not priced (the prediction is the decode one alone): that errs fast.

Both rates are wall time measured while the other work runs too: ``p`` includes the decodes mixed into the same
iterations (Sarathi's chunks, vLLM's mixed batches) or run between prefill batches (prefill-first scheduling), and
``t(B)`` the prefill chunks among its iterations. Each is the rate at which the queue drains when its own kind of work
is the bottleneck: prompts (long prompts, short answers: decodes ride along) or batch slots (long answers). So the
work queued ahead takes the longer of the two, not their sum (which would count the same seconds twice). An
approximation, right on average: exact when the queue ahead has the mix of work the spans measured, otherwise off by
about the other kind's share of it; chunked or prefill-first alike. A prompt's prefix-cache hit is not known before it
is scheduled: a waiting prompt counts in full.
Only the run time, the cluster view and finished requests are read: the same in a live run and a simulated one,
and in the simulator's fast and exact modes (the running requests' progress and the free KV blocks as of now:
``ctx.request_progress``, ``ctx.kv_blocks_used``; `tests/controlplane/test_exact_mode.py`).

On the replica where it would finish soonest, a request with ``L`` tokens to generate and ``P`` prompt tokens to
prefill finishes at

    start + P x p + L x t(B),   B = the batch it joins: running + waiting + 1, at most the slots (below)
    start = max(decode ahead, p x prompt tokens still to prefill by the waiting and running requests)
    decode ahead = 0 when a batch slot is free for it and every waiting request ahead of it, else
                 = t(B) x (tokens still to generate by the running and waiting requests) / slots

(``P x p`` and the prompts ahead count only once ``p`` is measured; the decode work ahead is spread over the batch's
slots: ``max_num_seqs``, or fewer where the free KV blocks hold fewer requests of this one's size beside the running
ones). ``L`` and the tokens still to generate are what
each request is expected to take (`plugins.output_lengths`): its ``max_output_tokens`` at most;
once enough answers finished, ``L`` a high quantile of their lengths (one long answer makes this
request late) and the work ahead their mean (a sum of many lengths is near their count times the
mean; for a running request, of the answers longer than it ran so far), at least 1 while a
request runs; before that, its ``max_output_tokens``, the most it can take. Before any iteration
was timed on its model (since the plugin was made), a request is admitted only if it gets a batch slot at once
(nothing can be predicted, and nothing queues blind). A replica with nothing running or waiting
always takes the request (`Prediction.idle`): waiting cannot make it sooner, and the times it
measures replace stale ones.

Cost: the waiting requests' expected tokens follow the window of finished answers, so they are not
a total a queue can keep; the queue keeps how many of its requests have each (tokens made so far,
``max_output_tokens``) pair instead (`controlplane.waiting_queue`), and the work queued ahead is
summed over those pairs (`OutputLengths.remaining_total`): an arrival costs the distinct pairs
waiting, bounded by the workload's lengths, not the queued requests. The prompt tokens still to prefill are a
total the queue keeps (``remaining_prefill_tokens``). The running ones (at most ``max_num_seqs``) are walked.

Measured on 2026-12-06 (docs/daemon.md#overload): the bundled Azure code trace (about 2,000 prompt tokens to 30
output tokens a request) at x5 on two fixed replicas with ``max_finish_s: 60`` refused 122 of 44,095 requests while
the admitted waited 576 s at the median (2.9% finished within 60 s); with prefill priced it refuses 15,849 and 84.6%
of the admitted finish within 60 s (queue p50 42 s, p99 65 s). Since 2026-12-07 (no looks as batches start), with the
bundled config's plugins less ``slo-planner``: 15,903 refused, 87.98% within 60 s (queue p50 41.6 s, p99 62.3 s),
against 15,919 and 86.91% with the looks as batches start. Since 2026-12-07, with ``p`` measured only where prefill
held the queue back (`plugins.prefill_rate`): 15,638 refused, 87.63% within 60 s (queue p50 41.7 s, p99 62.4 s).
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.waiting_queue import WaitingQueue
from plugins.output_lengths import OutputLengths
from plugins.prefill_rate import PrefillRate, batch_room

__all__ = ["HORIZON_S", "SAMPLE_MAX_S", "SAMPLE_S", "FinishTimes", "Prediction"]

SAMPLE_S = 0.25  # shortest span an iteration time is measured over (several iterations)
SAMPLE_MAX_S = 2.0  # longest: the batch size must not have changed much meanwhile
HORIZON_S = 60.0  # a time not updated for this long (run time) is forgotten
_ALPHA = 0.3  # weight of a new sample


@dataclass(slots=True, frozen=True)
class Prediction:
    finish_s: float | None  # seconds from now; None: no iteration time known yet
    worker_id: str
    token_s: float | None  # the iteration time it used
    waits: bool  # the request would wait for a batch slot
    idle: bool = False  # nothing running or waiting there
    tokens: int = 0  # the tokens the request is expected to generate (L)
    prefill_token_s: float | None = None  # the prefill time per prompt token it used (None: none measured)
    prefill_tokens: int = 0  # prompt tokens it priced: still to prefill ahead of it, and its own


def _kv_used(w, ctx) -> int:
    """``w``'s KV blocks used as of now (``ctx.kv_blocks_used``: a fast-mode batch's iterations so far counted)."""
    return ctx.kv_blocks_used(w) if ctx is not None and w.has_kv_budget else w.num_kv_blocks_used


def _bucket(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class FinishTimes:
    """Iteration times per model and batch size, and the predictions made from them."""

    def __init__(self, lengths: OutputLengths | None = None, horizon_s: float = HORIZON_S) -> None:
        if not horizon_s > 0:
            raise ValueError(f"horizon_s must be > 0, got {horizon_s}")
        self.lengths = lengths if lengths is not None else OutputLengths()
        self.horizon_s = horizon_s
        # model -> batch bucket -> (iteration s, run time it was last updated)
        self._times: dict[str | None, dict[int, tuple[float, float]]] = {}
        self._prefill = PrefillRate(horizon_s, _ALPHA, SAMPLE_MAX_S)  # the prefill time per prompt token
        # worker -> (time, tokens made by request)
        self._marks: dict[str, tuple[float, dict[str, int]]] = {}
        # model -> batch bucket -> (a decode iteration's own time as its worker reported it, run time): the
        # prior used while no span was measured (`iteration_row`)
        self._rows: dict[str | None, dict[int, tuple[float, float]]] = {}

    def iteration_row(self, model, row, now_s: float) -> None:
        """Keep a live worker's own timing of one decode-only iteration (``IterationTimed``'s row) as
        the model's iteration time until a span is measured (`look`): short answers finish within
        ``SAMPLE_S`` and leave no span, so a model that served only those counted as never timed and a
        burst was admitted blind to the free batch slots. It is the compute alone (no round trip):
        an optimistic prior, which errs by admitting, and the burst's own spans correct it."""
        t, n = row.get("iteration_s"), int(row.get("num_decode_seqs", 0))
        if not t or t <= 0 or n <= 0 or row.get("num_prefill_seqs", 0):
            return
        times = self._rows.setdefault(model, {})
        b = _bucket(n)
        old = times.get(b)
        times[b] = ((1 - _ALPHA) * old[0] + _ALPHA * t if old is not None else t, now_s)

    def look(self, w, now_s: float, progress=None, ctx=None) -> None:
        """Measure ``w``'s iteration time since the last look (if ``SAMPLE_S`` passed) and, where prefill held its
        queue back, its prefill time per prompt token (`plugins.prefill_rate`). ``progress``: its running requests'
        progress as of now where their own fields lag (``ctx.request_progress(w)``); ``ctx``: to read its KV blocks
        used as of now (``ctx.kv_blocks_used``)."""
        wid = w.worker_id
        mark = self._marks.get(wid)
        if mark is not None and now_s - mark[0] < SAMPLE_S:
            return
        running = w.running
        if progress:  # a batch's progress not applied yet (the simulator's fast mode): as of now
            tokens, computed = {}, {}
            for r in running:
                p = progress.get(r)
                tokens[r.request_id], computed[r.request_id] = (
                    (r.output_tokens, r.num_computed_tokens) if p is None else (p[0], p[1]))
        else:
            tokens = {r.request_id: r.output_tokens for r in running}
            computed = {r.request_id: r.num_computed_tokens for r in running}
        self._marks[wid] = (now_s, tokens)
        self._prefill.look(w, now_s, computed, _kv_used(w, ctx))
        if mark is None or now_s - mark[0] > SAMPLE_MAX_S or not tokens:
            return
        then, before = mark
        common = [rid for rid in tokens if rid in before]
        made = sum(tokens[rid] - before[rid] for rid in common)
        if made > 0:
            t = (now_s - then) * len(common) / made
            times = self._times.setdefault(w.model, {})
            b = _bucket(max(len(tokens), len(before)))
            old = times.get(b)
            if old is not None and now_s - old[1] <= self.horizon_s:
                t = (1 - _ALPHA) * old[0] + _ALPHA * t
            times[b] = (t, now_s)

    def finished(self, request) -> None:
        """Count the prompt tokens ``request`` (gone from its replica's running set) prefilled since its replica's
        last prefill mark (`PrefillRate.finished`: a short answer may join and leave between two looks)."""
        self._prefill.finished(request)

    def forget(self, worker_id: str) -> None:
        self._marks.pop(worker_id, None)
        self._prefill.forget(worker_id)

    def prefill_s(self, model, now_s: float) -> float | None:
        """``model``'s prefill time per prompt token (None: none measured within ``horizon_s``)."""
        return self._prefill.rate(model, now_s)

    def iteration_s(self, model, batch: int, now_s: float) -> float | None:
        """The iteration time of ``model`` at ``batch`` requests (None: never timed). Stale times are
        dropped once a fresher one exists; while none is fresh, the last known ones stand."""
        times = self._times.get(model) or self._rows.get(model)
        if not times:
            return None
        stale = [k for k, (_, at) in times.items() if now_s - at > self.horizon_s]
        if len(stale) < len(times):
            for k in stale:
                del times[k]  # see the module's docstring
        b = _bucket(batch)
        bounds = [t if k >= b else t * b / k for k, (t, _) in times.items()]
        below = [k for k in times if k < b]
        if len(below) >= 2:  # the line through the least and the largest smaller sizes, flat to proportional
            k1, k2 = min(below), max(below)
            t1, t2 = times[k1][0], times[k2][0]
            slope = min(max(0.0, (t2 - t1) / (k2 - k1)), t2 / k2)
            bounds.append(t2 + slope * (b - k2))
        elif not below:  # smaller than every size measured: down the line through the least and the largest,
            k1, k2 = min(times), max(times)  # in proportion with one size (the fastest it can be: see the docstring)
            t1 = times[k1][0]
            slope = t1 / k1 if k1 == k2 else min(max(0.0, (times[k2][0] - t1) / (k2 - k1)), t1 / k1)
            bounds.append(t1 - slope * (k1 - b))
        return min(bounds) if bounds else None

    def predict(self, workers, request, now_s: float, ctx=None) -> list[Prediction]:
        """The predicted finish of ``request`` on each of ``workers``; with ``ctx``, from their state as of now
        (``ctx.request_progress``, ``ctx.kv_blocks_used``: a batch's progress the core has not applied yet)."""
        return [self._predict_on(w, request, now_s, ctx) for w in workers]

    def _predict_on(self, w, request, now_s: float, ctx=None) -> Prediction:
        progress = ctx.request_progress(w) if ctx is not None else None
        self.look(w, now_s, progress, ctx)
        free, slots = batch_room(w, request.prompt_tokens, _kv_used(w, ctx))  # slots: how many requests run at once
        waits = len(w.waiting) >= free
        batch = max(1, min(slots, len(w.running) + len(w.waiting) + 1))
        token_s = self.iteration_s(w.model, batch, now_s)
        idle = not w.running and not w.waiting
        tokens = self.lengths.expected(request)
        if token_s is None:
            return Prediction(None, w.worker_id, None, waits, idle, tokens)
        start = 0.0
        if waits:
            if progress:
                remaining = self.lengths.remaining
                ahead = sum(remaining(r) if (p := progress.get(r)) is None else remaining(r, made=p[0])
                            for r in w.running)
            else:
                ahead = sum(self.lengths.remaining(r) for r in w.running)
            waiting = w.waiting  # (counted by length by the queue: an overloaded one is not walked)
            if type(waiting) is WaitingQueue:
                ahead += self.lengths.remaining_total(w.model, waiting.lengths)
            else:
                ahead += sum(self.lengths.remaining(r) for r in waiting)
            start = token_s * ahead / max(1, slots)
        prefill_token_s = self.prefill_s(w.model, now_s)
        prefill_s, prompts = 0.0, 0
        if prefill_token_s is not None:  # the prompts ahead drain at the measured rate; then its own prompt
            waiting = w.waiting
            if type(waiting) is WaitingQueue:
                queued = waiting.remaining_prefill_tokens
            else:
                queued = sum(r.remaining_prefill_tokens for r in waiting)
            if progress:  # (prefilled as of now)
                for r in w.running:
                    p = progress.get(r)
                    queued += max(0, r.prefill_target_tokens - (r.num_computed_tokens if p is None else p[1]))
            else:
                queued += sum(r.remaining_prefill_tokens for r in w.running if not r.is_decoding)
            own = request.remaining_prefill_tokens
            start = max(start, prefill_token_s * queued)  # (each rate includes the other's work: see the docstring)
            prefill_s, prompts = prefill_token_s * own, queued + own
        return Prediction(start + prefill_s + token_s * tokens, w.worker_id, token_s, waits, idle, tokens,
                          prefill_token_s, prompts)
