"""Knative KPA-style concurrency autoscaling: a stable window, a panic window that only scales
up, min/max replicas and optional scale to zero."""

from __future__ import annotations

import math
from collections import deque

from pydantic import Field, model_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import ScaleDecision


class _ModelState:
    __slots__ = ("idle_since_s", "last_up_s", "panic_peak", "panic_until_s", "samples")

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()  # (time, concurrency: queued + running)
        self.panic_until_s: float | None = None  # panicking until then (extended while the condition holds)
        self.panic_peak = 0  # the most replicas wanted during this panic
        self.idle_since_s: float | None = None  # no concurrency since then
        self.last_up_s: float | None = None


class KpaAutoscaler(Plugin):
    """Concurrency target per replica like Knative's KPA: 60 s stable window, 6 s panic window."""

    name = "kpa"

    class Settings(PluginSettings):
        target_concurrency: float = Field(32.0, gt=0)  # in-flight (queued + running) requests per replica
        target_utilization: float = Field(0.7, gt=0, le=1)  # aim at this share of the target
        stable_window_s: float = Field(60.0, gt=0)
        panic_window_s: float = Field(6.0, gt=0)
        panic_threshold: float = Field(2.0, gt=1)  # panic when panic-window desired >= this x current
        max_scale_up_rate: float = Field(1000.0, gt=1)  # at most current x this per decision
        max_scale_down_rate: float = Field(2.0, gt=1)  # at least current / this per decision
        scale_down_delay_s: float = Field(60.0, ge=0)  # scale down only to the max desired in this window (Knative: 0)
        min_replicas: int = Field(1, ge=0)
        max_replicas: int = Field(64, ge=1)
        scale_to_zero: bool = False  # allow 0 replicas (min_replicas must be 0)
        scale_to_zero_grace_s: float = Field(30.0, ge=0)  # idle this long (whole stable window too) first

        @model_validator(mode="after")
        def _consistent(self):
            if self.min_replicas > self.max_replicas:
                raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
            if self.panic_window_s > self.stable_window_s:
                raise ValueError("panic_window_s must not exceed stable_window_s")
            if self.scale_to_zero and self.min_replicas > 0:
                raise ValueError("scale_to_zero needs min_replicas: 0")
            return self

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._state: dict[str, _ModelState] = {}
        self._desired: dict[str, deque[tuple[float, int]]] = {}  # for scale_down_delay_s

    def decide(self, now_s: float, model: str, scaling) -> ScaleDecision:
        s = self.settings
        st = self._state.setdefault(model, _ModelState())
        current = scaling.num_current
        concurrency = float(scaling.num_queued + scaling.num_running)
        st.samples.append((now_s, concurrency))
        while st.samples[0][0] <= now_s - s.stable_window_s:
            st.samples.popleft()
        stable = sum(c for _, c in st.samples) / len(st.samples)
        recent = [c for t, c in st.samples if t > now_s - s.panic_window_s]
        panic = sum(recent) / len(recent)
        per_replica = s.target_concurrency * s.target_utilization
        want_stable = math.ceil(stable / per_replica - 1e-9)
        want_panic = math.ceil(panic / per_replica - 1e-9)
        what = (f"kpa: concurrency stable {stable:.1f} ({s.stable_window_s:g}s) panic {panic:.1f} "
                f"({s.panic_window_s:g}s) / {per_replica:g} per replica -> stable {want_stable}, panic {want_panic}")
        notes = []
        # Panic: the short window asks for >= threshold x the replicas there are (or any, at zero).
        if (current > 0 and want_panic >= s.panic_threshold * current) or (current == 0 and want_panic > 0):
            if st.panic_until_s is None:
                st.panic_peak = current
                notes.append("panic starts")
            st.panic_until_s = now_s + s.stable_window_s
        elif st.panic_until_s is not None and now_s >= st.panic_until_s:
            st.panic_until_s = None
            notes.append("panic over")
        if st.panic_until_s is not None:
            desired = max(want_panic, current, st.panic_peak)  # never down while panicking
            st.panic_peak = desired
            notes.append(f"panicking until {st.panic_until_s:.0f}s: no scale down")
        else:
            desired = want_stable
        if current > 0:
            hi = math.ceil(current * s.max_scale_up_rate)
            lo = math.floor(current / s.max_scale_down_rate)
            if desired > hi:
                desired = hi
                notes.append(f"up-rate {s.max_scale_up_rate:g}x")
            if desired < lo:
                desired = lo
                notes.append(f"down-rate {s.max_scale_down_rate:g}x")
        if s.scale_down_delay_s > 0:
            window = self._desired.setdefault(model, deque())
            window.append((now_s, desired))
            while window[0][0] < now_s - s.scale_down_delay_s:
                window.popleft()
            if desired < current:
                held = min(current, max(d for _, d in window))
                if held > desired:
                    desired = held
                    notes.append(f"scale-down delay {s.scale_down_delay_s:g}s")
        # Scale to zero only after a whole quiet grace period; otherwise keep one replica. Concurrency is sampled once a
        # tick: a tick with arrivals is not idle either (a request that came and went between two ticks was never
        # seen in flight: "after 30s idle" read 27 s after it finished).
        busy = concurrency > 0 or scaling.arrivals_per_s > 0
        st.idle_since_s = (st.idle_since_s if st.idle_since_s is not None else now_s) if not busy else None
        floor = s.min_replicas
        if s.scale_to_zero:
            quiet = st.idle_since_s is not None and now_s - st.idle_since_s >= max(s.scale_to_zero_grace_s, 0)
            floor = 0 if quiet and stable == 0 else 1 if current > 0 or want_panic > 0 else 0
            if desired == 0 and floor == 0 and current > 0:
                notes.append(f"scale to zero: no request in flight or arriving at the ticks of the last "
                             f"{now_s - st.idle_since_s:.0f}s (grace {s.scale_to_zero_grace_s:g}s)")
        target = desired
        if target > s.max_replicas:
            target = s.max_replicas
            notes.append(f"max {s.max_replicas}")
        if target < floor:
            target = floor
            notes.append(f"min {floor}")
        return ScaleDecision(model, target, what + ("; " + "; ".join(notes) if notes else "") + f" -> {target}")

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        return self.decide(ctx.now_s, model, scaling)
