"""The seed design's multi-signal autoscaler: utilisation, request-rate trend, queue length,
error rate and a linear-regression forecast of the rate, combined into one score; one replica up
above the up threshold, one down below the down threshold, then a hold. Every weight, threshold,
window and horizon is a setting, and every decision states its score, signals and confidence."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pydantic import Field, model_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import ScaleDecision
from controlplane.events import RequestFinished
from controlplane.types import RequestStatus, WorkerState

_ERRORS = (RequestStatus.FAILED, RequestStatus.REJECTED)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares ``y = a + b x``: (intercept, slope, r2); a flat line through the mean for < 2 points."""
    n = len(xs)
    if n == 0:
        return 0.0, 0.0, 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return my, 0.0, 0.0
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    syy = sum((y - my) ** 2 for y in ys)
    slope = sxy / sxx
    r2 = (sxy * sxy) / (sxx * syy) if syy > 0 else 1.0
    return my - slope * mx, slope, r2


@dataclass(slots=True)
class Signals:
    """One decision's inputs, each in [0, 1] (trend: 0.5 is flat)."""

    utilization: float
    trend: float
    queue: float
    error: float
    forecast: float
    rate: float  # arrivals/s, mean of the latest sample bucket
    slope: float  # arrivals/s per second, over the trend samples
    forecast_rate: float  # arrivals/s forecast horizon_s ahead
    error_rate: float  # share of finished requests that failed or were rejected, over error_window_s


class _ModelState:
    __slots__ = ("bucket_arrivals", "bucket_start_s", "bucket_ticks", "busy", "last_action_s", "samples")

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()  # (bucket end, mean arrivals/s)
        self.bucket_start_s: float | None = None
        self.bucket_arrivals = 0.0  # sum of arrivals_per_s over the bucket's ticks
        self.bucket_ticks = 0
        self.busy: deque[float] = deque()  # share of ready replicas busy, one per tick
        self.last_action_s: float | None = None


class SeedAutoscaler(Plugin):
    """The seed's multi-signal autoscaler: score > 0.8 adds a replica, < 0.5 removes one, 5 min hold."""

    name = "seed-autoscaler"

    class Settings(PluginSettings):
        # The score's weights (normalised by their sum).
        weight_utilization: float = Field(0.35, ge=0)
        weight_trend: float = Field(0.10, ge=0)
        weight_queue: float = Field(0.25, ge=0)
        weight_error: float = Field(0.10, ge=0)
        weight_forecast: float = Field(0.20, ge=0)
        # Utilisation's parts (the seed: CPU 0.3, memory 0.3, GPU 0.4), normalised by their sum.
        util_weight_busy: float = Field(0.4, ge=0)  # share of ready replicas executing a batch (GPU)
        util_weight_batch: float = Field(0.3, ge=0)  # running / batch slots (max_num_seqs) (compute/CPU)
        util_weight_kv: float = Field(0.3, ge=0)  # KV-cache utilisation (memory)
        busy_window_ticks: int = Field(30, ge=1)  # busy share averaged over this many ticks
        # Rate samples: the mean arrival rate over each sample_interval_s.
        sample_interval_s: float = Field(30.0, gt=0)
        trend_samples: int = Field(5, ge=2)  # slope over the last this many samples
        forecast_samples: int = Field(10, ge=2)  # forecast fitted on the last this many samples
        forecast_horizon_s: float = Field(300.0, ge=0)
        queue_norm: float = Field(10.0, gt=0)  # queue signal = min(1, queued / queue_norm)
        queue_per_replica: bool = False  # normalise the queue per replica (queued / replicas / queue_norm)
        error_low: float = Field(0.01, ge=0, le=1)  # error rate above this: error signal 0.5
        error_high: float = Field(0.05, ge=0, le=1)  # above this: 1.0
        error_window_s: float = Field(60.0, gt=0)
        scale_up_threshold: float = Field(0.8, ge=0)
        scale_down_threshold: float = Field(0.5, ge=0)
        step: int = Field(1, ge=1)  # replicas added or removed per action
        hold_s: float = Field(300.0, ge=0)  # no action for this long after one
        min_replicas: int = Field(1, ge=0)
        max_replicas: int = Field(64, ge=1)

        @model_validator(mode="after")
        def _consistent(self):
            if self.min_replicas > self.max_replicas:
                raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
            if self.scale_down_threshold >= self.scale_up_threshold:
                raise ValueError("scale_down_threshold must be below scale_up_threshold")
            if self.error_low > self.error_high:
                raise ValueError("error_low must not exceed error_high")
            weights = (self.weight_utilization, self.weight_trend, self.weight_queue, self.weight_error,
                       self.weight_forecast)
            if sum(weights) <= 0 or self.util_weight_busy + self.util_weight_batch + self.util_weight_kv <= 0:
                raise ValueError("weights must not all be zero")
            return self

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._state: dict[str, _ModelState] = {}
        self._finished: dict[str, deque[tuple[float, bool]]] = {}  # per model: (time, is error)

    # --- the error signal: from finished requests ------------------------------------------------

    @hookimpl
    def cp_on_event(self, ctx, event):
        if type(event) is not RequestFinished:
            return
        r = event.request
        model = r.model if r.model is not None else ctx.config.cluster.models[0].name
        self._finished.setdefault(model, deque()).append((event.time_s, r.status in _ERRORS))

    def _error_rate(self, model: str, now_s: float) -> float:
        done = self._finished.get(model)
        if not done:
            return 0.0
        while done and done[0][0] < now_s - self.settings.error_window_s:
            done.popleft()
        return sum(1 for _, e in done if e) / len(done) if done else 0.0

    # --- signals ---------------------------------------------------------------------------------

    def _observe(self, st: _ModelState, now_s: float, scaling) -> None:
        if st.bucket_start_s is None:
            st.bucket_start_s = now_s
        st.bucket_arrivals += scaling.arrivals_per_s
        st.bucket_ticks += 1
        if now_s - st.bucket_start_s >= self.settings.sample_interval_s - 1e-9:
            st.samples.append((now_s, st.bucket_arrivals / st.bucket_ticks))
            keep = max(self.settings.trend_samples, self.settings.forecast_samples)
            while len(st.samples) > keep:
                st.samples.popleft()
            st.bucket_start_s, st.bucket_arrivals, st.bucket_ticks = now_s, 0.0, 0
        ready = [w for w in scaling.workers if w.state is WorkerState.READY]
        st.busy.append(sum(1 for w in ready if w.busy or w.running) / len(ready) if ready else 0.0)
        while len(st.busy) > self.settings.busy_window_ticks:
            st.busy.popleft()

    def signals(self, model: str, now_s: float, scaling) -> tuple[Signals, float]:
        """This tick's signals and the confidence in them (0-1: enough samples, and a good fit)."""
        s = self.settings
        st = self._state.setdefault(model, _ModelState())
        self._observe(st, now_s, scaling)
        ready = [w for w in scaling.workers if w.state is WorkerState.READY]
        slots = sum(w.max_num_seqs for w in ready)
        batch = min(1.0, scaling.num_running / slots) if slots else (1.0 if scaling.num_running else 0.0)
        busy = sum(st.busy) / len(st.busy)
        # Without a KV budget on any replica there is no memory signal: its weight is left out.
        kv_weight = s.util_weight_kv if any(w.has_kv_budget for w in ready) else 0.0
        uw = s.util_weight_busy + s.util_weight_batch + kv_weight
        util = (s.util_weight_busy * busy + s.util_weight_batch * batch
                + kv_weight * min(1.0, scaling.kv_utilization_now())) / uw if uw > 0 else 0.0
        samples = list(st.samples)
        rate = samples[-1][1] if samples else scaling.arrivals_per_s
        trend_pts = samples[-s.trend_samples:]
        _, slope, _ = linear_fit([t for t, _ in trend_pts], [r for _, r in trend_pts])
        mean_rate = sum(r for _, r in trend_pts) / len(trend_pts) if trend_pts else 0.0
        # Relative change across the trend window: +100% -> 1, flat -> 0.5, -100% -> 0.
        span = (trend_pts[-1][0] - trend_pts[0][0]) if len(trend_pts) > 1 else 0.0
        rel = slope * span / mean_rate if mean_rate > 0 else 0.0
        trend = min(1.0, max(0.0, 0.5 + 0.5 * rel))
        fc_pts = samples[-s.forecast_samples:]
        a, b, r2 = linear_fit([t for t, _ in fc_pts], [r for _, r in fc_pts])
        forecast_rate = max(0.0, a + b * (now_s + s.forecast_horizon_s)) if len(fc_pts) >= 2 else rate
        # Utilisation the forecast rate would bring, if utilisation scales with the rate: none for a forecast of
        # 0/s; with no rate now (a bucket without arrivals) the ratio has no value and the utilisation stands for it
        # (a forecast of 0/s read as the utilisation lifted a quiet model's score over the threshold).
        if forecast_rate <= 0:
            forecast = 0.0
        else:
            forecast = min(1.0, util * forecast_rate / rate) if rate > 0 else util
        queued = scaling.num_queued / (max(1, scaling.num_current) if s.queue_per_replica else 1)
        queue = min(1.0, queued / s.queue_norm)
        err = self._error_rate(model, now_s)
        error = 1.0 if err > s.error_high else 0.5 if err > s.error_low else 0.0
        sig = Signals(util, trend, queue, error, forecast, rate, slope, forecast_rate, err)
        enough = min(1.0, len(fc_pts) / s.forecast_samples)
        confidence = enough * (0.5 + 0.5 * r2) if len(fc_pts) >= 2 else 0.25
        return sig, confidence

    def score(self, sig: Signals) -> float:
        s = self.settings
        parts = ((s.weight_utilization, sig.utilization), (s.weight_trend, sig.trend), (s.weight_queue, sig.queue),
                 (s.weight_error, sig.error), (s.weight_forecast, sig.forecast))
        return sum(w * v for w, v in parts) / sum(w for w, _ in parts)

    def floor(self, scaling) -> int:
        """The fewest replicas now: ``min_replicas``, but at least one while requests wait, run or arrive.

        The score cannot bring a model back from zero (no ready replica: utilisation 0, and the queue and
        trend alone stay below the up threshold), so zero is only for a model with no load at all, and a
        request at zero starts a replica at once."""
        load = scaling.num_queued + scaling.num_running > 0 or scaling.arrivals_per_s > 0
        return max(1, self.settings.min_replicas) if load else self.settings.min_replicas

    def decide(self, now_s: float, model: str, scaling) -> ScaleDecision:
        s = self.settings
        sig, confidence = self.signals(model, now_s, scaling)
        score = self.score(sig)
        st = self._state[model]
        current = scaling.num_current
        desc = (f"score {score:.2f} (util {sig.utilization:.2f}, trend {sig.trend:.2f} [slope {sig.slope:+.3f}/s²], "
                f"queue {sig.queue:.2f} [{scaling.num_queued}], error {sig.error:.2f} [{sig.error_rate:.1%}], "
                f"forecast {sig.forecast:.2f} [{sig.forecast_rate:.2f}/s in {s.forecast_horizon_s:g}s vs "
                f"{sig.rate:.2f}/s{': no rate now, the utilisation' if sig.rate <= 0 < sig.forecast_rate else ''}]) "
                f"confidence {confidence:.2f}")
        bounded = max(s.min_replicas, min(s.max_replicas, current))
        floor = self.floor(scaling)
        if bounded != current:
            action, target = f"to bounds [{s.min_replicas}, {s.max_replicas}]", bounded
        elif current == 0 and floor > 0:  # no hold: nothing serves the waiting requests until a replica is up
            action, target = f"from zero ({scaling.num_queued} waiting)", min(s.max_replicas, s.step)
        elif st.last_action_s is not None and now_s - st.last_action_s < s.hold_s:
            left = st.last_action_s + s.hold_s - now_s
            return ScaleDecision(model, current, f"hold ({left:.0f}s left): {desc}", holding=True)
        elif score > s.scale_up_threshold and current < s.max_replicas:
            action, target = f"up (> {s.scale_up_threshold:g})", min(s.max_replicas, current + s.step)
        elif score < s.scale_down_threshold and current > floor:
            action, target = f"down (< {s.scale_down_threshold:g})", max(floor, current - s.step)
        else:  # a keep carries its confidence and signals too (its reason states them; a raised or shadow keep stored)
            action, target = None, current
        signals = {"score": score, "utilization": sig.utilization, "trend": sig.trend, "queue": sig.queue,
                   "error": sig.error, "forecast": sig.forecast, "rate_per_s": sig.rate,
                   "forecast_rate_per_s": sig.forecast_rate, "error_rate": sig.error_rate}
        if action is not None:
            st.last_action_s = now_s
        return ScaleDecision(model, target, f"scale {action} {current} -> {target}: {desc}" if action is not None
                             else f"keep {current}: {desc}",
                             confidence=round(confidence, 4), signals={k: round(v, 6) for k, v in signals.items()})

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        return self.decide(ctx.now_s, model, scaling)
