"""What every guardian planner shares: cached verdicts and backing off when guardians saturate.

* **Cached verdicts**: the same text checked by the same guardians gets the same verdict within
  ``verdict_ttl_s``, from a `plugins.cache_backends` store (in-process by default; ``backend:
  redis`` shares it between daemons). The text is the prompt (stage "input") or the answer
  ("output"; in the simulator, where answers have no text, the prompt and generation parameters
  of a reproducible answer stand for it, as in the exact response cache). Only decisive verdicts
  (pass, block) are cached, learnt from the run's verdict decisions (``cp_on_event``). A
  simulation with ``sim.guardian_tenant_block_rates`` keys them by tenant too (its labels, and so
  its verdicts, are per tenant).
* **Back-off**: a plan is skipped when one of its guardians has ``max_inflight_per_replica``
  checks in flight per replica (the core's ``guardian_inflight:NAME`` gauge); the skip is a
  ``guardian_backoff`` decision with the numbers.
* **What was checked** (the summary's ``guardian_sampling.NAME``): per stage, the requests planned
  for, those that got a verdict (the check's outcome ``pass`` or ``block``, or a cached verdict) and
  those served without one (its guardians failed open: ``timeout``, ``error``, ``unavailable``),
  and per guardian the answers it gave a verdict on; all counted by this planner, from its start (a
  daemon's reload starts a new one), so shares over its own plans stay within 0..1.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any, Literal

import orjson
from pydantic import ConfigDict, Field, field_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import GuardianPlan
from controlplane.events import RequestFinished
from controlplane.guardian_checks import DECISIVE, combine
from controlplane.types import Decision, RequestStatus
from plugins.cache_backends import StoreSettings, open_store, release_run, scope_to_run

__all__ = ["GuardianPlanner", "PlannerSettings", "answer_key", "one_guardian_key", "text_key"]


#: How a request ends without the verdicts of its checks in flight (they are dropped with it).
GONE = (RequestStatus.CANCELLED, RequestStatus.FAILED, RequestStatus.REJECTED)


class PlannerSettings(PluginSettings):
    # an error's text shows no input: the store's Redis URL's password (the validator's message masks it)
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # "input" (prompts, before generation), "output" (answers); a misspelt stage is refused, not ignored
    stages: tuple[Literal["input", "output"], ...] = ("output",)
    verdict_ttl_s: float = Field(0.0, ge=0)  # 0: no verdict cache
    store: StoreSettings = Field(default_factory=StoreSettings)
    max_inflight_per_replica: float | None = Field(None, gt=0)  # None: never back off

    @field_validator("stages")
    @classmethod
    def _at_least_one_stage(cls, stages: tuple[str, ...]) -> tuple[str, ...]:
        """Checked after the stages themselves, so that a misspelt stage is one error naming it
        (a length bound also reported "at least 1 item, not 0" for the item it had refused)."""
        if not stages:
            raise ValueError("needs at least one stage: 'input', 'output' or both")
        return stages


def one_guardian_key(settings: Any) -> Any:
    """A planner's settings name one guardian (``guardian``) or several (``guardians``), not both:
    ``guardians`` overrides ``guardian``, so a config setting both would check with one of them
    and silently drop the other."""
    if settings.guardians and "guardian" in settings.model_fields_set:
        raise ValueError(f"sets both `guardian` ({settings.guardian!r}) and `guardians` ({list(settings.guardians)}): "
                         "name one guardian with `guardian`, or several in parallel with `guardians`")
    return settings


def text_key(request: Any, stage: str) -> str | None:
    """What identifies the checked text, or None when it is not known (or not reproducible)."""
    if stage == "input":
        return None if request.prompt is None else f"in\0{request.prompt}"
    if request.output_text is not None:
        return f"out\0{request.output_text}"
    return answer_key(request)


def answer_key(request: Any) -> str | None:
    """What identifies a reproducible answer before it is generated: the prompt and generation
    parameters (sampling without a seed is not reproducible: None)."""
    if request.prompt is None:
        return None
    params = dict(request.params)
    if float(params.get("temperature", 0.0) or 0.0) > 0 and params.get("seed") is None:
        return None
    return f"gen\0{request.model}\0{request.prompt}\0{request.params}\0{request.max_output_tokens}"


class GuardianPlanner(Plugin, ABC):
    """Base of the guardian planners: subclasses implement `plan` (their sampling or cascade)."""

    Settings = PlannerSettings

    def __init__(self, settings: PlannerSettings | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        self._store = open_store(s.store, namespace=f"verdicts:{self.name}") if s.verdict_ttl_s > 0 else None
        # (request id, stage) -> (cache key or None, several guardians or tiers: their outcome decides) of each
        # check in flight it planned (and the key of its blocked answer, for an output check of a reproducible
        # answer, with a store; the guardians that gave it a verdict so far); by stage: an async prompt check may
        # still run when the answer's check starts
        self._asked: dict[tuple[str, str], tuple[str | None, bool, str | None, list[str]]] = {}
        self.cache_hits = 0
        self._per_tenant = False  # verdicts cached per tenant (`cp_run_started`)
        # request id -> its draw, between its first stage and the next (`sampled`): one draw per request
        self._draws: dict[str, bool] = {}
        self.decided = {stage: 0 for stage in s.stages}  # plans made, by stage (answers: each generated one)
        # of which checked: the check's outcome a verdict, pass or block (a cached verdict included), or
        # served without one (every guardian failed open); a check still running is neither
        self.checked = {stage: 0 for stage in s.stages}
        self.without_verdict = {stage: 0 for stage in s.stages}
        self.verdicts_by: dict[str, dict[str, int]] = {stage: {} for stage in s.stages}  # guardian -> its verdicts

    def withdraw(self, hook: str) -> None:
        super().withdraw(hook)
        if hook == "cp_guardian_plan" and type(self).cp_on_event is GuardianPlanner.cp_on_event:
            self.cp_on_event = None  # no plan, no check: nothing to learn from events (an observer sees every one)

    @abstractmethod
    def plan(self, ctx: Any, request: Any, stage: str) -> GuardianPlan | None:
        """This planner's own decision for ``request`` at ``stage`` (cached verdicts come first)."""

    def guardian_names(self) -> tuple[str, ...]:
        """The guardians this planner's plans name (``guardians``, else ``guardian``)."""
        return self.guardians_named(self.settings)

    @classmethod
    def guardians_named(cls, settings: Any) -> tuple[str, ...]:
        """The guardians the plans of a planner with ``settings`` name, before one is made (the
        daemon's reload refuses a config whose plans name guardians the running daemon lacks)."""
        return tuple(settings.guardians) or (settings.guardian,)

    @hookimpl
    def cp_run_started(self, ctx):
        """Warn of a guardian named here that ``guardians.models`` does not declare, when it declares
        some: most likely a misspelling, and it would not run as declared (every check answers
        "unavailable", in the simulator as live, which fails open).
        In a simulation a Redis verdict store also gets a namespace of this run's own."""
        if self._store is not None:
            scope_to_run(self._store, ctx)
            # A simulation with per-tenant block rates makes the same text harmful for one tenant and
            # not another: a verdict is then the tenant's own (one tenant's blocks were applied to
            # another). Live, a guardian sees the text alone: its verdict holds for every tenant.
            self._per_tenant = ctx.run.mode != "live" and bool(ctx.config.sim.guardian_tenant_block_rates)
        declared = [g.name for g in ctx.config.guardians.models]
        missing = [n for n in self.guardian_names() if n not in declared]
        if declared and missing:
            import logging

            logging.getLogger(__name__).warning(
                "plugins.settings.%s names guardian(s) %s that guardians.models does not declare "
                "(declared: %s); their checks answer 'unavailable', which fails open (see docs/guardians.md)",
                self.name, ", ".join(map(repr, missing)), ", ".join(declared))

    def sampled(self, ctx: Any, request: Any, p: float) -> bool:
        """Whether ``request`` is checked, sampled with probability ``p`` from ``ctx.rng``: one draw
        per request, so with several stages the draw at its first decides the others too (checked:
        all its stages; not: none). Before, each stage drew on its own: rate 0.3 on [input, output]
        checked half the requests, most of them at one stage only."""
        if len(self.settings.stages) < 2:
            return ctx.rng.random() < p
        drawn = self._draws.pop(request.request_id, None)
        if drawn is None:  # its first stage: the draw waits for the next (or the request's end)
            drawn = self._draws[request.request_id] = ctx.rng.random() < p
        return drawn

    @hookimpl
    def cp_guardian_plan(self, ctx, request, stage):
        plan = self._plan_at(ctx, request, stage)
        if plan is not None and stage in self.decided:
            self.decided[stage] += 1
            self.checked[stage] += plan.check and plan.cached is not None  # a cached verdict; the others at their end
        return plan

    def _plan_at(self, ctx: Any, request: Any, stage: str) -> GuardianPlan | None:
        if stage == "input" and self._store is not None and "output" in self.settings.stages:
            known = self._known_blocked_answer(ctx, request)
            if known is not None:
                return known
        if stage not in self.settings.stages:
            return None
        plan = self.plan(ctx, request, stage)
        if plan is None or not plan.check:
            return plan
        key = self._key(plan, request, stage)
        if key is not None:
            raw = self._store.get(key, now_s=ctx.now_s)
            if raw is not None:
                self.cache_hits += 1
                plan.cached = orjson.loads(raw)
                plan.reason = f"{plan.reason}; verdict cached within {self.settings.verdict_ttl_s:g} s"
                return plan
        blocked = self._answer_key(request, self._per_tenant) if key is not None and stage == "output" else None
        self._asked[(request.request_id, stage)] = (key, len(plan.names) > 1 or plan.then is not None, blocked, [])
        backoff = self._saturated(ctx, plan)
        if backoff is not None:
            self._asked.pop((request.request_id, stage), None)
            return backoff
        return plan

    @staticmethod
    def _answer_key(request: Any, per_tenant: bool = False) -> str | None:
        text = answer_key(request)
        if text is None:
            return None
        tenant = f"tenant\0{request.tenant or ''}\0" if per_tenant else ""
        return hashlib.sha256(f"blocked-answer\0{tenant}{text}".encode()).hexdigest()

    def _known_blocked_answer(self, ctx: Any, request: Any) -> GuardianPlan | None:
        """A request whose reproducible answer was blocked within the TTL: blocked on arrival, as an
        output block (the answer would be the same text), without generating it again."""
        key = self._answer_key(request, self._per_tenant)
        raw = None if key is None else self._store.get(key, now_s=ctx.now_s)
        if raw is None:
            return None
        self.cache_hits += 1
        known = orjson.loads(raw)
        return GuardianPlan(True, known.get("guardian") or "", "sync",
                            f"its answer was blocked within {self.settings.verdict_ttl_s:g} s",
                            cached={**known, "stage": "output"})

    def _key(self, plan: GuardianPlan, request: Any, stage: str) -> str | None:
        if self._store is None:
            return None
        text = text_key(request, stage)
        if text is None:
            return None
        tiers = []
        p: GuardianPlan | None = plan
        while p is not None:
            tiers.append(",".join(sorted(p.names)))
            p = p.then
        tenant = f"tenant\0{request.tenant or ''}\0" if self._per_tenant else ""
        return hashlib.sha256(f"{'>'.join(tiers)}\0{stage}\0{tenant}{text}".encode()).hexdigest()

    def _saturated(self, ctx: Any, plan: GuardianPlan) -> GuardianPlan | None:
        limit = self.settings.max_inflight_per_replica
        if limit is None:
            return None
        for name in plan.names:
            spec = ctx.config.guardians.spec(name)
            replicas = spec.replicas if spec is not None else 1
            inflight = ctx.metrics.get(f"guardian_inflight:{name}", 0)
            if inflight >= limit * replicas:
                return GuardianPlan(False, name, plan.mode,
                                    f"backed off: {name} has {inflight:g} checks in flight "
                                    f"(limit {limit:g} x {replicas} replicas)",
                                    extra={"backoff": True, "guardian": name, "inflight": inflight})
        return None

    @hookimpl
    def cp_run_finished(self, ctx, summary):
        """Adds ``guardian_sampling.NAME`` to the run's summary: per stage, the requests it planned
        for (``answers``: each generated answer; ``prompts``) and those checked, with the share."""
        if self._store is not None:
            release_run(self._store, ctx)
        self._draws.clear()
        mine: dict[str, Any] = {}
        for stage, noun in (("input", "prompts"), ("output", "answers")):
            if stage in self.decided:
                n, k = self.decided[stage], self.checked[stage]
                mine |= {noun: n, f"{noun}_checked": k, f"{noun}_checked_share": round(k / n, 6) if n else None,
                         f"{noun}_served_without_verdict": self.without_verdict[stage] if n else None,
                         f"{noun}_checked_by": dict(sorted(self.verdicts_by[stage].items()))}
        summary.setdefault("guardian_sampling", {})[self.name] = mine

    @hookimpl
    def cp_on_event(self, ctx, event):
        if self._draws and type(event) is RequestFinished:  # ended before its next stage (blocked, cache hit)
            self._draws.pop(event.request.request_id, None)
        if not self._asked:
            return
        if type(event) is RequestFinished:  # cancelled, failed or refused: its checks were dropped, no verdict comes
            if event.request.status in GONE:
                self._asked.pop((event.request.request_id, "input"), None)
                self._asked.pop((event.request.request_id, "output"), None)
            return
        if type(event) is not Decision:
            return
        p = event.payload or {}
        check = (event.subject, p.get("stage") or "output")  # a request's input and output checks may overlap (async)
        asked = self._asked.get(check)
        if asked is None:
            return
        key, multi, blocked, decisive = asked
        action = event.action
        stage = check[1]
        if action == "guardian_verdict" and p.get("verdict") in DECISIVE and stage in self.verdicts_by:
            decisive.append(p.get("guardian"))  # counted with the check's last word: not for a request that left
        if action != ("guardian_outcome" if multi else "guardian_verdict") or (multi and not p.get("final")):
            return  # not this check's last word (one guardian of several, or a tier before the last)
        del self._asked[check]
        # one guardian's verdict through its on_error (a closed one's timeout blocks), as the core reads it
        outcome = p.get("verdict") if multi else \
            combine(ctx.config.guardians, None, {p.get("guardian"): (p.get("verdict"), None, None)}).verdict
        if stage in self.checked:
            if outcome in DECISIVE:
                self.checked[stage] += 1
                by = self.verdicts_by[stage]  # each guardian's verdicts on the ones checked: at most those
                for guardian in decisive:
                    by[guardian] = by.get(guardian, 0) + 1
            else:
                self.without_verdict[stage] += 1
        if key is None:
            return
        if p.get("verdict") in ("pass", "block"):
            value = {"verdict": p["verdict"], "score": p.get("score"), "guardian": p.get("guardian"),
                     "reason": event.reason}
            self._store.set(key, orjson.dumps(value), ttl_s=self.settings.verdict_ttl_s, now_s=ctx.now_s)
            if blocked is not None and p["verdict"] == "block":
                self._store.set(blocked, orjson.dumps(value), ttl_s=self.settings.verdict_ttl_s, now_s=ctx.now_s)
