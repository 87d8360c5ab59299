"""Guardians: which requests a guardian model checks, and whether the reply waits for it.

`SampledGuardian` checks a uniform random share (none by default) of the requests at each of their
configured ``stages`` (the answer by default; with ``stages: [input, output]`` a request drawn has
both its prompt and its answer checked, one not drawn neither), with one guardian or several in parallel.
Risk-based sampling is `plugins.guardian_risk`, cascades `plugins.guardian_cascade`; all three
share cached verdicts and back-off (`plugins.guardian_planner`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from controlplane.decisions import GuardianPlan
from plugins.guardian_planner import GuardianPlanner, PlannerSettings, one_guardian_key


class SampledGuardian(GuardianPlanner):
    """Check a random share of requests (none by default) at every configured stage, synchronously or
    in the background."""

    name = "sampled-guardian"

    class Settings(PlannerSettings):
        rate: float = Field(0.0, ge=0, le=1)
        guardian: str = "guardian"
        guardians: tuple[str, ...] = ()  # several in parallel (instead of `guardian`: setting both is an error)
        combine: Literal["any", "majority", "weighted"] | None = None  # None: guardians.combine
        mode: Literal["sync", "async"] = "async"

        _one_guardian_key = model_validator(mode="after")(one_guardian_key)

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        if self.settings.rate <= 0 and self._store is None:
            # Sampling off and no shared verdicts to look up: every plan would be None (the
            # default, and so the built-in fallback of `cp_guardian_plan`).
            self.withdraw("cp_guardian_plan")

    @classmethod
    def guardians_named(cls, settings) -> tuple[str, ...]:
        return super().guardians_named(settings) if settings.rate > 0 else ()  # sampling off: names none

    def plan(self, ctx, request, stage):
        s = self.settings
        if s.rate <= 0:
            return None  # sampling off: no plan, nothing checked (and nothing to record)
        if s.rate >= 1 or self.sampled(ctx, request, s.rate):  # one draw per request: all its stages, or none
            return GuardianPlan(True, s.guardian, s.mode, f"sampled at rate {s.rate}", guardians=s.guardians,
                                combine=s.combine)
        return GuardianPlan(False, reason=f"not sampled (rate {s.rate})")
