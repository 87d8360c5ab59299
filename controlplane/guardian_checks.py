"""Guardian checks in flight and how their verdicts combine: pure bookkeeping for the core's
`controlplane.responses.Responses` (no I/O, no clock).

One `CheckGroup` is the guardians a plan asked for on one request at one stage, run in parallel.
Each guardian's verdict is first read through its failure behaviour (``on_error``: an ``error``,
``timeout`` or ``unavailable`` verdict counts as a pass when open, as a block when closed), then
the group's verdicts combine by its rule:

* ``any``: one block blocks;
* ``majority``: more than half of the group's guardians block;
* ``weighted``: the blocking guardians' weights reach ``weighted_threshold`` of the weight of all.

Every guardian of the group votes: one that failed open votes pass, one that failed closed votes
block (before, a guardian that failed open abstained, so under ``majority`` one block of two
guardians, the other timed out, blocked). A group that is not blocked and that no guardian passed
(its guardians failed open, or their blocks were outvoted by failures) reports the failure verdict
itself (``unavailable``, ``timeout``, ``error``), never a made-up ``pass``.

A blocked group's reason names no guardian: the outcome's ``guardian`` does (the request's reason
reads ``blocked by GUARDIAN: WHY``; several blockers: ``blocked by G1,G2: WHY1; WHY2``, in the plan's order), so each
is named once.

Scores: the recorded outcome (`outcome_payload`, the ``guardian_outcome`` decision, and so a cached
verdict's ``guardian_cached`` row) pairs the guardians it names with *their* highest score
(``score``) and gives every guardian's own (``scores``); a blocked outcome's `Outcome.score` is its
blockers' highest. A group that is not blocked keeps the highest score of all its guardians in
`Outcome.score`, which is what a cascade's ``then_above`` compares (an outvoted blocker's high score
escalates). (Before, a majority's pass recorded ``"guardian": "rules,judge"`` with the score of
``clf``, the guardian it outvoted.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.decisions import GuardianPlan
from controlplane.guardian_config import GuardiansConfig
from controlplane.types import Request, RequestStatus

__all__ = ["DECISIVE", "CheckGroup", "Outcome", "add_answers_share", "combine", "highest_score", "holds_answers",
           "outcome_payload", "retracted"]

#: Verdicts that say something about the text; anything else is a failure to check it.
DECISIVE = frozenset({"pass", "block"})


@dataclass(slots=True)
class Outcome:
    """A group's combined verdict."""

    verdict: str  # "pass" | "block" | a failure verdict when every guardian failed open
    guardian: str  # who decided: the blocking guardian(s), or every guardian that answered
    score: float | None  # blocked: the blockers' highest; else the group's highest (a cascade's then_above)
    reason: str


@dataclass(slots=True)
class CheckGroup:
    request: Request
    stage: str  # "input" | "output"
    mode: str  # "sync" | "async"
    plan: GuardianPlan
    pending: set[str]
    verdicts: dict[str, tuple[str, float | None, str | None]] = field(default_factory=dict)
    tier: int = 1

    def add(self, guardian: str, verdict: str, score: float | None, reason: str | None) -> bool:
        """Record one guardian's verdict; True when every guardian of the group has answered."""
        self.pending.discard(guardian)
        self.verdicts[guardian] = (verdict, score, reason)
        return not self.pending

    def in_plan_order(self) -> dict[str, tuple[str, float | None, str | None]]:
        """The verdicts in the order the plan names its guardians (they come in the order they answer)."""
        return {g: self.verdicts[g] for g in self.plan.names if g in self.verdicts}


def _effective(config: GuardiansConfig, guardian: str, verdict: str) -> str:
    """The verdict after the guardian's failure behaviour: "pass" or "block" (a failure counts as
    pass when the guardian fails open, as block when closed)."""
    if verdict in DECISIVE:
        return verdict
    spec = config.spec(guardian)
    return "block" if spec is not None and spec.on_error == "closed" else "pass"


def _why(verdict: str, _score: float | None, reason: str | None) -> str:
    """A blocking guardian's part of the reason, without its name (the outcome names it): its own
    reason, or, for a failure of a guardian that fails closed, the failure and why."""
    if verdict in DECISIVE:
        return reason or "blocked"
    return f"{verdict}, {reason or 'no reason'} (on_error: closed)"


def combine(config: GuardiansConfig, rule: str | None,
            verdicts: dict[str, tuple[str, float | None, str | None]]) -> Outcome:
    """The combined verdict of one group (see the module's docstring). Guardians are named, and their
    reasons given, in the order of ``verdicts`` (`CheckGroup.in_plan_order`: the plan's; before, by name,
    so a plan of rules then judge read "blocked by judge,rules")."""
    rule = rule or config.combine
    effective = {g: _effective(config, g, v) for g, (v, _, _) in verdicts.items()}
    scores = [s for _, s, _ in verdicts.values() if s is not None]
    score = max(scores) if scores else None
    blockers = [g for g, e in effective.items() if e == "block"]
    if rule == "any":
        blocked = bool(blockers)
    elif rule == "majority":
        blocked = len(blockers) * 2 > len(verdicts)
    elif rule == "weighted":
        def weight(g: str) -> float:
            spec = config.spec(g)
            return spec.weight if spec is not None else 1.0
        total = sum(weight(g) for g in verdicts)
        # at least one blocker: a threshold of 0 means "any blocker blocks", not "always block"
        blocked = bool(blockers) and total > 0 and sum(weight(g) for g in blockers) >= config.weighted_threshold * total
    else:
        raise ValueError(f"unknown guardian combine rule {rule!r} (any, majority, weighted)")
    if blocked:  # "blocked by GUARDIAN: WHY" names each blocker once (several: their whys in the same order)
        return Outcome("block", ",".join(blockers), highest_score(verdicts, blockers),
                       "; ".join(_why(*verdicts[g]) for g in blockers))
    passed = [g for g, (v, _, _) in verdicts.items() if v == "pass"]
    if not passed:  # no guardian passed it: its guardians' failures let it through, say so
        failures = sorted({v for v, _, _ in verdicts.values() if v not in DECISIVE})
        return Outcome(failures[0] if len(failures) == 1 else "error", ",".join(verdicts), score,
                       "; ".join(f"{g}: {v} ({r or 'no reason'})" for g, (v, _, r) in verdicts.items()))
    return Outcome("pass", ",".join(passed), score, f"passed ({rule} of {len(verdicts)})" if len(verdicts) > 1 else
                   (verdicts[passed[0]][2] or "passed"))


def highest_score(verdicts: dict[str, tuple[str, float | None, str | None]], names: list[str]) -> float | None:
    """The highest score among the guardians ``names`` (None when none of them scored)."""
    scores = [verdicts[g][1] for g in names if g in verdicts and verdicts[g][1] is not None]
    return max(scores) if scores else None


def outcome_payload(group: CheckGroup, out: Outcome) -> dict[str, Any]:
    """The ``guardian_outcome`` decision's payload: ``score`` is the highest of the guardians named
    in ``guardian`` (those that decided), ``scores`` each guardian's own, in the plan's order."""
    verdicts = group.in_plan_order()
    return {"guardian": out.guardian, "verdict": out.verdict,
            "score": highest_score(verdicts, out.guardian.split(",")), "stage": group.stage,
            "mode": group.mode, "tier": group.tier,
            "verdicts": {g: v for g, (v, _, _) in verdicts.items()},
            "scores": {g: s for g, (_, s, _) in verdicts.items()}}


def holds_answers(plugins: Any) -> bool:
    """Whether an enabled guardian planner may check an answer before its reply, in the plugin set
    ``plugins``. A planner says so itself with ``sync_answer_checks`` (an attribute of the plugin
    object: a class attribute, or a property that reads its settings): True, it may plan a sync check
    of an answer; False, it never does (it plans only prompt checks, async checks, or none, as a
    planner that only answers "no check" or defers to the next). Where it says nothing (None or no
    such attribute) its settings decide: ``mode: sync`` with the ``output`` stage, a planner whose
    settings name neither being taken to.
    Then every answer's reply waits for its plan, made when it is generated (the built-in planners draw
    there, so an answer left unchecked waits too): the daemon holds every stream until then, and the
    core marks each such request `Request.reply_held`, whose TTFT is the reply's, in the simulator as
    live (`controlplane.request_latency`). A sync answer plan for a reply not held (a planner that
    declared it never makes one) runs after the reply (`controlplane.responses`)."""
    for impl in plugins.hook.cp_guardian_plan.get_hookimpls():
        plugin = plugins.get(impl.plugin_name)
        declared = getattr(plugin, "sync_answer_checks", None)
        if declared is not None:
            if declared:
                return True
            continue
        settings = getattr(plugin, "settings", None)
        if getattr(settings, "mode", "sync") == "sync" and "output" in getattr(settings, "stages", ("output",)):
            return True
    return False


def retracted(r: Request) -> bool:
    """Whether ``r`` was answered and then blocked (an async check's block after the reply: the row
    stays ``completed`` with ``guardian_verdict`` ``block``). The guardian pools, simulated and live,
    count the requests a verdict they delivered turned so (``guardian_blocks_after_reply``)."""
    return r.status is RequestStatus.COMPLETED and r.guardian_verdict == "block"


def add_answers_share(summary: dict[str, Any]) -> None:
    """Each guardian's ``answers_checked_share`` in a run's ``summary``: the answers it gave a verdict
    on (pass or block: not a timeout, error or unavailable; ``guardian_sampling.*.answers_checked_by``)
    over the answers the guardian planners planned for (``guardian_sampling.*.answers``: every
    generated answer), both counted by the planners from their start (a daemon's reload starts new
    ones); None when no planner checks answers. (It was the guardian's answer checks asked, counted
    from the run's start: 1.0 for a guardian whose checks all timed out, above 1 after a reload.)"""
    planners = [p or {} for p in (summary.get("guardian_sampling") or {}).values()]
    answers = sum(p.get("answers") or 0 for p in planners)
    for name, g in (summary.get("guardians") or {}).items():
        checked = sum((p.get("answers_checked_by") or {}).get(name, 0) for p in planners)
        g["answers_checked_share"] = round(checked / answers, 6) if answers else None
