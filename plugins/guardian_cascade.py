"""Guardian cascades: a cheap guardian screens everything, only what it flags or is unsure about
goes to the expensive one.

The first tier (``screen``, one guardian or several in parallel) checks every request at the
configured stages; when its score reaches ``escalate_above`` (or it blocks) the second tier
(``judge``) checks the same text and its verdict decides. A screen that is informative but noisy
needs a low ``escalate_above`` (catch nearly everything the judge would) that still lets most
requests stop at the first tier; pick it on held-out data (`benchmarks/guardians.py` does).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane.decisions import GuardianPlan
from plugins.guardian_planner import GuardianPlanner, PlannerSettings


class CascadeGuardian(GuardianPlanner):
    """A cheap guardian screens every request; what it flags or is unsure about goes to the expensive one."""

    name = "cascade-guardian"

    class Settings(PlannerSettings):
        screen: tuple[str, ...] = Field(("screen",), min_length=1)  # the cheap tier
        judge: tuple[str, ...] = Field(("judge",), min_length=1)  # the expensive tier
        escalate_above: float = Field(0.5, ge=0, le=1)
        combine: Literal["any", "majority", "weighted"] | None = None
        mode: Literal["sync", "async"] = "sync"

    @classmethod
    def guardians_named(cls, settings) -> tuple[str, ...]:
        return (*settings.screen, *settings.judge)

    def plan(self, ctx, request, stage):
        s = self.settings
        judge = GuardianPlan(True, s.judge[0], s.mode, "escalated", guardians=s.judge, combine=s.combine)
        return GuardianPlan(True, s.screen[0], s.mode, f"screened by {','.join(s.screen)}", guardians=s.screen,
                            combine=s.combine, then=judge, then_above=s.escalate_above)
