"""The core's control loop: at every tick, one `ScalingContext` per model becomes the metric
samples and the autoscaler's input, and the scale decision becomes started or drained replicas.
A mixin of `controlplane.core.ControlPlane`, which owns the state these methods use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.decisions import ScaleDecision
from controlplane.hardware.memory_plan import deployment_cold_start_s
from controlplane.scaling import ScalingContext, SteadyScaleDecision, build_scaling_context, count_queued
from controlplane.types import Worker, WorkerState

__all__ = ["ControlLoop"]

_ACCEPTING = frozenset((WorkerState.READY, WorkerState.STARTING))



class ControlLoop:
    """Ticks in, metric samples and scale actions out."""

    workers: dict[str, Worker]
    _out: list[Any]
    # config.control's and the deployments' values the tick reads, as plain values (`ControlPlane.__init__`):
    # an attribute of a pydantic model is a slow read (~470 instructions each).
    _tick_s: float
    _metrics_interval_s: float
    _configured_replicas: dict[str, int]  # model -> its deployment's `replicas`
    _queue_gauges: dict[str, str]  # model -> its queue gauge's name in `gauges` ("queue:" + model)
    # model -> the `SteadyScaleDecision` its scaler gave, until a worker changes (`_workers_changed` empties it);
    # None when ``cp_scale`` has more than one answerer (`PolicyCalls.single_answer`): then it is asked every tick.
    _steady_scale: dict[str, ScaleDecision] | None
    _iteration_estimator: Callable[..., float] | None = None
    _cold_start_by_model: dict[str, float] | None = None
    _advisory_last: dict[tuple[str, str], tuple[int, bool]] | None = None  # (shadow, model) -> (last target, failing)
    _extras: dict[str, tuple[Any, tuple[Any, float | None]]] | None = None  # model -> (estimator, extras)
    # model -> when its last scale decision was applied (`ScalingContext.last_scale_s`); None until one is
    _last_scale_s: dict[str, float] | None = None
    # scale-up event (`stats.num_scale_events`' number) -> (model, its `_last_scale_s` before, the event's time),
    # until the pool placed one of its replicas or none (`_scale_up_settled`)
    _scale_up_before: dict[int, tuple[str, float | None, float]] | None = None
    _unplaced_held: dict[str, tuple[float, int]] | None = None  # model -> (its retry's time, the target held back)

    def set_iteration_estimator(self, estimate: Callable[..., float] | None) -> None:
        """Bind ``estimate(model, prefill_tokens, decode_seqs, decode_context_tokens[, prefill_context_tokens])
        -> seconds`` (`controlplane.scaling.IterationEstimate` with the model first), an
        iteration's expected duration (the simulator: its latency models), for `ScalingContext.iteration_s`."""
        self._iteration_estimator = estimate

    def _scaling_extras(self, model: str) -> tuple[Any, float | None]:
        """(the iteration estimate bound to ``model``, its cold start), made once per estimator."""
        est = self._iteration_estimator
        cached = self._extras.get(model) if self._extras is not None else None
        if cached is not None and cached[0] is est:
            return cached[1]
        if self._cold_start_by_model is None:
            self._cold_start_by_model = {m: deployment_cold_start_s(d) for m, d in self._deployments.items()}
        extras = (None if est is None else partial(est, model), self._cold_start_by_model.get(model))
        if self._extras is None:
            self._extras = {}
        self._extras[model] = (est, extras)
        return extras

    def _on_tick(self, e: ev.Tick) -> None:
        # Runs every tick (a low-rate replay has about as many ticks as requests): one pass over
        # the workers, the per-model extras bound once, the context built with its arguments by position.
        # One model (the common case) makes no dict: its arrival count is read and reset in place.
        now = e.time_s
        tick_s = self._tick_s
        arrivals = self._arrivals_since_tick
        gauges = self.gauges
        workers = self.workers.values()
        sample = 0.0  # a sample is due: the seconds since the last one (its arrival rate's window)
        # (a live tick comes a little early or late: with the interval one tick, a tick 0.999 s after the last
        # skipped its sample, half of them lost; the simulator's ticks are exact)
        interval = self._metrics_interval_s
        if now - self._last_sample_s >= interval - min(0.5 * tick_s, 0.1 * interval):
            last = self._last_sample_s
            sample = (now - last if last > float("-inf") else now) or tick_s
            self._last_sample_s = now
        steady = self._steady_scale
        if len(arrivals) == 1:
            model = self._default_model  # the one deployment: the arrivals' one key
            n = arrivals[model]
            arrivals[model] = 0
            gauges["arrivals_per_s"] = n / tick_s
            self._scale_models(now, ((model, workers, n),), sample, steady)
        else:
            self._arrivals_since_tick = dict.fromkeys(arrivals, 0)
            gauges["arrivals_per_s"] = sum(arrivals.values()) / tick_s
            by_model: dict[str, list[Worker]] = {m: [] for m in arrivals}
            for w in workers:
                by_model[w.model].append(w)
            self._scale_models(now, [(m, ws, arrivals[m]) for m, ws in by_model.items()], sample, steady)
        # The safety net: an idle worker with work is asked for a batch. Not a copy of the workers:
        # `_schedule` adds and removes none (they join in `_autoscale`, above, and leave on the driver's events).
        for w in workers:
            if not w.busy and (w.waiting or w.running):
                self._schedule(w)

    def _scale_models(self, now: float, groups: Iterable[tuple[str, Iterable[Worker], int]], sample: float,
                      steady: dict[str, ScaleDecision] | None) -> None:
        """Each model's (name, workers, arrivals this tick) of a tick: its queue gauge, its samples when ``sample``
        is due (the seconds since the last; 0: none), and the ``cp_scale`` question, applied. A model whose scaler gave a steady answer (``steady``, see
        `SteadyScaleDecision`) is not asked, and on a tick with no sample due gets no context either: its queue
        gauge and its latency window's pruning only, as `build_scaling_context` leaves them."""
        gauges, tick_s, unrouted, recent = self.gauges, self._tick_s, self.unrouted, self._recent
        configured, queue_gauges = self._configured_replicas, self._queue_gauges
        extras_by_model, est = self._extras, self._iteration_estimator
        since_sample = self._arrivals_since_sample
        last_scale = self._last_scale_s
        kv_now = self.ctx._kv_now  # a mid-batch KV count, where the driver has one (`kv_utilization_now`)
        for model, model_workers, n in groups:
            since_sample[model] = since_sample.get(model, 0) + n
            held = steady.get(model) if steady else None
            if held is not None and not sample:
                gauges[queue_gauges[model]] = count_queued(model, model_workers, unrouted)
                recent[model].prune(now)
                continue
            cached = extras_by_model.get(model) if extras_by_model is not None else None
            extras = cached[1] if cached is not None and cached[0] is est else self._scaling_extras(model)
            scaling = build_scaling_context(model, now, configured[model], model_workers, unrouted, n, tick_s,
                                            recent[model], extras[0], extras[1], kv_now,
                                            last_scale.get(model) if last_scale else None)
            gauges[queue_gauges[model]] = scaling.num_queued
            if sample:
                self._sample(now, scaling, since_sample[model] / sample)
                since_sample[model] = 0
            if held is not None:
                continue
            # The alive workers as the context's tuple (the hook's ``workers`` is a read-only sequence): no copy
            # per tick. A decision to stay (the target is the ready and starting count) without shadow
            # decisions changes nothing: `_autoscale` is not called for it.
            decision, plugin = self._decide("cp_scale", model, scaling.workers, scaling)
            if decision is None:
                continue
            if decision.model != model:  # another model's answer: the policy's error, not applied to this one
                self._monitor.record(plugin or "core", "cp_scale", ValueError(
                    f"asked to scale {model!r}, returned a ScaleDecision for {decision.model!r}; not applied"), model)
                self.calls.drain_errors()
                continue
            if decision.held_target is not None or model in self.__dict__.get("_held", ()):
                self._record_held(model, scaling.num_ready + scaling.num_starting, decision, plugin)
            if decision.next_start_s is not None or model in self.__dict__.get("_next_start", ()):
                self.__dict__.setdefault("_next_start", {})[model] = decision.next_start_s  # `_no_worker_for`
            if decision.target_replicas != scaling.num_ready + scaling.num_starting or decision.advisory:
                self._autoscale(scaling, decision, plugin)
            elif steady is not None and type(decision) is SteadyScaleDecision:
                steady[model] = decision  # not asked again until a worker changes (`_workers_changed`)

    def _record_held(self, model: str, current: int, decision: ScaleDecision, plugin: str | None) -> None:
        """A target a shared rule held back (``held_target``: the cooldown), recorded once per hold and target
        (action ``scale_held``): without it a scale-up the cooldown held back while the queue grew left no row."""
        held = self.__dict__.setdefault("_held", {})
        if decision.holding and decision.held_target is None and decision.target_replicas == current:
            return  # the count kept between the policy's own evaluations (hpa's syncs): no want, the hold goes on
        if decision.held_target is None or decision.target_replicas != current:
            held.pop(model, None)  # the hold ended (or this decision changes the count: stored as a scale)
            return
        if held.get(model) == decision.held_target:
            return
        held[model] = decision.held_target
        self._decision("cp_scale", plugin, "scale_held", model, decision.reason,
                       {"from": current, "to": current, "wanted": decision.held_target})

    def _record_unplaced_wait(self, model: str, current: int, decision: ScaleDecision, retry_s: float) -> None:
        """A scale-up the core held back because the model's last one could not be placed (`UNPLACED_RETRY_S`):
        recorded once per wait and target (action ``scale_held``, plugin ``core``), naming the wait, rather than
        dropped without a row (a cooldown's row was then the only trace, blaming the cooldown)."""
        held = self._unplaced_held
        if held is None:
            held = self._unplaced_held = {}
        if held.get(model) == (retry_s, decision.target_replicas):
            return
        held[model] = (retry_s, decision.target_replicas)
        now = self.clock.now_s
        reason = (f"{decision.reason} | core: {decision.target_replicas} -> {current} (unplaced: the last scale-up "
                  f"found no free device or worker slot; the next one waits until {retry_s:.1f}s, "
                  f"{retry_s - now:.1f}s left)")
        self._decision("cp_scale", "core", "scale_held", model, reason,
                       {"from": current, "to": current, "wanted": decision.target_replicas,
                        "unplaced_retry_s": round(retry_s, 3)})

    def _scale_up_settled(self, event: int, *, placed: bool) -> None:
        """Scale-up ``event`` placed one of its replicas (``placed``), or none: then it changed nothing, and the
        model's `_last_scale_s` goes back to the change before it (where no later one moved it), so that
        `scaling-rules`' cooldown runs from changes the core applied, simulated and live alike (an all-unplaced
        scale-up held the next one back as `cooldown: 0s left`)."""
        entry = self._scale_up_before.pop(event, None) if self._scale_up_before else None
        if entry is None or placed:
            return
        model, before, at = entry
        last = self._last_scale_s
        if last is None or last.get(model) != at:
            return
        if before is None:
            del last[model]
        else:
            last[model] = before
        for other, (m, b, t) in self._scale_up_before.items():  # (one started since, on top of this one: its before)
            if m == model and b == at:
                self._scale_up_before[other] = (m, before, t)

    def _record_advisory(self, model: str, current: int, decision: ScaleDecision) -> None:
        """Shadow policies' would-be decisions, recorded (action ``shadow_scale``) when one's target changes from its
        own last one (the cluster's count before its first: a first decision to stay is no change), and when one
        starts failing (signal ``shadow_failed``), beside the active decision; nothing is applied."""
        last = self._advisory_last
        if last is None:
            last = self._advisory_last = {}
        for policy, d in decision.advisory:
            if d is None:
                continue
            key = (policy, model)
            failed = bool(d.signals) and "shadow_failed" in d.signals  # (`plugins.shadow`: the shadow raised)
            # (from: the shadow's own last target, as its policy decides from it; the cluster's count until it has one)
            previous, was_failing = last.get(key, (current, False))
            # (a count kept between its own evaluations, `holding`: hpa between syncs, is no want; recorded, the
            # shadow flipped every tick between its want and the current count)
            if d.holding or (d.target_replicas == previous and (was_failing or not failed)):
                last[key] = (previous, failed)
                continue
            last[key] = (d.target_replicas, failed)
            payload: dict[str, Any] = {"from": max(0, previous), "to": max(0, d.target_replicas),
                                       "active_to": max(0, decision.target_replicas)}
            if d.confidence is not None:
                payload["confidence"] = d.confidence
            if d.signals:
                payload["signals"] = dict(d.signals)
            self._decision("cp_scale", policy, "shadow_scale", model, d.reason, payload)

    def _closing_samples(self, now: float) -> None:
        """At the run's end (`ControlPlane.finish`, simulated and live alike), before what is still in the system is
        recorded: each model's samples of the interval since the last one, partial, so that the stored
        ``arrivals_per_s`` add up to every arrival (the arrivals after the last sample were missing: 13 arrivals at
        0..12 s summed to 12, the bundled trace's 1,500 to 1,482). None when a sample was taken at this time and
        nothing arrived since (a run that ended on a sample's tick)."""
        arrivals, since = self._arrivals_since_tick, self._arrivals_since_sample
        last = self._last_sample_s
        window = now - last if last > float("-inf") else now
        if window <= 0 and not any(arrivals.values()):
            return
        window = window or self._tick_s  # (arrivals at the instant of the last sample: the rate of a tick)
        self._last_sample_s = now
        by_model: dict[str, list[Worker]] = {m: [] for m in arrivals}
        for w in self.workers.values():
            if w.model in by_model:
                by_model[w.model].append(w)
        for model, model_workers in by_model.items():
            n, arrivals[model] = arrivals[model], 0
            est, cold_start = self._scaling_extras(model)
            scaling = build_scaling_context(model, now, self._configured_replicas[model], model_workers, self.unrouted,
                                            n, self._tick_s, self._recent[model], est, cold_start, self.ctx._kv_now,
                                            (self._last_scale_s or {}).get(model))
            self._sample(now, scaling, (since.get(model, 0) + n) / window)
            since[model] = 0

    def _sample(self, now: float, s: ScalingContext, arrivals_per_s: float) -> None:
        """The model's stored time series: its gauges now, and its arrivals per second since the last sample (a
        tick's alone would miss the bursts between samples)."""
        labels = {"model": s.model}
        emit = self._emit
        emit(ev.MetricSample(now, "replicas", float(s.num_ready), labels))
        emit(ev.MetricSample(now, "replicas_starting", float(s.num_starting), labels))
        emit(ev.MetricSample(now, "queue_length", float(s.num_queued), labels))
        emit(ev.MetricSample(now, "running", float(s.num_running), labels))
        emit(ev.MetricSample(now, "kv_utilization", s.kv_utilization_now(), labels))
        emit(ev.MetricSample(now, "arrivals_per_s", arrivals_per_s, labels))

    def _autoscale(self, scaling: ScalingContext, decision: ScaleDecision, plugin: str | None) -> None:
        """Apply ``cp_scale``'s decision (from ``plugin``): record shadow decisions, start or drain replicas."""
        model = scaling.model
        num_current = scaling.num_ready + scaling.num_starting  # Worker.accepts_requests
        if decision.advisory:
            self._record_advisory(model, num_current, decision)
        target = decision.target_replicas  # a whole number >= 0 (`controlplane.hook_results`)
        if target == num_current:
            return
        current = [w for w in scaling.workers if w.state in _ACCEPTING]
        if target > len(current):
            retry_s = self.__dict__.get("_unplaced_until", {}).get(model, -1.0)
            if retry_s > self.clock.now_s:  # the last scale-up could not be placed: asked again after UNPLACED_RETRY_S
                self._record_unplaced_wait(model, len(current), decision, retry_s)
                return
        if self._unplaced_held:
            self._unplaced_held.pop(model, None)
        if self._last_scale_s is None:
            self._last_scale_s = {}
        before = self._last_scale_s.get(model)
        self._last_scale_s[model] = scaling.now_s  # (what `scaling-rules`' cooldown starts from)
        self.stats.num_scale_events += 1
        if target > len(current):  # (undone if the pool places none of its replicas: `_scale_up_settled`)
            if self._scale_up_before is None:
                self._scale_up_before = {}
            self._scale_up_before[self.stats.num_scale_events] = (model, before, scaling.now_s)
        payload: dict[str, Any] = {"from": len(current), "to": target}
        if decision.confidence is not None:
            payload["confidence"] = decision.confidence
        if decision.signals:
            payload["signals"] = dict(decision.signals)
        self._decision("cp_scale", plugin, "scale", model, decision.reason, payload)
        if target > len(current):
            for _ in range(target - len(current)):
                self._add_worker(model, decision.reason or "scale up")
            # Those waiting for a worker of the model (it had none) go to the starting ones now, ahead of later
            # arrivals (routed to them as they come): else they waited for the first ready, behind all of those.
            self._route_unrouted(model)
            return
        # Drain the least loaded (starting ones first): they finish what they hold, then stop.
        for w in sorted(current, key=lambda w: (w.state is WorkerState.READY, w.load))[: len(current) - target]:
            w.state = WorkerState.DRAINING
            self._workers_changed()
            self._emit(ev.WorkerChanged(self.clock.now_s, w.worker_id, "draining", {"reason": decision.reason}))
            waiting = list(w.waiting)
            w.waiting.clear()
            for r in waiting:
                r.worker_id = None
                self._route(r)
            if not w.busy and not w.running:
                self._out.append(act.StopWorker(w.worker_id))
