"""The SimPy driver: replays a trace through the unchanged control-plane core.

SimPy's environment is the run's clock. Arrivals come from the trace (streamed), ticks from a periodic timer, and
simulated workers turn each batch into a duration with their model's latency model. A decode batch that may run many
iterations is one timeout, cut short at the next iteration boundary when the core interrupts it, so events grow with
batches, not tokens. Every timer is a plain SimPy ``Timeout`` whose value says what fired and whose only callback is a
bound method: no generator processes or closures on the hot path. The next arrival and the next tick are kept beside
SimPy's heap (`SimDriver._next_beside`), not pushed and popped as timeouts. Decode runs of Vidur's profile model are
priced in constant steps (``SteppedDecode``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from heapq import heappop, heappush
from typing import Any

import numpy as np
import simpy
from simpy.events import NORMAL, Timeout

from controlplane import actions as act
from controlplane import events as ev
from controlplane.core import ControlPlane
from controlplane.types import Request
from sim.guardian_pool import SimGuardianPool
from sim.run_gc import run_objects_only_for_gc
from sim.latency.base import IterationShape, LatencyModel
from sim.running_batch import RunningBatch, completed, done_by, iterations_done, next_boundary
from sim.stepped_decode import SteppedDecode, steps_total
from sim.traces.record import TraceRequest

#: Ticks with nothing running after the trace ended before the run gives up on what is left.
STALL_TICKS = 3

_sum = np.add.reduce


def request_from_trace(t: TraceRequest) -> Request:
    return Request(t.request_id, t.arrival_s, t.prompt_tokens, t.output_tokens, t.model, t.tenant, t.priority,
                   t.prompt, t.hash_ids, t.hash_block_tokens, t.params)


class SimDriver:
    """Moves events from the trace and simulated workers into the core, and actions out."""

    __slots__ = (  # over 29 attributes, CPython 3.11 gives an instance a dict: see `ControlPlane.__slots__`
        "core", "env", "latency", "cold_start_s", "config", "_tick_s", "_rng_seed", "_rng", "on_progress",
        "_running", "_timers", "_trace_done", "_started", "_trace", "_last_arrival_s", "_idle_ticks", "_done",
        "_beside", "_next_arrival", "_next_tick", "_tick_event", "num_arrived", "num_events", "num_timers",
        "_core_handle", "_worker_models", "_stepped_models", "_stepped", "guardians", "_handlers",
        "_finished", "_idle", "stop_requested",
    )

    def __init__(
        self,
        core: ControlPlane,
        latency_models: Mapping[str, LatencyModel],
        *,
        cold_start_s: Mapping[str, float],
        seed: int = 0,
        on_progress: Callable[[int, float], None] | None = None,
    ) -> None:
        self.core = core
        self.env = simpy.Environment()
        self.latency = dict(latency_models)
        self.cold_start_s = dict(cold_start_s)
        self.config = core.config
        self._tick_s = self.config.control.tick_s  # read every tick: a plain float, not a pydantic model's attribute
        self._rng_seed = [seed, 7]  # the driver's own stream: `rng`
        self._rng: np.random.Generator | None = None
        self.on_progress = on_progress
        self._running: dict[str, RunningBatch] = {}
        self._timers = 0  # pending cold starts, wakes and guardian checks
        self._trace_done = False
        self._started = False
        self._trace: Iterator[TraceRequest] | None = None
        self._last_arrival_s = float("-inf")
        self._idle_ticks = 0
        self._idle: dict[str, list[float]] = {}  # [step s, idle gap s, last end] of an idle-step profile's workers
        self._done: simpy.Event | None = None
        # The next arrival and the next tick, beside SimPy's heap (see `_next_beside`): a heap
        # entry's key (time, priority, event id) and what fires; None when none is due.
        self._beside = False
        self._next_arrival: tuple[float, int, int, TraceRequest] | None = None
        self._next_tick: tuple[float, int, int, None] | None = None
        self._tick_event = ev.Tick(0.0)  # every tick's event (see `_tick`)
        self._finished = ev.BatchFinished(0.0, "", 0)  # every batch end's event (see `_batch_done`)
        self.num_arrived = 0
        self.num_events = 0  # events handed to the core (arrivals, batch ends, ticks, ...)
        self.num_timers = 0  # SimPy timeouts scheduled
        # Set (by a Ctrl-C handler, `sim.replay`) to end the run at its next tick, as at --until: the requests
        # in flight then are recorded as such and the run keeps a whole summary.
        self.stop_requested = False
        self._core_handle = core.handle
        core.ctx.bind_kv_now(self.kv_blocks_now)  # a router's mid-batch read of KV use (see `kv_blocks_now`)
        core.ctx.bind_batch_now(self.batch_now)  # and of the iterations done: work, busy time, progress (`batch_now`)
        core.finish_actions = False  # no client to answer: the core makes no `FinishRequest` (one a request)
        self._worker_models: dict[str, LatencyModel] = {}
        self._stepped_models: dict[LatencyModel, SteppedDecode | None] = {}
        self._stepped: dict[str, SteppedDecode | None] = {}
        self.guardians = SimGuardianPool(self.config, seed=seed, after=self._after, now=lambda: self.env._now,
                                         deliver=self._guardian_verdict)
        self._handlers: dict[type, Callable[[Any], None]] = act.dispatch_table({
            act.StartBatch: self._start_batch,
            act.InterruptBatch: self._interrupt,
            act.StartWorker: self._start_worker,
            act.StopWorker: self._stop_worker,
            act.PreemptRequest: _ignore,  # simulated KV is the core's count: nothing to drop
            act.RunGuardian: self._run_guardian,
            act.WakeWorker: self._wake,
            act.FinishRequest: _ignore,
        }, "SimDriver")

    # --- running --------------------------------------------------------------------------

    def run(self, trace: Iterable[TraceRequest]) -> dict[str, Any]:
        """Replay ``trace`` (in arrival order) to the end; returns the core's summary."""
        env = self.env
        self._apply(self.core.start(warm=True))  # the initial replicas are warm (`_start_worker`)
        self._started = True
        self._done = env.event()
        self._trace = iter(trace)
        until = self.config.sim.until_s
        self._beside = until is None  # SimPy's own run (until a time) sees only its heap
        self._schedule_next_arrival()
        self._schedule_tick()
        try:
            with run_objects_only_for_gc():
                if until is None:
                    run_until(env, self._done, self)
                else:
                    env.run(until=min_event(env, self._done, until))
                self._settle_running()
                self.core.clock.now_s = env._now  # (stopped at --until or a Ctrl-C's tick, or all was done)
                if until is not None and not self.stop_requested:  # --until: answered requests' checks end now
                    self.guardians.cut_off(until)
        except KeyboardInterrupt as exc:  # a second Ctrl-C, mid-event: what is in the system still gets its row
            exc.summary = self._finish_interrupted()  # type: ignore[attr-defined]
            raise
        summary = self.core.finish()
        self.guardians.add_to(summary, self.core.known_blocks_after_reply)  # their GPU-seconds, queueing, cost
        return summary

    def _finish_interrupted(self) -> dict[str, Any] | None:
        """The run ended where a `KeyboardInterrupt` stopped it, mid-event: the requests in the system recorded as
        in flight (as at a cutoff, unsettled: a batch in progress counts what it had done when it started) and
        the summary, or None where the core, stopped mid-change, cannot end its run (the interrupt matters more)."""
        self.core.clock.now_s = self.env._now
        try:
            summary = self.core.finish()
        except Exception:  # noqa: BLE001 - the interrupt is what the caller must see
            return None
        summary["interrupted_mid_event"] = True
        return summary

    @property
    def rng(self) -> np.random.Generator:
        """The driver's own random stream, ``numpy.random.default_rng([seed, 7])``, made when first
        read (a replay that draws nothing does not import ``numpy.random``)."""
        rng = self._rng
        if rng is None:
            rng = self._rng = np.random.default_rng(self._rng_seed)
        return rng

    def _next_beside(self) -> tuple | None:
        """The earlier (by heap key) of the next arrival and the next tick kept beside SimPy's heap.

        Each is scheduled as `_after` would push it, with the heap entry's key (time, priority,
        event id: the same time arithmetic, an id from SimPy's counter at the same moment), and
        `run_until` takes whichever key is least, this one or the heap's top: the events run in
        exactly the order of a heap holding all of them (ids are unique, so keys never tie),
        without a ``Timeout`` made, pushed and popped per arrival and per tick."""
        arrival, tick = self._next_arrival, self._next_tick
        return arrival if tick is None or (arrival is not None and arrival < tick) else tick

    def _run_beside(self, entry: tuple) -> tuple | None:
        """Run the arrival or tick ``entry`` (`_next_beside`'s); returns the next one. Only an
        arrival schedules the next arrival and only a tick the next tick, so `run_until` asks
        again after one of them, not after a heap event."""
        self.env._now = entry[0]
        if entry is self._next_arrival:
            self._next_arrival = None
            self._arrived(entry[3])
        else:
            self._next_tick = None
            self._tick(None)
        arrival, tick = self._next_arrival, self._next_tick  # `_next_beside`, inlined (every arrival and tick)
        return arrival if tick is None or (arrival is not None and arrival < tick) else tick

    def _handle(self, event: Any) -> None:
        self.num_events += 1
        actions = self._core_handle(event)
        if actions:
            handlers = self._handlers
            for a in actions:
                handlers[type(a)](a)

    def _apply(self, actions: list[Any]) -> None:
        handlers = self._handlers
        for a in actions:
            handlers[type(a)](a)

    def _after(self, delay: float, fn: Callable[[Any], None], value: Any) -> Timeout:
        """Call ``fn(value)`` after ``delay`` simulated seconds: a SimPy ``Timeout`` with ``fn`` as
        its callback, made and scheduled as ``Timeout(env, delay, value)`` does (same heap entry),
        without its constructor's calls."""
        self.num_timers += 1
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        env = self.env
        t = _new_object(Timeout)
        t.env = env
        t.callbacks = [fn]
        t._value = value
        t._delay = delay
        t._ok = True
        heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), t))
        return t

    # --- arrivals and ticks ---------------------------------------------------------------

    def _schedule_next_arrival(self) -> None:
        """Handle every arrival due now; schedule a timer for the next later one."""
        env = self.env
        handle = self._handle
        progress = self.on_progress
        for t in self._trace:  # type: ignore[union-attr]
            arrival = t.arrival_s
            if arrival < self._last_arrival_s:
                raise ValueError(f"trace is not in arrival order at request {t.request_id!r}")
            self._last_arrival_s = arrival
            delay = arrival - env._now  # (SimPy's env.now is a property: a Python call per read)
            if delay > 0:
                if self._beside:
                    self._next_arrival = self._key_after(delay, t)
                else:
                    self._after(delay, self._arrive, t)
                return
            handle(ev.RequestArrived(env._now, request_from_trace(t)))
            self.num_arrived += 1
            if progress is not None and not self.num_arrived & 255:
                progress(self.num_arrived, env.now)
        self._trace_done = True
        if (ended := getattr(progress, "trace_ended", None)) is not None:  # (the callback's own end-of-trace call)
            ended(self.num_arrived, env._now)

    def _arrive(self, timer: Timeout) -> None:
        self._arrived(timer._value)

    def _arrived(self, t: TraceRequest) -> None:
        self._handle(ev.RequestArrived(self.env._now, request_from_trace(t)))
        self.num_arrived += 1
        if self.on_progress is not None and not self.num_arrived & 255:
            self.on_progress(self.num_arrived, self.env._now)
        self._schedule_next_arrival()

    def _tick(self, _timer: Timeout) -> None:
        if self.stop_requested:
            self._finish()
            return
        # One `Tick` for the run, its time set here (~1,500 instructions less a tick): the core keeps and emits none.
        self._tick_event.time_s = self.env._now
        self._handle(self._tick_event)
        if self.on_progress is not None and (self._trace_done or not int(self.env._now) % 60):  # the clock: each
            self.on_progress(self.num_arrived, self.env._now)  # simulated minute (idle gaps), each tick as it drains
        if self._trace_done:
            if self.core.num_active == 0 and not self.guardians.num_pending:  # async verdicts count too
                self._finish()
                return
            self._idle_ticks = self._idle_ticks + 1 if not self._running and not self._timers else 0
            if self._idle_ticks >= STALL_TICKS:
                self._finish()  # what is left cannot progress; finish() records it as in flight
                return
        if self._beside:  # `_schedule_tick` and `_key_after`, inlined (every tick)
            self.num_timers += 1
            env = self.env
            self._next_tick = (env._now + self._tick_s, NORMAL, next(env._eid), None)
        else:
            self._after(self._tick_s, self._tick, None)

    def _schedule_tick(self) -> None:
        if self._beside:
            self._next_tick = self._key_after(self._tick_s, None)  # tick_s > 0: the config says so
        else:
            self._after(self._tick_s, self._tick, None)

    def _key_after(self, delay: float, value: Any) -> tuple[float, int, int, Any]:
        """The heap key `_after` would push for a timer ``delay`` (> 0) from now, with what it
        carries: the next arrival or tick kept beside the heap (see `_next_beside`)."""
        self.num_timers += 1
        env = self.env
        return (env._now + delay, NORMAL, next(env._eid), value)

    def _finish(self) -> None:
        if self._done is not None and not self._done.triggered:
            self._done.succeed()

    # --- workers --------------------------------------------------------------------------

    def _model_of(self, wid: str) -> LatencyModel:
        model = self._worker_models.get(wid)
        if model is None:
            model = self._worker_models[wid] = self.latency[self.core.workers[wid].model]
            if model not in self._stepped_models:
                self._stepped_models[model] = SteppedDecode.for_model(model)
            self._stepped[wid] = self._stepped_models[model]
            if (extra := getattr(model, "idle_prefill_extra_s", 0.0)) > 0:
                self._idle[wid] = [extra, model.idle_gap_s, float("-inf")]
        return model

    def _start_batch(self, a: act.StartBatch) -> None:
        b = a.batch
        wid = b.worker_id
        model = self._worker_models.get(wid) or self._model_of(wid)
        rb = _new_object(RunningBatch)
        rb.batch, rb.start_s, rb.first_s = b, self.env._now, 0.0
        rb.durations = rb.ends_s = rb.steps = None  # (`timer` is set below, before anything reads it)
        self._running[wid] = rb
        if b.prefill:
            stepped = self._stepped.get(wid)
            if stepped is not None and len(b.prefill) == 1 and not b.decode:
                r, n = b.prefill[0]
                first = stepped.prefill_s(n, r.num_computed_tokens)
            else:
                first = model.iteration_s(IterationShape(
                    [n for _, n in b.prefill],
                    [r.num_computed_tokens for r, _ in b.prefill],
                    [r.num_computed_tokens + r.output_tokens - r.recompute_tokens for r in b.decode],
                ))
            if self._idle and (idle := self._idle.get(wid)) is not None and rb.start_s - idle[2] >= idle[1]:
                first += idle[0]  # a prefill on a worker that was idle: the live path's wake-up
            if b.max_iterations == 1:
                rb.timer = self._after(first, self._batch_done, (wid, 1, first))
                return
            # Then decodes of `then_decode`, with the KV context the first iteration left.
            grown = {r: n + 1 for r, n in b.prefill}  # requests hash by identity
            for r in b.decode:
                grown[r] = 1
            rb.first_s = first
            if stepped is not None:  # the steps need the contexts' sum only (as a decode-only batch's, below)
                held = 0
                for r in b.then_decode:
                    held += r.num_computed_tokens + r.output_tokens - r.recompute_tokens + grown.get(r, 0)
                rb.steps = steps = stepped.steps(len(b.then_decode), held, b.max_iterations - 1)
                total = first + steps_total(steps)
            else:
                ctx = [r.num_computed_tokens + r.output_tokens - r.recompute_tokens + grown.get(r, 0)
                       for r in b.then_decode]
                total = first + self._price_decode(rb, model, ctx, b.max_iterations - 1)
        else:
            stepped = self._stepped.get(wid)
            if stepped is not None and b.max_iterations > 1:  # the steps need the contexts' sum only
                held = 0
                for r in b.decode:
                    held += r.num_computed_tokens + r.output_tokens - r.recompute_tokens
                rb.steps = steps = stepped.steps(len(b.decode), held, b.max_iterations)
                total = steps_total(steps)
            else:
                ctx = [r.num_computed_tokens + r.output_tokens - r.recompute_tokens for r in b.decode]
                if b.max_iterations == 1:
                    total = model.iteration_s(IterationShape((), (), ctx))
                else:
                    total = self._price_decode(rb, model, ctx, b.max_iterations)
        rb.timer = self._after(total, self._batch_done, (wid, b.max_iterations, total))

    @staticmethod
    def _price_decode(rb: RunningBatch, model: LatencyModel, ctx: list[int], n: int) -> float:
        """Seconds of ``n`` decode iterations from contexts ``ctx``, a model without steps; kept for interrupts."""
        rb.durations = durations = model.decode_run_s(ctx, n)
        return float(_sum(durations))

    def _interrupt(self, a: act.InterruptBatch) -> None:
        rb = self._running.get(a.worker_id)
        if rb is None or (rb.durations is None and rb.steps is None):
            return
        elapsed = self.env._now - rb.start_s
        k, end = next_boundary(rb, elapsed)
        if k >= rb.batch.max_iterations:
            return  # it ends at its last iteration anyway
        rb.timer.callbacks.clear()  # superseded: its end is never delivered
        rb.timer = self._after(end - elapsed, self._batch_done, (a.worker_id, k, end))

    def kv_blocks_now(self, w: Any) -> int:
        """KV blocks worker ``w``'s running requests hold now (``PolicyContext.kv_blocks_used``): while a
        multi-iteration batch runs, ``w.num_kv_blocks_used`` is its start's count, and the iterations it finished
        by now are added (`KVCacheManager.blocks_after`), as the exact mode's one-iteration batches counted them."""
        rb = self._running.get(w.worker_id)
        if rb is None or (rb.durations is None and rb.steps is None):
            return w.num_kv_blocks_used
        k = iterations_done(rb, self.env._now)
        return self.core.kv.blocks_after(w, rb.batch, k) if k else w.num_kv_blocks_used

    def batch_now(self, w: Any) -> tuple[Any, int, float, float | None] | None:
        """(batch, k, busy seconds, first_end_s) of worker ``w``'s running multi-iteration batch, the k >= 1 iterations
        of it finished by now, which the core applies at its end and the exact mode's one-iteration batches applied
        each iteration (`PolicyContext.batch_now`: a router's expected wait, `ReadinessGate`, reads a replica's
        remaining work and busy seconds; admission its requests' progress); None when none finished yet."""
        rb = self._running.get(w.worker_id)
        if rb is None or (rb.durations is None and rb.steps is None):
            return None
        k, end = done_by(rb, self.env._now)
        return (rb.batch, k, end, rb.start_s + rb.first_s if rb.first_s else None) if k else None

    def _settle_running(self) -> None:
        """The run stops (``--until``, a Ctrl-C's tick): a multi-iteration batch still running has its iterations
        finished by now applied (`ControlPlane.settle_batch`), as the exact mode's one-iteration batches were."""
        for wid, rb in list(self._running.items()):
            if rb.durations is None and rb.steps is None:
                continue  # one iteration: it ends after now
            k, end = completed(rb, self.env._now - rb.start_s)
            if k:
                first = rb.first_s
                del self._running[wid]
                self.core.settle_batch(ev.BatchFinished(rb.start_s + end, wid, rb.batch.batch_id, k, busy_s=end,
                                                        first_end_s=rb.start_s + first if first and k > 1 else None))

    def _batch_done(self, timer: Timeout) -> None:
        wid, iterations, busy_s = timer._value
        rb = self._running.get(wid)
        if rb is None or rb.timer is not timer:
            return  # the worker stopped meanwhile
        del self._running[wid]
        if self._idle and (idle := self._idle.get(wid)) is not None:
            idle[2] = self.env._now
        first_end = rb.start_s + rb.first_s if rb.first_s and iterations > 1 else None
        # One `BatchFinished` for the run, its fields set here, as the tick's `Tick` (the core keeps and emits none,
        # and handles no other batch end inside this one): no event made per batch (~2,000 instructions).
        e = self._finished
        e.time_s, e.worker_id, e.batch_id, e.num_iterations, e.busy_s, e.first_end_s = (
            self.env._now, wid, rb.batch.batch_id, iterations, busy_s, first_end)
        self._handle(e)

    def _start_worker(self, a: act.StartWorker) -> None:
        if not self._started:  # the initial replicas are warm: ready (memory planned) before the first arrival
            self._handle(ev.WorkerReady(self.env._now, a.worker_id))
            return
        self._timers += 1
        self._after(self.cold_start_s.get(a.model, 0.0), self._timer_event, (ev.WorkerReady, a.worker_id))

    def _stop_worker(self, a: act.StopWorker) -> None:
        self._running.pop(a.worker_id, None)
        self._worker_models.pop(a.worker_id, None)
        self._stepped.pop(a.worker_id, None)
        self._handle(ev.WorkerStopped(self.env._now, a.worker_id))

    def _run_guardian(self, a: act.RunGuardian) -> None:
        self._timers += 1  # until its verdict: guardian replicas and queues in sim.guardian_pool
        self.guardians.submit(a)

    def _guardian_verdict(self, rid: str, verdict: str, guardian: str, score: float | None, reason: str | None,
                          stage: str) -> None:
        self._timers -= 1
        self._handle(ev.GuardianFinished(self.env._now, rid, verdict, guardian, score, reason, stage))

    def _wake(self, a: act.WakeWorker) -> None:
        self._timers += 1
        self._after(max(0.0, a.at_s - self.env._now), self._timer_event, (ev.WorkerWake, a.worker_id))

    def _timer_event(self, timer: Timeout) -> None:
        event_type, *args = timer._value
        self._timers -= 1
        self._handle(event_type(self.env._now, *args))


def _ignore(_a: Any) -> None:
    pass


_new_object = object.__new__  # a Timeout or a RunningBatch without its constructor's calls


def run_until(env: simpy.Environment, done: simpy.Event, driver: SimDriver | None = None) -> None:
    """``env.run(until=done)``, the same events in the same order, without a ``step()`` call
    per event: pop the next event, run its callbacks, stop once ``done`` has been processed.
    With a ``driver``, its next arrival and next tick, kept beside the heap, run in their turn
    (`SimDriver._next_beside`)."""
    queue = env._queue
    beside = None if driver is None else driver._next_beside()
    while True:
        if beside is not None and (not queue or beside < queue[0]):
            beside = driver._run_beside(beside)  # type: ignore[union-attr]
            continue
        if not queue:
            raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {done}')
        env._now, _, _, event = heappop(queue)
        callbacks, event.callbacks = event.callbacks, None
        for callback in callbacks:
            callback(event)
        if event is done:
            return
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)  # as Environment.step: a failed event ends the run
            exc.__cause__ = event._value
            raise exc


def min_event(env: simpy.Environment, event: simpy.Event, until_s: float) -> simpy.Event:
    """An event that fires when ``event`` does or at ``until_s``, whichever is first."""
    return env.any_of([event, env.timeout(max(0.0, until_s - env.now))])
