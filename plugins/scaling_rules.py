"""Shared scaling rules: bounds, step limits, cooldown and scale-down stabilisation around any
autoscaler, as one `cp_scale` wrapper. Every clamp it applies is stated in the decision's reason."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from pydantic import Field, model_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import ScaleDecision


#: `ScalingRules.clamp`'s ``last_scale_s`` when its caller cannot say what the core applied: every change the rules
#: let through is taken as applied (a direct call, as the tests make).
EVERY_CHANGE_APPLIED = object()


class ScalingRules(Plugin):
    """Clamp whatever autoscaler decides: min/max replicas, max step, cooldown, scale-down stabilisation."""

    name = "scaling-rules"

    class Settings(PluginSettings):
        min_replicas: int | None = Field(None, ge=0)  # never fewer (None: no bound)
        max_replicas: int | None = Field(None, ge=0)  # never more (None: no bound)
        max_step_up: int | None = Field(None, ge=1)  # replicas added per decision at most
        max_step_down: int | None = Field(None, ge=1)  # replicas removed per decision at most
        cooldown_s: float = Field(0.0, ge=0)  # hold the count this long after any change
        scale_down_stabilization_s: float = Field(0.0, ge=0)  # scale down only to the max wanted in this window

        @model_validator(mode="after")
        def _ordered(self):
            if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
                raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
            return self

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._last_change_s: dict[str, float] = {}  # per model: the last change the core applied
        # per model: when the rules last let a change through, until the next context says whether the core applied
        # it (`ScalingContext.last_scale_s`): a scale-up the core held back (its last one unplaced) starts no cooldown
        self._let_through_s: dict[str, float] = {}
        # per model: the change `_last_change_s` held before its last one, back in force where the core undoes that one
        # (a scale-up none of whose replicas the pool placed, answered after the next context: its last_scale_s drops)
        self._earlier_change_s: dict[str, float | None] = {}
        self._wanted: dict[str, deque[tuple[float, int]]] = {}  # per model: (time, policy's target)

    def clamp(self, now_s: float, model: str, current: int, decision: ScaleDecision,
              last_scale_s: float | None | object = EVERY_CHANGE_APPLIED) -> ScaleDecision:
        """The decision after the rules, with each clamp that changed it named in the reason. ``last_scale_s``: when
        the core last applied a scale decision of ``model`` (`ScalingContext.last_scale_s`); the cooldown runs from
        the last change the rules let through that the core applied."""
        s = self.settings
        let_through = self._let_through_s.pop(model, None)
        applied = self._last_change_s.get(model)
        if applied is not None and last_scale_s is not EVERY_CHANGE_APPLIED and (
                last_scale_s is None or last_scale_s < applied):  # the core undid it: it placed no replica
            earlier = self._earlier_change_s.pop(model, None)
            if earlier is None:
                del self._last_change_s[model]
            else:
                self._last_change_s[model] = earlier
        if let_through is not None and (last_scale_s is EVERY_CHANGE_APPLIED or (
                last_scale_s is not None and last_scale_s >= let_through)):
            self._earlier_change_s[model] = self._last_change_s.get(model)
            self._last_change_s[model] = let_through
        wanted = target = decision.target_replicas
        notes: list[str] = []
        if s.scale_down_stabilization_s > 0:
            window = self._wanted.setdefault(model, deque())
            if not decision.holding:  # (a count kept between syncs is no want: with it, hpa never scaled down)
                window.append((now_s, wanted))
            while window and window[0][0] < now_s - s.scale_down_stabilization_s:
                window.popleft()
            if target < current and window:
                peak = min(current, max(t for _, t in window))
                if peak > target:
                    notes.append(f"stabilisation: max wanted in {s.scale_down_stabilization_s:g}s is {peak}")
                    target = peak
        if s.max_replicas is not None and target > s.max_replicas:
            notes.append(f"max {s.max_replicas} replicas")
            target = s.max_replicas
        if s.min_replicas is not None and target < s.min_replicas:
            notes.append(f"min {s.min_replicas} replicas")
            target = s.min_replicas
        # A step limit never keeps the count outside the bounds: min_replicas and max_replicas win at once.
        if s.max_step_up is not None and target > current + s.max_step_up:
            highest = max(current + s.max_step_up, s.min_replicas or 0)
            if target > highest:
                notes.append(f"step up at most {s.max_step_up}")
                target = highest
        if s.max_step_down is not None and target < current - s.max_step_down:
            lowest = current - s.max_step_down if s.max_replicas is None else min(current - s.max_step_down,
                                                                                    s.max_replicas)
            if target < lowest:
                notes.append(f"step down at most {s.max_step_down}")
                target = lowest
        # A count outside the bounds is brought to the nearest one (None: it is within them).
        bound = (s.min_replicas if s.min_replicas is not None and current < s.min_replicas else
                 s.max_replicas if s.max_replicas is not None and current > s.max_replicas else None)
        held = None
        if target != current and s.cooldown_s > 0:
            last = self._last_change_s.get(model)
            # Bounds are not held back by the cooldown: a count outside them is fixed at once.
            if last is not None and now_s - last < s.cooldown_s and bound is None:
                notes.append(f"cooldown: {_seconds_left(last + s.cooldown_s - now_s)} left")
                held, target = target, current
        # A change to the bound alone (the configured count corrected, not the policy's reaction to load) starts no
        # cooldown: a start at 1 raised to min_replicas 2 held the planner's first scale-up back for the cooldown.
        if target != current and target != bound:
            self._let_through_s[model] = now_s  # the cooldown's start once the core applied it
        if not notes:
            return decision
        reason = f"{decision.reason} | rules: {wanted} -> {target} ({'; '.join(notes)})"
        # (confidence, signals, advisory kept; a held target is recorded by the core once per hold)
        return replace(decision, target_replicas=target, reason=reason, held_target=held)

    @hookimpl(wrapper=True)
    def cp_scale(self, ctx, model, scaling):
        decision = yield
        if decision is None:
            return None
        try:
            return self.clamp(ctx.now_s, model, scaling.num_current, decision, scaling.last_scale_s)
        except Exception as exc:  # noqa: BLE001 - keep the wrapped policy's decision rather than lose it
            return replace(decision, reason=f"{decision.reason} | rules skipped: {type(exc).__name__}: {exc}")


def _seconds_left(left_s: float) -> str:
    """A cooldown's time left as its note says it: whole seconds, ``<1s`` under half a second (not ``0s``, which
    read as no hold at all)."""
    return f"{left_s:.0f}s" if left_s >= 0.5 else "<1s"
