"""Guardians: which responses a guardian model checks, and whether the reply waits for it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import GuardianPlan


class SampledGuardian(Plugin):
    """Check a random share of responses (none by default), synchronously or in the background."""

    name = "sampled-guardian"

    class Settings(PluginSettings):
        rate: float = Field(0.0, ge=0, le=1)
        guardian: str = "guardian"
        mode: Literal["sync", "async"] = "async"

    @hookimpl
    def cp_guardian_plan(self, ctx, request):
        s = self.settings
        if s.rate <= 0:
            return None  # sampling off: no plan, nothing checked (and nothing to record)
        if s.rate >= 1 or ctx.rng.random() < s.rate:
            return GuardianPlan(True, s.guardian, s.mode, f"sampled at rate {s.rate}")
        return GuardianPlan(False, reason=f"not sampled (rate {s.rate})")
