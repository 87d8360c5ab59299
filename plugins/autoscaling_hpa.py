"""Kubernetes HPA-style target tracking: desired = ceil(current x metric / target), with a
tolerance, a scale-down stabilisation window and min/max replicas."""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

from pydantic import Field, model_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import ScaleDecision

#: What each metric measures, per replica (queue includes requests not yet routed).
METRICS = {
    "load": "queued+running requests per replica",
    "running": "running requests per replica",
    "queued": "queued requests per replica",
    "kv_utilization": "KV-cache utilisation",
    "arrivals": "arrivals/s per replica",
}


#: Each metric's default target: 16 for the counts and rates; 0.8 for ``kv_utilization``, a share that never
#: reaches 16 (with that default it never scaled).
DEFAULT_TARGETS = {"load": 16.0, "running": 16.0, "queued": 16.0, "kv_utilization": 0.8, "arrivals": 16.0}


def metric_total(metric: str, scaling) -> float:
    """``metric`` now over the model's replicas: a total (a mean for ``kv_utilization``)."""
    return {
        "load": lambda: scaling.num_queued + scaling.num_running,
        "running": lambda: scaling.num_running,
        "queued": lambda: scaling.num_queued,
        "arrivals": lambda: scaling.arrivals_per_s,
        "kv_utilization": scaling.kv_utilization_now,
    }[metric]()


def per_replica(metric: str, total: float, replicas: int) -> float:
    """A total per replica counting toward the target (ready + starting); at zero, the total."""
    return total if metric == "kv_utilization" else total / max(1, replicas)


class HpaAutoscaler(Plugin):
    """Target tracking like Kubernetes' HPA: ceil(current x metric / target), 10% tolerance, 300 s down window."""

    name = "hpa"

    class Settings(PluginSettings):
        metric: Literal["load", "running", "queued", "kv_utilization", "arrivals"] = "load"
        target: float = Field(16.0, gt=0)  # wanted metric value per replica (unset: the metric's DEFAULT_TARGETS)
        tolerance: float = Field(0.1, ge=0)  # no change while |metric/target - 1| <= tolerance
        metric_window_s: float = Field(30.0, ge=0)  # the metric is averaged over this window (0: latest tick)
        sync_period_s: float = Field(15.0, ge=0)  # decide this often (Kubernetes: 15 s)
        scale_down_stabilization_s: float = Field(300.0, ge=0)  # scale down to the max recommended in it
        scale_up_stabilization_s: float = Field(0.0, ge=0)  # scale up to the min recommended in it
        # Kubernetes' default scale-up behaviour: per sync, at most max(double, +4 replicas).
        max_scale_up_percent: float | None = Field(100.0, gt=0)  # None: no percent limit
        max_scale_up_replicas: int | None = Field(4, ge=1)  # None: no absolute limit
        min_replicas: int = Field(1, ge=0)
        max_replicas: int = Field(64, ge=1)

        @model_validator(mode="before")
        @classmethod
        def _metric_default_target(cls, data):
            if isinstance(data, dict) and data.get("target") is None and data.get("metric") in DEFAULT_TARGETS:
                data = {**data, "target": DEFAULT_TARGETS[data["metric"]]}
            return data

        @model_validator(mode="after")
        def _ordered(self):
            if self.min_replicas > self.max_replicas:
                raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
            if self.metric == "kv_utilization" and self.target > 1:
                raise ValueError(f"metric kv_utilization is a share from 0 to 1: target {self.target:g} is never "
                                 "reached (its default is 0.8)")
            return self

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._samples: dict[str, deque[tuple[float, float]]] = {}  # per model: (time, metric total)
        self._recommendations: dict[str, deque[tuple[float, int]]] = {}  # per model: (time, desired)
        self._last_sync_s: dict[str, float] = {}
        self._last: dict[str, ScaleDecision] = {}

    def _average(self, model: str, now_s: float, value: float) -> float:
        samples = self._samples.setdefault(model, deque())
        samples.append((now_s, value))
        while samples[0][0] <= now_s - self.settings.metric_window_s and len(samples) > 1:
            samples.popleft()
        return sum(v for _, v in samples) / len(samples)

    def decide(self, now_s: float, model: str, scaling) -> ScaleDecision:
        s = self.settings
        current = scaling.num_current
        # Totals are averaged, then divided by today's replicas: per-replica values taken while the
        # count was different would mislead (a queue that one replica held is not 14 replicas' load).
        value = per_replica(s.metric, self._average(model, now_s, metric_total(s.metric, scaling)), current)
        last = self._last_sync_s.get(model)
        if last is not None and now_s - last < s.sync_period_s - 1e-9 and model in self._last:
            held = max(s.min_replicas, min(s.max_replicas, current))
            return ScaleDecision(model, held, f"between syncs, keep {held}; last sync: {self._last[model].reason}",
                                 holding=True)
        self._last_sync_s[model] = now_s
        ratio = value / s.target
        what = f"{METRICS[s.metric]} {value:.2f} vs target {s.target:g} (ratio {ratio:.2f})"
        if current == 0:
            desired = math.ceil(value / s.target) if value > 0 else 0  # value is the total at zero replicas
            rule = f"from zero: ceil({value:.2f} / {s.target:g}) = {desired}"
            if desired == 0 and scaling.num_queued > 0:  # (at zero nothing runs or holds KV: only the queue tells)
                desired = 1
                rule = f"from zero: {scaling.num_queued} queued with no replica, start 1"
        elif abs(ratio - 1.0) <= s.tolerance:
            desired = current
            rule = f"within {s.tolerance:.0%} tolerance: keep {current}"
        else:
            desired = math.ceil(current * ratio - 1e-9)
            rule = f"ceil({current} x {ratio:.2f}) = {desired}"
        recs = self._recommendations.get(model)
        if recs is None:  # the run starts at its current count: no scale-down before a window has passed
            recs = self._recommendations[model] = deque([(now_s, current)])
        recs.append((now_s, desired))
        horizon = max(s.scale_down_stabilization_s, s.scale_up_stabilization_s)
        while recs and recs[0][0] < now_s - horizon:
            recs.popleft()
        target = desired
        notes = []
        if desired < current:
            window = [desired] + [d for t, d in recs if t > now_s - s.scale_down_stabilization_s]
            target = min(current, max(window))
            if target != desired:
                notes.append(f"down-stabilisation: max recommended in {s.scale_down_stabilization_s:g}s is {target}")
        elif desired > current and s.scale_up_stabilization_s > 0:
            window = [desired] + [d for t, d in recs if t > now_s - s.scale_up_stabilization_s]
            target = max(current, min(window))
            if target != desired:
                notes.append(f"up-stabilisation: min recommended in {s.scale_up_stabilization_s:g}s is {target}")
        if target > current > 0 and (s.max_scale_up_percent is not None or s.max_scale_up_replicas is not None):
            limits = []
            if s.max_scale_up_percent is not None:
                limits.append(math.ceil(current * (1 + s.max_scale_up_percent / 100) - 1e-9))
            if s.max_scale_up_replicas is not None:
                limits.append(current + s.max_scale_up_replicas)
            if target > max(limits):
                target = max(limits)
                notes.append(f"scale-up limit {target}")
        if target > s.max_replicas:
            notes.append(f"max {s.max_replicas}")
            target = s.max_replicas
        if target < s.min_replicas:
            notes.append(f"min {s.min_replicas}")
            target = s.min_replicas
        reason = f"hpa: {what}; {rule}" + (f"; {'; '.join(notes)}" if notes else "") + f" -> {target}"
        decision = ScaleDecision(model, target, reason)
        self._last[model] = decision
        return decision

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        return self.decide(ctx.now_s, model, scaling)
