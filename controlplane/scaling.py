"""What an autoscaler sees: one model's replicas, queue, arrivals and recent latencies, fresh at
every tick (`ScalingContext`), and the window of recent latencies it is computed from.

The core builds a `ScalingContext` per model at every `Tick` and hands it to `cp_scale`; the
same numbers become the tick's metric samples. Nothing here reads a clock: the window is in
run time.
"""

from __future__ import annotations

import inspect
import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


from controlplane.decisions import ScaleDecision
from controlplane.quantiles import ranked_quantile, short_percentile
from controlplane.types import UNLIMITED_KV_BLOCKS, Request, Worker, WorkerState

__all__ = ["LATENCY_KINDS", "IterationEstimate", "RecentLatencies", "ScalingContext", "SteadyScaleDecision",
           "build_scaling_context", "count_queued", "takes_prefill_context"]

#: One engine iteration's expected duration (s) on one replica of a model, from its batch:
#: ``(prefill_tokens, decode_seqs, decode_context_tokens[, prefill_context_tokens])`` (the decodes'
#: mean KV length). The simulator binds the run's latency model (`ControlLoop.set_iteration_estimator`);
#: a live driver may bind a calibrated profile. Planners use it to turn SLO targets into replicas.
#: ``prefill_context_tokens`` (optional, default 0: the three-argument numbers exactly) is what the
#: prefilling request already holds in its KV before this chunk: a chunk of a long prompt attends over
#: all of it, so only an estimate that takes it can price one chunk of a chunked prefill. An estimate
#: may take three arguments only; `takes_prefill_context` says which kind is bound. It must be a pure
#: function of its arguments: planners remember its answers (`slo-planner`'s per-model state does); an
#: estimate whose answers change (a profile recalibrated in place) must be bound again as a new object.
IterationEstimate = Callable[..., float]


def takes_prefill_context(estimate: IterationEstimate | None) -> bool:
    """Whether ``estimate`` takes a fourth argument, the prefill chunk's context (`IterationEstimate`):
    a signature with four or more positional parameters, or ``*args``. False for None, and for a callable
    whose signature cannot be read."""
    if estimate is None:
        return False
    try:
        params = inspect.signature(estimate).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 4


#: Latencies a `RecentLatencies` window keeps, per completed request.
LATENCY_KINDS = ("ttft", "tpot", "e2e", "queue")


class RecentLatencies:
    """One model's requests that ended within the last ``window_s`` of run time: the latencies of
    the completed ones, and when requests were rejected or failed (the error rate).

    Appending is O(1) per request until a policy asks for a latency's percentile; from then on that latency's
    values in the window are also kept sorted (an insertion and a removal per request, each a bisection and a
    move in C), so a planner that asks at every tick reads its percentile at once instead of sorting the window
    again (the answer is numpy's linear method, bit for bit, as `short_percentile` gives it). A latency that ever
    holds a NaN, an infinity or a -0.0 is not kept sorted: it is sorted when asked, as before.
    """

    __slots__ = ("window_s", "_items", "_errors", "_ranked", "_unranked")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        # (finish_s, ttft, tpot, e2e, queue); tpot and queue may be None (one-token output, ...)
        self._items: deque[tuple[float, float | None, float | None, float | None, float | None]] = deque()
        self._errors: deque[float] = deque()  # when requests were rejected or failed
        self._ranked: dict[int, list[float]] = {}  # column -> its values in the window, sorted (once asked for)
        self._unranked: set[int] = set()  # columns that held a NaN, an infinity or a -0.0: sorted when asked

    def add(self, finish_s: float, ttft_s: float | None = None, e2e_s: float | None = None,
            queue_s: float | None = None, tpot_s: float | None = None) -> None:
        item = (finish_s, ttft_s, tpot_s, e2e_s, queue_s)
        self._items.append(item)
        if self._ranked:
            dropped = None
            for col, ranked in self._ranked.items():
                v = item[col]
                if v is not None:
                    if _ambiguous(v):
                        dropped = (dropped or []) + [col]
                    else:
                        insort(ranked, v)
            for col in dropped or ():
                del self._ranked[col]
                self._unranked.add(col)

    def add_error(self, time_s: float) -> None:
        self._errors.append(time_s)

    def prune(self, now_s: float) -> None:
        """Forget requests that ended more than ``window_s`` before ``now_s``."""
        oldest = now_s - self.window_s
        items, errors, ranked = self._items, self._errors, self._ranked
        while items and items[0][0] < oldest:
            item = items.popleft()
            for col, values in ranked.items():
                v = item[col]
                if v is not None:
                    del values[bisect_left(values, v)]
        while errors and errors[0] < oldest:
            errors.popleft()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def error_rate(self) -> float:
        """Rejected or failed over all requests that ended in the window (0 when none did)."""
        n = len(self._items) + len(self._errors)
        return len(self._errors) / n if n else 0.0

    def percentile(self, kind: str, q: float) -> float | None:
        """The ``q``-th percentile (0-100) of ``kind`` (one of `LATENCY_KINDS`) over the completed
        requests that have one; None if none has."""
        if kind not in LATENCY_KINDS:
            raise ValueError(f"unknown latency {kind!r}; one of {', '.join(LATENCY_KINDS)}")
        col = 1 + LATENCY_KINDS.index(kind)
        ranked = self._ranked.get(col)
        if ranked is None:
            values = [it[col] for it in self._items if it[col] is not None]
            if not 0 <= q <= 100 or col in self._unranked or any(map(_ambiguous, values)):
                if 0 <= q <= 100:
                    self._unranked.add(col)
                return short_percentile(values, q) if values else None  # (a q out of range: numpy's error)
            ranked = self._ranked[col] = sorted(values)  # kept sorted from now on
        elif not 0 <= q <= 100:
            return short_percentile(ranked, q) if ranked else None  # (numpy's error, as for a walked window)
        return ranked_quantile(ranked, q / 100) if ranked else None  # (q / 100: numpy's own division)


def _ambiguous(v: float) -> bool:
    """A NaN, an infinity or a -0.0: where `short_percentile` may hand over to numpy, whose partition decides the
    place of a NaN or of one of two equal zeros (never a latency; kept apart rather than reasoned about)."""
    return not math.isfinite(v) or (v == 0.0 and math.copysign(1.0, v) < 0)


@dataclass(frozen=True, slots=True)
class ScalingContext:
    """One model's state at one tick, for `cp_scale`. Counts are replicas or requests now."""

    model: str
    now_s: float
    configured_replicas: int  # the deployment's `replicas`
    num_ready: int
    num_starting: int
    num_draining: int
    num_queued: int  # waiting for a batch: on its workers' queues plus not yet routed
    num_unrouted: int  # admitted but waiting for a worker of this model to exist or be ready
    num_running: int  # in a running batch on its workers
    arrivals_per_s: float  # this model's arrivals over the last tick
    kv_utilization: float  # used / total KV blocks over its workers with a KV budget (0 without)
    workers: tuple[Worker, ...]  # its alive workers: starting, ready, draining
    recent: RecentLatencies = field(repr=False, compare=False)
    # the run's latency model for this model's replicas (None: not known, e.g. live without a profile)
    iteration_s: IterationEstimate | None = field(default=None, repr=False, compare=False)
    cold_start_s: float | None = None  # seconds from a scale-up to a ready replica (None: not known)
    # a worker's KV blocks held now, where a driver counts them mid-batch (`PolicyContext.kv_blocks_used`)
    kv_blocks_now: Callable[[Worker], int] | None = field(default=None, repr=False, compare=False)
    # the run time at which the core last applied a scale decision of this model, starting or draining replicas
    # (None: none yet). A decision the core did not apply (a scale-up while the last one is unplaced) leaves it, and
    # a scale-up none of whose replicas the pool placed takes it back to the change before (`_scale_up_settled`):
    # a rule that counts from changes (`scaling-rules`' cooldown) reads here which of its decisions took effect.
    last_scale_s: float | None = None

    @property
    def num_current(self) -> int:
        """Replicas that count toward the target: ready plus starting (draining ones are leaving)."""
        return self.num_ready + self.num_starting

    @property
    def window_s(self) -> float:
        return self.recent.window_s

    @property
    def num_recent(self) -> int:
        """Requests completed within the latency window."""
        return len(self.recent)

    @property
    def error_rate(self) -> float:
        """Share of the requests that ended within the window that were rejected or failed."""
        return self.recent.error_rate()

    def kv_utilization_now(self) -> float:
        """``kv_utilization`` as of now. ``kv_utilization`` counts each worker's KV blocks at its last batch
        boundary; in the simulator's fast mode a batch runs many decode iterations, each adding tokens, and this
        adds the iterations finished by now (as the exact mode, one batch an iteration, counts them). Computed
        when called (a pass over the workers' running requests): what a policy that reads KV use calls."""
        count = self.kv_blocks_now
        if count is None:
            return self.kv_utilization
        blocks = used = 0
        for w in self.workers:
            if w.num_kv_blocks < UNLIMITED_KV_BLOCKS:
                blocks += w.num_kv_blocks
                used += count(w)
        return used / blocks if blocks else 0.0

    def latency_percentile(self, kind: str, q: float) -> float | None:
        """The ``q``-th percentile of "ttft", "tpot", "e2e" or "queue" over the window; None without requests.
        ``q`` is a percentile on numpy's 0-100 scale (90: p90), not a share: a ``q`` between 0 and 1 (0.9, 0.99)
        raises ValueError rather than return about the 1st percentile (``q`` 1 is p1, 0 the minimum)."""
        if 0 < q < 1:
            raise ValueError(f"latency_percentile's q is a percentile from 0 to 100 (90 for p90), not a share: "
                             f"got {q!r}; for p{q * 100:g} pass {q * 100:g}")
        return self.recent.percentile(kind, q)


class SteadyScaleDecision(ScaleDecision):
    """A decision to stay (target: the ready and starting replicas, no advisory decisions) that holds until one of
    the model's workers is added, removed or changes state: until then the policy gives the same answer at every
    tick, whatever the time, queue, arrivals and latencies (`fixed-replicas` at its configured count; not while
    it backs off, a stay that turns into a restart with time alone). Its fields are a `ScaleDecision`'s.

    When the one answerer of ``cp_scale`` (one plugin, or the fallback, and no wrapper:
    `PolicyCalls.single_answer`) gives one, the core asks again only after a worker changes (or the plugins are
    bound again): a tick that takes no metric sample meanwhile builds no `ScalingContext` and asks nothing
    (`ControlLoop._on_tick`)."""

    __slots__ = ()


# --- fast construction -------------------------------------------------------------------
# The core builds one ScalingContext per model at every tick. A frozen dataclass __init__ goes
# through object.__setattr__ once per field (about 2.5 us for these 16), and each slot's
# descriptor called directly is still a call per field (~530 instructions each: ~8,000 of a
# tick's ~51,000). `build_scaling_context` fills an instance of `_Filling` instead, a class with
# the same slots and no frozen __setattr__ (plain slot stores), then makes it a ScalingContext by
# assigning __class__ (Python allows it between classes of the same layout). The result is an
# ordinary ScalingContext, equal to one built by the constructor; a field added to the class and
# not set below is an unset slot, which the tests read (they fail).


class _Filling:
    """ScalingContext's slots, writable: what `build_scaling_context` fills before it becomes one."""

    __slots__ = ScalingContext.__slots__


_new = object.__new__
_READY, _STARTING, _DRAINING = WorkerState.READY, WorkerState.STARTING, WorkerState.DRAINING


def build_scaling_context(
    model: str,
    now_s: float,
    configured_replicas: int,
    workers: Iterable[Worker],
    unrouted: Iterable[Request],
    arrivals: int,
    tick_s: float,
    recent: RecentLatencies,
    iteration_s: IterationEstimate | None = None,
    cold_start_s: float | None = None,
    kv_blocks_now: Callable[[Worker], int] | None = None,
    last_scale_s: float | None = None,
) -> ScalingContext:
    """Count one model's replicas, queue and KV use in one pass (this runs every tick; the core
    passes the arguments by position, in this order: a call with ten keywords is not inlined)."""
    ready = starting = draining = queued = running = blocks = used = 0
    alive = []
    for w in workers:
        state = w.state
        if state is _READY:
            ready += 1
        elif state is _STARTING:
            starting += 1
        elif state is _DRAINING:
            draining += 1
        else:
            continue
        alive.append(w)
        queued += len(w.waiting)
        running += len(w.running)
        if w.num_kv_blocks < UNLIMITED_KV_BLOCKS:  # Worker.has_kv_budget, without the property's call
            blocks += w.num_kv_blocks
            used += w.num_kv_blocks_used
    num_unrouted = sum(1 for r in unrouted if r.model == model) if unrouted else 0
    recent.prune(now_s)
    s = _new(_Filling)
    s.model = model
    s.now_s = now_s
    s.configured_replicas = configured_replicas
    s.num_ready = ready
    s.num_starting = starting
    s.num_draining = draining
    s.num_queued = queued + num_unrouted
    s.num_unrouted = num_unrouted
    s.num_running = running
    s.arrivals_per_s = arrivals / tick_s
    s.kv_utilization = used / blocks if blocks else 0.0
    s.workers = tuple(alive)
    s.recent = recent
    s.iteration_s = iteration_s
    s.cold_start_s = cold_start_s
    s.kv_blocks_now = kv_blocks_now
    s.last_scale_s = last_scale_s
    s.__class__ = ScalingContext
    return s


def count_queued(model: str, workers: Iterable[Worker], unrouted: Iterable[Request]) -> int:
    """`build_scaling_context`'s ``num_queued`` alone: the alive workers' waiting requests and the model's unrouted
    ones (a tick that builds no context still sets the queue gauge)."""
    queued = 0
    for w in workers:
        state = w.state
        if state is _READY or state is _STARTING or state is _DRAINING:
            queued += len(w.waiting)
    return queued + sum(1 for r in unrouted if r.model == model) if unrouted else queued
