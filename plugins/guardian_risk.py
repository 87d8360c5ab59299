"""Risk-based sampling: check the requests most likely to be harmful, within a budget.

Each request's risk is its tenant's block rate so far (a Beta(prior) posterior mean, learnt
online from the run's own verdicts: no label is ever read) times ``term_boost`` when its prompt
contains one of ``risky_terms``. It is sampled with probability ``rate * risk / mean risk``
(clipped to ``[min_rate, 1]``), so the expected share checked stays near ``rate`` while risky
tenants and prompts are checked far more often. Randomness comes from ``ctx.rng``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from controlplane import hookimpl
from controlplane.decisions import GuardianPlan
from controlplane.events import RequestFinished
from controlplane.types import Decision
from plugins.guardian_planner import GONE, GuardianPlanner, PlannerSettings, one_guardian_key




class RiskSampledGuardian(GuardianPlanner):
    """Check the requests most likely to be harmful (tenant block rate, risky terms), within a sampling budget."""

    name = "risk-guardian"

    class Settings(PlannerSettings):
        rate: float = Field(0.2, gt=0, le=1)  # the budget: the expected share of requests checked
        min_rate: float = Field(0.02, ge=0, le=1)  # every request keeps at least this chance
        guardian: str = "guardian"
        guardians: tuple[str, ...] = ()
        combine: Literal["any", "majority", "weighted"] | None = None
        mode: Literal["sync", "async"] = "sync"
        prior_blocks: float = Field(1.0, gt=0)  # Beta prior of a tenant's block rate
        prior_checks: float = Field(20.0, gt=0)
        risky_terms: tuple[str, ...] = ()  # case-insensitive substrings of a prompt that raise its risk
        term_boost: float = Field(4.0, ge=1)
        smoothing: float = Field(0.01, gt=0, le=1)  # weight of a new request in the mean risk

        _one_guardian_key = model_validator(mode="after")(one_guardian_key)

        @model_validator(mode="after")
        def _floor_within_budget(self):
            if self.min_rate > self.rate:
                raise ValueError(f"min_rate {self.min_rate:g} is above the budget rate {self.rate:g}: every "
                                 "request would be checked at min_rate or more")
            return self

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._blocks: dict[str, float] = {}
        self._checks: dict[str, float] = {}
        # (request id, stage) -> tenant, for checks in flight: an entry leaves when its check ends,
        # whatever its end (a verdict, timeout, error, a cached verdict, a back-off, a request gone)
        self._tenant_of: dict[tuple[str, str], str] = {}
        self._mean_risk: float | None = None
        self._terms = tuple(t.lower() for t in self.settings.risky_terms)

    def risk(self, request) -> float:
        s = self.settings
        t = request.tenant or ""
        r = (self._blocks.get(t, 0.0) + s.prior_blocks) / (self._checks.get(t, 0.0) + s.prior_checks)
        if self._terms and request.prompt:
            text = request.prompt.lower()
            if any(term in text for term in self._terms):
                r *= s.term_boost
        return r

    def plan(self, ctx, request, stage):
        s = self.settings
        risk = self.risk(request)
        mean = self._mean_risk = risk if self._mean_risk is None else \
            (1 - s.smoothing) * self._mean_risk + s.smoothing * risk
        p = min(1.0, max(s.min_rate, s.rate * risk / mean))
        if self.sampled(ctx, request, p):  # one draw per request: checked at all its stages, or none
            self._tenant_of[(request.request_id, stage)] = request.tenant or ""
            return GuardianPlan(True, s.guardian, s.mode, f"risk {risk:.3f} (mean {mean:.3f}): sampled at {p:.2f}",
                                guardians=s.guardians, combine=s.combine)
        return GuardianPlan(False, reason=f"risk {risk:.3f}: not sampled at {p:.2f}")

    @hookimpl
    def cp_guardian_plan(self, ctx, request, stage):
        plan = super().cp_guardian_plan(ctx, request, stage)
        if plan is None or not plan.check or plan.cached is not None:  # no check runs (cached, backed off)
            self._tenant_of.pop((request.request_id, stage), None)
        return plan

    @hookimpl
    def cp_on_event(self, ctx, event):
        super().cp_on_event(ctx, event)
        kind = type(event)
        if kind is RequestFinished:
            r = event.request
            if r.status in GONE and self._tenant_of:  # its checks were dropped: no outcome will come
                self._tenant_of.pop((r.request_id, "input"), None)
                self._tenant_of.pop((r.request_id, "output"), None)
            return
        if kind is not Decision or event.action not in ("guardian_verdict", "guardian_outcome"):
            return
        p = event.payload or {}
        key = (event.subject, p.get("stage") or "output")
        if key not in self._tenant_of:
            return
        if (event.action == "guardian_verdict") == (len(self.settings.guardians) > 1):
            return  # several guardians: their outcome is the check's end; one: its verdict
        tenant = self._tenant_of.pop(key)
        if p.get("verdict") not in ("pass", "block"):
            return  # timeout, error, unavailable: the check ended, nothing learnt
        self._checks[tenant] = self._checks.get(tenant, 0.0) + 1
        if p["verdict"] == "block":
            self._blocks[tenant] = self._blocks.get(tenant, 0.0) + 1

    @hookimpl
    def cp_run_finished(self, ctx, summary):
        super().cp_run_finished(ctx, summary)
        self._tenant_of.clear()
