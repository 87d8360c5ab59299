"""Expected wait on a replica, for the routers that weigh load: cold starts count as waiting.

A *starting* replica accepts requests (they wait in its queue until it is ready), and by queue
length it looks idle. Its expected wait is the rest of its cold start plus the work already
queued on it; a ready replica's is its queued work. ``ReadinessGate.pool`` keeps the ready
replicas, and a starting one only when every ready replica is more backed up than it (its
expected wait is strictly smaller than theirs); the routers then choose within that pool.

- Time until ready: the deployment's cold start (``cluster.models[].cold_start_s``, else from
  the weights' size, as the core starts replicas) after the replica's ``started_s``, less the
  time since; 0 once that has passed (a replica late to start is not known to be later still).
  Where the driver says when a replica will be ready (``Worker.ready_by_s``: the simulator's
  initial replicas are warm, ready as the run starts) that time counts instead, and a starting
  replica whose time has come counts as ready.
- Queued work: the replica's remaining prefill plus expected output tokens
  (`plugins.scorers.work_tokens`) over its speed: the candidates' pooled tokens per busy second
  (of their completed requests) times the replica's relative speed (`plugins.scorers.BatchTimes`:
  its batches' time against the model's fit, so that a busy replica, whose tokens per busy second
  are high because its batches are big, does not read faster than an idle twin). A replica not
  measured yet (a starting one) takes the pooled speed. Before any request of the model has
  finished no speed is known, and a ready replica's queue counts as no wait: ready replicas win.
  The work left and the busy seconds are as of now (``ctx.batch_progress``: the simulator's fast mode
  applies a batch of many iterations at its end; the exact mode, one iteration a batch, each iteration).
- Under a batcher that serves by priority (``ctx.serves_by_priority``: the batching plugin the core asks first
  declares ``serves_by_priority = True``, as ``priority-continuous-batching`` does), a request's queued work is the
  running requests' plus the queued requests' at its priority or above (`work_ahead`): it overtakes the lower ones,
  so a ready replica backed up with batch work is not a longer wait for an interactive request than a cold start.

Everything comes from the run (``ctx.now_s``, the workers, the config), so simulation and live
route the same way.

A router that passes the run's events to ``observe`` (the built-in ones that use the gate do:
``least-loaded``, ``weighted-router``, ``power-of-two``, ``prefix-only``, ``prefix-affinity``) lets the gate
answer "is any replica of this model starting?" without looking at each candidate: it keeps,
per model, the replicas that accept requests and those starting, seeded from ``ctx.workers``
at its first question and then kept from the `WorkerChanged` events. It trusts that only while
its count of accepting replicas equals the candidates' and it holds the last (newest) of them;
otherwise (a router that passes no
events, hand-made workers) it looks at each candidate's state as before. Same answers either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.events import WorkerChanged
from controlplane.hardware.memory_plan import DEFAULT_COLD_START_S, deployment_cold_start_s
from controlplane.types import Worker, WorkerState

from plugins.scorers import ReplicaStats, work_tokens

__all__ = ["ReadinessGate", "left_out_note", "work_ahead"]


def left_out_note(left_out: int, speed_known: bool) -> str:
    """What a route reason says of the ``left_out`` starting replicas a `ReadinessGate.pool` left out: their expected
    wait was above a ready replica's, or, before any request of the model finished (no speed known), a ready
    replica's queue counted as no wait and no wait was weighed."""
    why = "expected wait above a ready replica's" if speed_known else "no speed known yet: ready replicas win"
    return f"; {left_out} starting replica{'s' if left_out > 1 else ''} left out ({why})"


def work_ahead(w: Worker, priority: int) -> int:
    """Tokens a request of ``priority`` waits for on ``w`` under a batcher that serves by priority: the running
    requests' (remaining prefill plus expected output, as `plugins.scorers.work_tokens`) and the queued requests'
    at ``priority`` or above. A queue of one class (the queue keeps its ``priorities``) is not walked."""
    waiting = w.waiting
    counts = getattr(waiting, "priorities", None)
    if counts is not None and all(p >= priority for p in counts):
        return work_tokens(w)  # nothing queued that it would overtake
    total = 0
    for r in w.running:
        total += r.remaining_prefill_tokens + r.max_output_tokens - r.output_tokens
    if counts is not None and all(p < priority for p in counts):
        return total  # it overtakes every queued request
    for r in waiting:
        if r.priority >= priority:
            total += r.remaining_prefill_tokens + r.max_output_tokens - r.output_tokens
    return total


class ReadinessGate:
    """Expected waits of candidate replicas, and the pool a router may choose from."""

    def __init__(self) -> None:
        self._cold_start: dict[str, float] | None = None
        #: The last `expected_waits` knew a speed (False: no request of the model had finished, queues counted as
        #: no wait), for the route reason (`left_out_note`).
        self.speed_known = True
        self._fed = False  # observe() has been given events: the sets below can be kept
        # per model, the ids of the replicas that accept requests / of those starting (None: not seeded)
        self._accepting: dict[str, set[str]] | None = None
        self._starting: dict[str, set[str]] = {}
        self._model_of: dict[str, str] = {}

    def observe(self, ctx, event) -> None:
        """Keep the accepting and starting replicas from the run's worker events."""
        if type(event) is not WorkerChanged:
            return
        self._fed = True
        if self._accepting is None:
            return  # seeded from ctx.workers at the first question, this change included
        wid, kind = event.worker_id, event.kind
        if kind == "starting":
            w = ctx.workers.get(wid)
            model = w.model if w is not None else (event.detail or {}).get("model")
            if model is None:
                return
            self._model_of[wid] = model
            self._accepting.setdefault(model, set()).add(wid)
            if w is None or self.cold(event.time_s, w):
                self._starting.setdefault(model, set()).add(wid)
            return
        model = self._model_of.get(wid)
        if model is None:
            return
        self._starting.get(model, set()).discard(wid)
        if kind != "ready":  # draining, failed, stopped: no more requests
            self._accepting.get(model, set()).discard(wid)
            del self._model_of[wid]

    def _seed(self, ctx) -> dict[str, set[str]]:
        accepting: dict[str, set[str]] = {}
        for w in ctx.workers.values():
            if w.state is WorkerState.READY or w.state is WorkerState.STARTING:
                self._model_of[w.worker_id] = w.model
                accepting.setdefault(w.model, set()).add(w.worker_id)
                if self.cold(ctx.now_s, w):
                    self._starting.setdefault(w.model, set()).add(w.worker_id)
        self._accepting = accepting
        return accepting

    def all_ready(self, ctx, workers: Sequence[Worker]) -> bool:
        """No candidate is starting: from the kept sets when they cover the candidates, else by looking."""
        if self._fed and workers:
            accepting = self._accepting if self._accepting is not None else self._seed(ctx)
            model = workers[0].model
            held = accepting.get(model, ())
            if len(held) == len(workers) and workers[-1].worker_id in held:  # the newest: a cheap spot check
                return not self._starting.get(model)
        now = ctx.now_s
        return not any(self.cold(now, w) for w in workers)

    @staticmethod
    def cold(now_s: float, w: Worker) -> bool:
        """``w`` is in its cold start at ``now_s``: starting, and not a replica its driver makes ready by then
        (the simulator's initial replicas are warm: ready as the run starts, their readiness not yet handled)."""
        return w.state is WorkerState.STARTING and (w.ready_by_s is None or w.ready_by_s > now_s)

    def cold_start_s(self, ctx, model: str) -> float:
        if self._cold_start is None:
            self._cold_start = {d.name: deployment_cold_start_s(d) for d in ctx.config.cluster.models}
        # a model the config does not list (a hand-made worker): the default cold start
        return self._cold_start.get(model, DEFAULT_COLD_START_S)

    def time_to_ready_s(self, ctx, w: Worker) -> float:
        """Seconds until a starting replica is expected ready (0 for any other state)."""
        if not self.cold(ctx.now_s, w):
            return 0.0
        ready_by = w.started_s + self.cold_start_s(ctx, w.model) if w.ready_by_s is None else w.ready_by_s
        return max(0.0, ready_by - ctx.now_s)

    @staticmethod
    def speeds(workers: Sequence[Worker], stats: ReplicaStats,
               busy_s: Sequence[float] | None = None) -> list[float | None]:
        """Each replica's tokens per busy second: the candidates' pooled tokens per busy second, times its
        relative speed against theirs (`plugins.scorers.BatchTimes`: not its own tokens per busy second, which
        grow with its load); unmeasured ones the pooled speed (None: none known). ``busy_s``: each replica's busy
        seconds now (default ``Worker.busy_s``, its count at its last batch's end)."""
        if busy_s is None:
            busy_s = [w.busy_s for w in workers]
        tokens = busy = 0.0
        for w, b in zip(workers, busy_s):
            t = stats.tokens.get(w.worker_id)
            if t and b > 0:
                tokens += t
                busy += b
        if busy <= 0:
            return [None] * len(workers)
        pooled = tokens / busy
        rel = stats.relative(workers)
        weight = sum(b for b, r in zip(busy_s, rel) if r)
        if not weight:
            return [pooled] * len(workers)
        mean = sum(r * b for b, r in zip(busy_s, rel) if r) / weight  # the pool's, busy-time weighted
        return [pooled * r / mean if r else pooled for r in rel]

    def expected_waits(self, ctx, workers: Sequence[Worker], stats: ReplicaStats, request=None) -> list[float]:
        """Seconds until ``request`` routed now could start on each replica: time to ready + queued work (under a
        batcher that serves by priority, ``ctx.serves_by_priority``, only the work at its priority or above and
        the running work: `work_ahead`; without a request, all of it).

        Work and busy seconds as of now (`PolicyContext.batch_progress`): in the simulator's fast mode a running
        batch of many iterations has done part of its requests' work, as the exact mode's one-iteration batches
        have applied it."""
        progress = [ctx.batch_progress(w) for w in workers]
        busy_s = [w.busy_s + p[1] for w, p in zip(workers, progress)]
        priority = request.priority if request is not None and getattr(ctx, "serves_by_priority", False) else None
        waits = []
        speeds = self.speeds(workers, stats, busy_s)
        self.speed_known = speeds[0] is not None if speeds else True  # (None for all or none)
        for w, speed, p in zip(workers, speeds, progress):
            work = (work_tokens(w) if priority is None else work_ahead(w, priority)) - p[0]
            queued = work / speed if speed else 0.0
            waits.append(self.time_to_ready_s(ctx, w) + queued)
        return waits

    def pool(self, ctx, workers: Sequence[Worker], stats: ReplicaStats,
             request=None) -> tuple[list[int], list[float] | None]:
        """Indices of the replicas to choose from, and the expected waits of ``request`` (None: all ready, not
        computed; `expected_waits`).

        All ready replicas; a starting one only when its expected wait is below every ready
        replica's; when none is ready, all of them.
        """
        if self.all_ready(ctx, workers):
            return list(range(len(workers))), None
        waits = self.expected_waits(ctx, workers, stats, request)
        cold = [self.cold(ctx.now_s, w) for w in workers]
        ready = [i for i, c in enumerate(cold) if not c]
        if not ready:
            return list(range(len(workers))), waits
        best_ready = min(waits[i] for i in ready)
        starting = [i for i, c in enumerate(cold) if c and waits[i] < best_ready]
        return sorted(ready + starting), waits
