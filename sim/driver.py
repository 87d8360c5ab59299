"""The SimPy driver: replays a trace through the unchanged control-plane core.

SimPy's environment is the run's clock. Arrivals come from the trace (streamed), ticks from
a periodic process, and simulated workers turn each batch into a duration with their model's
latency model. A decode batch that may run many iterations is one timeout, cut short at the
next iteration boundary when the core interrupts it, so events grow with batches, not tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from controlplane import actions as act
from controlplane import events as ev
from controlplane.core import ControlPlane
from controlplane.types import Batch, Request
from sim.latency.base import IterationShape, LatencyModel
from sim.traces.record import TraceRequest

#: Ticks with nothing running after the trace ended before the run gives up on what is left.
STALL_TICKS = 3


def request_from_trace(t: TraceRequest) -> Request:
    return Request(
        request_id=t.request_id,
        arrival_s=t.arrival_s,
        prompt_tokens=t.prompt_tokens,
        max_output_tokens=t.output_tokens,
        model=t.model,
        tenant=t.tenant,
        priority=t.priority,
        prompt=t.prompt,
        hash_ids=t.hash_ids,
        hash_block_tokens=t.hash_block_tokens,
        params=t.params,
    )


@dataclass
class _RunningBatch:
    batch: Batch
    start_s: float
    ends_s: np.ndarray | None  # cumulative iteration end offsets of a multi-iteration batch
    token: object  # identifies the timeout that currently ends this batch


class SimDriver:
    """Moves events from the trace and simulated workers into the core, and actions out."""

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
        self.rng = np.random.default_rng([seed, 7])  # the driver's own stream (guardian verdicts)
        self.on_progress = on_progress
        self._running: dict[str, _RunningBatch] = {}
        self._timers = 0  # pending cold starts, wakes and guardian checks
        self._trace_done = False
        self._started = False
        self.num_arrived = 0
        self._handlers: dict[type, Callable[[Any], None]] = {
            act.StartBatch: self._start_batch,
            act.InterruptBatch: self._interrupt,
            act.StartWorker: self._start_worker,
            act.StopWorker: self._stop_worker,
            act.RunGuardian: self._run_guardian,
            act.WakeWorker: self._wake,
            act.FinishRequest: _ignore,
        }

    # --- running --------------------------------------------------------------------------

    def run(self, trace: Iterable[TraceRequest]) -> dict[str, Any]:
        """Replay ``trace`` (in arrival order) to the end; returns the core's summary."""
        self._apply(self.core.start())
        self._started = True
        self.env.process(self._arrivals(iter(trace)))
        ticker = self.env.process(self._ticks())
        until = self.config.sim.until_s
        self.env.run(until=ticker if until is None else min_event(self.env, ticker, until))
        return self.core.finish()

    def _handle(self, event: Any) -> None:
        self._apply(self.core.handle(event))

    def _apply(self, actions: list[Any]) -> None:
        handlers = self._handlers
        for a in actions:
            handlers[type(a)](a)

    def _arrivals(self, trace: Iterable[TraceRequest]):
        env = self.env
        handle = self._handle
        progress = self.on_progress
        last = float("-inf")
        for t in trace:
            if t.arrival_s < last:
                raise ValueError(f"trace is not in arrival order at request {t.request_id!r}")
            last = t.arrival_s
            delay = t.arrival_s - env.now
            if delay > 0:
                yield env.timeout(delay)
            handle(ev.RequestArrived(env.now, request_from_trace(t)))
            self.num_arrived += 1
            if progress is not None and not self.num_arrived & 255:
                progress(self.num_arrived, env.now)
        self._trace_done = True
        if progress is not None:
            progress(self.num_arrived, env.now)

    def _ticks(self):
        env = self.env
        tick = self.config.sim.tick_s
        idle_ticks = 0
        while True:
            yield env.timeout(tick)
            self._handle(ev.Tick(env.now))
            if not self._trace_done:
                continue
            if self.core.num_active == 0:
                return
            idle_ticks = idle_ticks + 1 if not self._running and not self._timers else 0
            if idle_ticks >= STALL_TICKS:
                return  # what is left cannot progress; finish() records it as in flight

    # --- workers --------------------------------------------------------------------------

    def _start_batch(self, a: act.StartBatch) -> None:
        b = a.batch
        wid = b.worker_id
        model = self.latency[self.core.workers[wid].model]
        token = object()
        if b.prefill or b.max_iterations == 1:
            shape = IterationShape(
                prefill_chunk_tokens=[n for _, n in b.prefill],
                prefill_context_tokens=[r.num_computed_tokens for r, _ in b.prefill],
                decode_context_tokens=[r.context_tokens for r in b.decode],
            )
            duration = model.iteration_s(shape)
            self._running[wid] = _RunningBatch(b, self.env.now, None, token)
            self._after(duration, self._batch_done, wid, token, 1, duration)
            return
        ctx = np.fromiter((r.context_tokens for r in b.decode), dtype=np.int64, count=len(b.decode))
        ends = np.cumsum(model.decode_run_s(ctx, b.max_iterations))
        self._running[wid] = _RunningBatch(b, self.env.now, ends, token)
        self._after(float(ends[-1]), self._batch_done, wid, token, b.max_iterations, float(ends[-1]))

    def _interrupt(self, a: act.InterruptBatch) -> None:
        rb = self._running.get(a.worker_id)
        if rb is None or rb.ends_s is None:
            return
        elapsed = self.env.now - rb.start_s
        k = int(np.searchsorted(rb.ends_s, elapsed, side="left")) + 1  # first boundary at or after now
        if k >= len(rb.ends_s):
            return  # it ends at its last iteration anyway
        rb.token = token = object()
        end = float(rb.ends_s[k - 1])
        self._after(end - elapsed, self._batch_done, a.worker_id, token, k, end)

    def _batch_done(self, wid: str, token: object, iterations: int, busy_s: float) -> None:
        rb = self._running.get(wid)
        if rb is None or rb.token is not token:
            return  # superseded by an interrupt
        del self._running[wid]
        self._handle(ev.BatchFinished(self.env.now, wid, rb.batch.batch_id, iterations, busy_s=busy_s))

    def _start_worker(self, a: act.StartWorker) -> None:
        if not self._started:  # the initial replicas are warm
            self._handle_later(0.0, ev.WorkerReady, a.worker_id)
            return
        self._timers += 1
        self._handle_later(self.cold_start_s.get(a.model, 0.0), ev.WorkerReady, a.worker_id)

    def _stop_worker(self, a: act.StopWorker) -> None:
        self._running.pop(a.worker_id, None)
        self._handle(ev.WorkerStopped(self.env.now, a.worker_id))

    def _run_guardian(self, a: act.RunGuardian) -> None:
        verdict = "block" if self.rng.random() < self.config.sim.guardian_block_rate else "pass"
        self._timers += 1
        self._after(self.config.sim.guardian_latency_s, self._timer_event,
                    ev.GuardianFinished, a.request.request_id, verdict)

    def _wake(self, a: act.WakeWorker) -> None:
        self._timers += 1
        self._handle_later(max(0.0, a.at_s - self.env.now), ev.WorkerWake, a.worker_id)

    # --- timers ---------------------------------------------------------------------------

    def _after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        t = self.env.timeout(delay)
        t.callbacks.append(lambda _e: fn(*args))

    def _handle_later(self, delay: float, event_type: type, *args: Any) -> None:
        if self._started:
            self._after(delay, self._timer_event, event_type, *args)
        else:
            self._after(delay, lambda *a: self._handle(event_type(self.env.now, *a)), *args)

    def _timer_event(self, event_type: type, *args: Any) -> None:
        self._timers -= 1
        self._handle(event_type(self.env.now, *args))


def _ignore(_a: Any) -> None:
    pass


def min_event(env: simpy.Environment, process: simpy.Process, until_s: float) -> simpy.Event:
    """An event that fires when ``process`` ends or at ``until_s``, whichever is first."""
    return env.any_of([process, env.timeout(max(0.0, until_s - env.now))])
