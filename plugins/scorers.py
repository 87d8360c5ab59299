"""Replica scorers for the weighted routers (llm-d's endpoint-picker scorers, and the seed's).

Each scorer gives every candidate replica a score in [0, 1], higher is better; a router adds
them up with weights (``plugins.weighted_routing``). Load scorers are min-max normalised over
the candidates, as llm-d's queue scorer is: the least loaded gets 1, the most loaded 0, and all
get 1 when they are equal. The queue sums they read (``estimated-work``'s queued prefill and
output, as `work_tokens` counts them) are kept by the queue (`controlplane.waiting_queue`): a
replica's queue is not walked at each arrival.

| name | what it scores |
|---|---|
| ``prefix-cache-hit`` | share of the prompt the replica's prefix cache holds now (``ctx.prefix_match``: the cache's actual state, through ``cp_prefix_peek``) |
| ``queue-depth`` | fewer requests waiting |
| ``kv-utilization`` | more free KV blocks (1 - used / total), used as of now (``ctx.kv_blocks_used``) |
| ``active-requests`` | fewer requests running |
| ``estimated-work`` | less work queued, in seconds at the replica's measured speed: remaining prefill + expected output tokens (the seed's complexity estimate: the prompt and ``max_output_tokens``) as of now (``ctx.batch_progress``), over its relative speed |
| ``session-affinity`` | 1 on the replica that served the request's session last (``params["session_id"]``, else its tenant) |
| ``speed`` | measured speed relative to the fastest replica (heterogeneous replicas), whatever its load |

**Speed, independent of load.** Tokens per busy second grow with the batch (an iteration's fixed
cost is shared by more tokens), so a busy replica looked fast and drew still more traffic. A
replica's speed is instead how long its batches took against what the same batches take on its
model's other replicas (`BatchTimes`): each timed batch's iterations, prefilled and decoded tokens,
the KV tokens its decodes read and its prefills' attention (from the run's batch decisions and
``Worker.busy_s``) feed one fit per model with a speed per replica. Identical replicas read the same
at any load (speeds within ``SPEED_TOLERANCE``, 5%, of the fastest read as the fastest); one twice as
slow reads half. It needs the batch decisions (``storage.record_batches``, on by default); without
them, or before ``BatchTimes.MIN_BATCHES`` timed batches of a replica, the replica reads as the
fastest. Only a router that weighs ``speed`` or ``estimated-work`` times batches (`SPEED_SCORERS`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np

from controlplane.events import RequestFinished, WorkerChanged
from controlplane.types import UNLIMITED_KV_BLOCKS, Decision
from controlplane.waiting_queue import WaitingQueue

Scores = list[float]


def _inverted_minmax(values: Sequence[float]) -> Scores:
    lo, hi = min(values), max(values)
    if hi <= lo:
        return [1.0] * len(values)
    return [(hi - v) / (hi - lo) for v in values]


def session_key(request) -> str | None:
    for k, v in request.params:
        if k in ("session_id", "session"):
            return str(v)
    return request.tenant


#: What a batch's time is fitted to: iterations, prefilled tokens, decoded tokens, KV tokens the decodes read,
#: and the prefills' attention (each chunk's tokens x the context they attend to).
_FEATURES = 5
#: The Gram matrix's upper triangle, as kept per replica.
_PAIRS = tuple((i, j) for i in range(_FEATURES) for j in range(i, _FEATURES))


def _gram(upper: list[float]) -> np.ndarray:
    g = np.zeros((_FEATURES, _FEATURES))
    for m, (i, j) in enumerate(_PAIRS):
        g[i, j] = g[j, i] = upper[m]
    return g


def _fit_speeds(sums: list) -> list[float] | None:
    """Each replica's speed ``u_w`` (busy-time-weighted mean 1) and the coefficients ``c`` that make ``x . c`` close
    to ``u_w y`` for every batch: one linear least-squares problem in (``c``, ``u``) with that mean as a constraint,
    from each replica's running sums. The most terms of ``c`` whose fit has none negative (as
    `controlplane.batch_costs.BatchCosts.fit`); columns scaled to one (their magnitudes differ by 10 orders)."""
    n = len(sums)
    busy = np.array([s[4] for s in sums])
    gram = _gram([sum(v) for v in zip(*(s[2] for s in sums))])
    xys = [np.array(s[3]) for s in sums]
    used = [i for i in range(_FEATURES) if gram[i, i] > 0]
    for size in range(len(used), 0, -1):
        for keep in combinations(used, size):
            idx = list(keep)
            m = size + n
            a = np.zeros((m + 1, m + 1))
            a[:size, :size] = gram[np.ix_(idx, idx)]
            for j, s in enumerate(sums):
                a[:size, size + j] = a[size + j, :size] = -xys[j][idx]
                a[size + j, size + j] = s[5]
            a[m, size:m] = a[size:m, m] = busy / busy.sum()
            scale = np.ones(m + 1)
            scale[:m] = 1.0 / np.sqrt(np.maximum(np.diag(a)[:m], 1e-300))
            a *= np.outer(scale, scale)
            rhs = np.zeros(m + 1)
            rhs[m] = scale[m]
            try:
                z = np.linalg.solve(a, rhs) * scale
            except np.linalg.LinAlgError:
                continue
            if (z[:size] >= 0).all() and (z[size:m] > 0).all():
                return z[size:m].tolist()
    return None


class BatchTimes:
    """Each replica's batches, timed: how fast it is against its model's other replicas, whatever their load.

    A timed batch (one in ``EVERY``) opens with its ``batch`` decision (its requests are in
    ``Worker.running`` then) and closes with the replica's next one (a replica runs its batches one after
    another, so ``busy_s`` has grown by this batch's time then). What it computed is read from its
    requests' progress then: a multi-iteration run the core cut short (a request arrived) ran fewer
    iterations than planned.

    Per model, ``u_w y = a k + b p + c d + e x + f q``: a batch's busy seconds ``y`` on replica ``w`` from its
    iterations ``k``, prefilled tokens ``p``, decoded tokens ``d``, KV tokens its decodes read ``x`` and its
    prefills' attention ``q``, with one speed ``u_w`` per replica (`_fit_speeds`, on running sums: nothing kept
    per batch).
    """

    #: One batch in this many is timed (a timed batch reads every request of the batch, twice).
    EVERY = 4
    #: Timed batches of a replica before its speed counts (before: not measured).
    MIN_BATCHES = 32

    def __init__(self) -> None:
        self._open: dict[str, tuple] = {}  # worker -> (busy_s at the start, requests, their output and computed tokens)
        # worker -> [model, batches, x x^T (its upper triangle), x y, sum of y, sum of y^2]
        self._sums: dict[str, list] = {}
        self._count: dict[str, int] = {}  # model -> batches timed
        self._seen: dict[str, int] = {}  # worker -> its batches
        self._fitted: dict[str, tuple[int, dict[str, float]]] = {}  # model -> (batches then, worker -> speed)

    def observe(self, event, ctx) -> None:
        t = type(event)
        if t is Decision:
            if event.action == "batch":
                self._batch(event, ctx.workers)
            elif event.action == "batch_failed":
                self._open.pop(event.subject, None)  # it took no busy time, or not all of it
        elif t is WorkerChanged and event.kind in ("failed", "stopped"):
            self._open.pop(event.worker_id, None)

    def _batch(self, event, workers) -> None:
        wid = event.subject
        w = workers.get(wid)
        if w is None:
            return
        prev = self._open.pop(wid, None)
        if prev is not None:
            self._close(w, *prev)
        seen = self._seen[wid] = self._seen.get(wid, 0) + 1
        if seen % self.EVERY:
            return
        running = w.running[:]
        self._open[wid] = (w.busy_s, running, [r.output_tokens for r in running],
                           [r.num_computed_tokens for r in running])

    def _close(self, w, busy0: float, running, outputs, computed) -> None:
        y = w.busy_s - busy0
        if y <= 0:
            return
        k = decoded = read = prefilled = attended = 0
        for r, out0, done0 in zip(running, outputs, computed):
            n = r.num_computed_tokens - done0
            if n > 0:  # a prefill (chunk) of n tokens after done0 already in the KV cache
                prefilled += n
                attended += n * done0 + n * n // 2
            d = r.output_tokens - out0
            if d > 0:
                decoded += d
                if d > k:
                    k = d
                # the context at each of its d decodes: its KV tokens now, less the d - 1 .. 0 decoded since
                read += d * (r.num_computed_tokens + r.output_tokens - r.recompute_tokens) - d * (d + 1) // 2
        x = (k if k > 0 else 1, prefilled, decoded, read if read > 0 else 0, attended)
        sums = self._sums.get(w.worker_id)
        if sums is None:
            sums = self._sums[w.worker_id] = [w.model, 0, [0.0] * len(_PAIRS), [0.0] * _FEATURES, 0.0, 0.0]
        sums[1] += 1
        gram, xy = sums[2], sums[3]
        for m, (i, j) in enumerate(_PAIRS):  # (plain floats: numpy's calls cost more than these sums)
            gram[m] += x[i] * x[j]
        for i in range(_FEATURES):
            xy[i] += x[i] * y
        sums[4] += y
        sums[5] += y * y
        self._count[w.model] = self._count.get(w.model, 0) + 1

    def _speeds(self, model: str) -> dict[str, float]:
        """Each measured replica's speed of ``model`` (`_fit_speeds`), fitted again once its timed batches grew
        by an eighth."""
        n = self._count.get(model, 0)
        at, speeds = self._fitted.get(model, (0, None))
        if speeds is not None and n - at < max(1, at >> 3) or not n:
            return speeds or {}
        mine = [(wid, s) for wid, s in self._sums.items() if s[0] == model]
        fitted = _fit_speeds([s for _, s in mine])
        speeds = {} if fitted is None else {wid: u for (wid, s), u in zip(mine, fitted) if s[1] >= self.MIN_BATCHES}
        self._fitted[model] = (n, speeds)
        return speeds

    def relative(self, workers) -> list[float | None]:
        """Each replica's speed against its model's replicas (2: it runs the same batches in half the time of a
        replica at 1); None before ``MIN_BATCHES`` of its batches were timed."""
        by_model: dict[str, dict[str, float]] = {}
        out = []
        for w in workers:
            speeds = by_model.get(w.model)
            if speeds is None:
                speeds = by_model[w.model] = self._speeds(w.model)
            out.append(speeds.get(w.worker_id))
        return out


class ReplicaStats:
    """What scorers learn from the run: each replica's speed and the sessions' last replicas.

    ``observe`` takes every event the router gets, with the run's context: the batch decisions time
    each replica's batches (`BatchTimes`, reading ``ctx.workers``; ``time_batches=False``, for a router that
    weighs no speed: not timed, every replica reads as fast), completed requests count its tokens.
    """

    def __init__(self, max_sessions: int = 100_000, *, time_batches: bool = True) -> None:
        self.tokens: dict[str, float] = {}  # worker -> tokens computed by its completed requests
        self.sessions: OrderedDict[str, str] = OrderedDict()
        self.max_sessions = max_sessions
        # None: every replica reads as fast as the others (a router that weighs no speed: timing costs per batch)
        self.batches = BatchTimes() if time_batches else None

    def observe(self, event, ctx=None) -> None:
        t = type(event)
        if t is RequestFinished:
            r = event.request
            if r.worker_id is not None and r.first_token_s is not None:
                done = r.prompt_tokens - r.cached_tokens + r.output_tokens
                self.tokens[r.worker_id] = self.tokens.get(r.worker_id, 0.0) + done
        elif (t is Decision or t is WorkerChanged) and ctx is not None and self.batches is not None:
            self.batches.observe(event, ctx)

    def relative(self, workers) -> list[float | None]:
        """Each replica's speed against its model's replicas (`BatchTimes.relative`); None: not measured."""
        return self.batches.relative(workers) if self.batches is not None else [None] * len(workers)

    def routed(self, request, worker_id: str) -> None:
        key = session_key(request)
        if key is not None:
            self.sessions[key] = worker_id
            self.sessions.move_to_end(key)
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)

    def throughput(self, w) -> float | None:
        """Tokens per busy second (of its completed requests); None before the replica has finished anything.
        It grows with the replica's batches: a measure of its load as much as of its speed."""
        t = self.tokens.get(w.worker_id)
        if not t or w.busy_s <= 0:
            return None
        return t / w.busy_s

    #: Relative speeds within this share of the fastest read as the fastest (1): the fit's error. Identical
    #: replicas read within 1-2% of each other (up to 4% over their first batches), and a weighted sum would
    #: otherwise send every tie to whichever read highest.
    SPEED_TOLERANCE = 0.05

    def relative_speeds(self, workers) -> list[float]:
        """Each replica's speed (`BatchTimes.relative`) over the fastest measured, 1 within `SPEED_TOLERANCE` of
        it; 1 for replicas not measured yet."""
        speeds = self.relative(workers)
        known = [s for s in speeds if s]
        if not known:
            return [1.0] * len(workers)
        top = max(known)
        floor = 1.0 - self.SPEED_TOLERANCE
        return [1.0 if not s or s / top >= floor else s / top for s in speeds]


def prefix_cache_hit(ctx, request, workers, stats) -> Scores:
    if not request.hash_ids or request.prompt_tokens <= 0:
        return [0.0] * len(workers)
    return [min(1.0, ctx.prefix_match(w, request) / request.prompt_tokens) for w in workers]


def queue_depth(ctx, request, workers, stats) -> Scores:
    return _inverted_minmax([len(w.waiting) for w in workers])


def kv_utilization(ctx, request, workers, stats) -> Scores:
    # (the blocks held now: mid-batch, the simulator's fast mode counts the iterations run since the batch began)
    used = ctx.kv_blocks_used
    return [1.0 - used(w) / w.num_kv_blocks if w.num_kv_blocks < UNLIMITED_KV_BLOCKS else 1.0 for w in workers]


def active_requests(ctx, request, workers, stats) -> Scores:
    return _inverted_minmax([len(w.running) for w in workers])


def work_tokens(w) -> int:
    """Tokens still to compute on a replica: remaining prefill plus expected output. The queue's part is
    kept by the queue (`controlplane.waiting_queue`): an overloaded replica's queue is not walked at
    every arrival; the running requests (at most ``max_num_seqs``) are."""
    waiting = w.waiting
    if type(waiting) is WaitingQueue:
        total = waiting.remaining_prefill_tokens + waiting.remaining_output_tokens
    else:
        total = 0
        for r in waiting:
            total += r.remaining_prefill_tokens + r.max_output_tokens - r.output_tokens
    for r in w.running:
        total += r.remaining_prefill_tokens + r.max_output_tokens - r.output_tokens
    return total


def estimated_work(ctx, request, workers, stats) -> Scores:
    # the work left as of now (`PolicyContext.batch_progress`): in the simulator's fast mode a running batch of many
    # iterations has done part of its requests' work, which the core applies at its end; the exact mode has applied it
    speeds = stats.relative_speeds(workers)
    progress = ctx.batch_progress
    return _inverted_minmax([(work_tokens(w) - progress(w)[0]) / s for w, s in zip(workers, speeds)])


def session_affinity(ctx, request, workers, stats) -> Scores:
    key = session_key(request)
    last = stats.sessions.get(key) if key is not None else None
    return [1.0 if w.worker_id == last else 0.0 for w in workers]


def speed(ctx, request, workers, stats) -> Scores:
    return stats.relative_speeds(workers)


#: The scorers that read a replica's measured speed (`ReplicaStats.relative_speeds`).
SPEED_SCORERS = frozenset({"estimated-work", "speed"})

SCORERS: dict[str, Callable[..., Scores]] = {
    "prefix-cache-hit": prefix_cache_hit,
    "queue-depth": queue_depth,
    "kv-utilization": kv_utilization,
    "active-requests": active_requests,
    "estimated-work": estimated_work,
    "session-affinity": session_affinity,
    "speed": speed,
}
