"""What each policy hook must return (its decision type, or None to defer).

A plugin returning anything else made a mistake the core cannot act on: the callers in
`controlplane.plugin_manager` and `controlplane.policy_calls` treat it like a raise (recorded
as the plugin's error, the next implementation or the built-in fallback decides), with the
`TypeError` of :func:`wrong_result` as its reason. The fields the core acts on are checked too
(`FIELD_CHECKS`: a replica count of 2.5 or -2, a refusal's code given as a string, a memory plan
of no sequences, a cache hit's negative latency or tokens, a guardian plan's unknown combine
rule, a prefix lookup's negative or True token count), and so are the fields the core stores:
every decision's ``reason`` is a string, and what goes into a stored decision's JSON payload
(a route's ``scores``, a guardian plan's ``extra`` and ``cached`` verdict, a cache hit's
``similarity``) is encodable, so a bad value is the plugin's error here, not the SQL recorder's
when the row is stored (where the row, and with a cache hit's reason the request's row, was lost).
A number is never a bool: ``True`` is not 1 second, 1 token or 1 replica. A batch plan is checked
against its worker (`controlplane.batch_plan_checks`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from controlplane.decisions import (
    Admission,
    BatchPlan,
    CacheHit,
    GuardianPlan,
    MemoryPlan,
    RouteDecision,
    ScaleDecision,
)
from controlplane.storage.jsoncodec import dumps
from controlplane.types import ReasonCode

#: Hook name -> the type (or types) its non-None results must be instances of.
RESULT_TYPES: dict[str, type | tuple[type, ...]] = {
    "cp_admit_request": Admission,
    "cp_cache_lookup": CacheHit,
    "cp_route_request": RouteDecision,
    "cp_form_batch": BatchPlan,
    "cp_scale": ScaleDecision,
    "cp_plan_memory": MemoryPlan,
    "cp_guardian_plan": GuardianPlan,
    "cp_prefix_lookup": (int, numbers.Integral),
    "cp_prefix_peek": (int, numbers.Integral),
}


def _shown(value: Any) -> str:
    shown = repr(value)
    return f"{type(value).__name__} {shown[:57] + '...' if len(shown) > 60 else shown}"


def _whole(value: Any, least: int) -> bool:
    """``value`` is a whole number (an int, not a bool) of at least ``least``."""
    return (type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))) \
        and value >= least


def _seconds(value: Any) -> bool:
    """``value`` is a finite number of seconds >= 0."""
    return (type(value) is float or (isinstance(value, numbers.Real) and not isinstance(value, bool))) \
        and 0.0 <= value < math.inf


def _text(value: Any) -> bool:
    return type(value) is str or isinstance(value, str)


def _stored(value: Any) -> str | None:
    """Why ``value`` cannot be stored in a JSON column (the SQL recorder's encoder,
    `controlplane.storage.jsoncodec.dumps`); None when it can."""
    try:
        dumps(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _reason(kind: str, reason: Any) -> str | None:
    """The error of a decision's ``reason`` (stored as text, and a cache hit's as its request's reason)."""
    if type(reason) is str or isinstance(reason, str):
        return None
    return f"{kind}.reason must be a string, got {_shown(reason)}"


def _admission_fields(d: Admission) -> str | None:
    if type(d.admit) is not bool:
        return f"Admission.admit must be True or False, got {_shown(d.admit)}"
    if not _text(d.reason):
        return f"Admission.reason must be a string, got {_shown(d.reason)}"
    if d.priority is not None and not _whole(d.priority, -(2**31)):
        return f"Admission.priority must be a whole number or None, got {_shown(d.priority)}"
    if not isinstance(d.code, ReasonCode):
        return f"Admission.code must be a controlplane.types.ReasonCode, got {_shown(d.code)}"
    if d.retry_after_s is not None and not _seconds(d.retry_after_s):
        return f"Admission.retry_after_s must be a finite number of seconds >= 0 or None, got {_shown(d.retry_after_s)}"
    return None


def _scale_fields(decision: ScaleDecision) -> str | None:
    value = decision.target_replicas
    if not _whole(value, 0):
        return f"ScaleDecision.target_replicas must be a whole number >= 0 (int), got {_shown(value)}"
    if not _text(decision.model) or not _text(decision.reason):
        return f"ScaleDecision.model and .reason must be strings, got {_shown(decision.model)}, {_shown(decision.reason)}"
    at = decision.next_start_s
    if at is not None and not (_real(at) and math.isfinite(at)):
        return f"ScaleDecision.next_start_s must be a finite run time in seconds or None, got {type(at).__name__} {at!r}"
    if decision.held_target is not None and not _whole(decision.held_target, 0):
        return f"ScaleDecision.held_target must be a whole number >= 0 (int) or None, got {_shown(decision.held_target)}"
    c = decision.confidence
    if c is not None and not (isinstance(c, numbers.Real) and not isinstance(c, bool) and 0.0 <= c <= 1.0):
        return f"ScaleDecision.confidence must be a number from 0 to 1 or None, got {_shown(c)}"
    signals = decision.signals
    if signals is not None and not (isinstance(signals, dict) and all(
            _text(k) and _real(v) for k, v in signals.items())):
        return f"ScaleDecision.signals must be a dict of names to numbers or None, got {_shown(signals)}"
    return None


def _real(v: object) -> bool:
    """A real number, not a bool. A float or an int is told by its type alone: the ABC's ``isinstance`` is ~1 us a
    call, and a planner's decision carries a dozen signals at every tick."""
    t = type(v)
    return t is float or t is int or (isinstance(v, numbers.Real) and not isinstance(v, bool))


def _memory_fields(plan: MemoryPlan) -> str | None:
    for name, least in (("max_num_seqs", 1), ("max_batch_tokens", 1), ("num_kv_blocks", 0), ("kv_block_size", 1)):
        value = getattr(plan, name)
        if not _whole(value, least):
            return f"MemoryPlan.{name} must be a whole number >= {least}, got {_shown(value)}"
    return _reason("MemoryPlan", plan.reason)


def _cache_hit_fields(hit: CacheHit) -> str | None:
    latency = hit.latency_s
    # float first: the common case costs one type test and one chained comparison (no NaN, no inf)
    if not ((type(latency) is float or (isinstance(latency, numbers.Real) and not isinstance(latency, bool)))
            and 0.0 <= latency < math.inf):
        return f"CacheHit.latency_s must be a finite number of seconds >= 0, got {type(latency).__name__} {latency!r}"
    if hit.kind not in CACHE_KINDS:
        return f"CacheHit.kind must be one of {', '.join(sorted(CACHE_KINDS))}, got {_shown(hit.kind)}"
    if hit.output_tokens is not None and not _whole(hit.output_tokens, 0):
        return f"CacheHit.output_tokens must be a whole number >= 0 or None, got {_shown(hit.output_tokens)}"
    if hit.response_text is not None and not _text(hit.response_text):
        return f"CacheHit.response_text must be a string or None, got {_shown(hit.response_text)}"
    similarity = hit.similarity
    if similarity is not None and not (_real(similarity) and math.isfinite(similarity)):
        return f"CacheHit.similarity must be a finite number or None, got {_shown(similarity)}"
    return _reason("CacheHit", hit.reason)


def _route_fields(decision: RouteDecision) -> str | None:
    """A route's ``reason`` is stored as text, its ``scores`` in the decision's JSON payload (each route's check:
    two type tests when there are no scores, an encoding when there are, which the recorder repeats)."""
    if type(decision.reason) is not str:
        why = _reason("RouteDecision", decision.reason)
        if why is not None:
            return why
    scores = decision.scores
    if scores is not None:
        if not isinstance(scores, dict):
            return f"RouteDecision.scores must be a dict or None, got {_shown(scores)}"
        why = _stored(scores)
        if why is not None:
            return f"RouteDecision.scores must be JSON-encodable (it is stored with the decision), got {_shown(scores)}: {why}"
    return None


def _tokens(hook: str) -> Callable[[Any], str | None]:
    """The check of a prefix cache's answer: a whole number of prompt tokens >= 0 (0: no hit), not a bool."""

    def check(n: Any) -> str | None:
        if type(n) is int and n >= 0 or _whole(n, 0):
            return None
        return f"{hook} must return a whole number of tokens >= 0 (0 or None: no hit), got {_shown(n)}"

    return check


#: `GuardianPlan.mode` and ``combine`` values the core carries out.
GUARDIAN_MODES = frozenset({"sync", "async"})
GUARDIAN_COMBINES = frozenset({None, "any", "majority", "weighted"})
#: `CacheHit.kind` values (what the summary and the stored rows count).
CACHE_KINDS = frozenset({"exact", "semantic"})


def _guardian_fields(plan: GuardianPlan) -> str | None:
    while plan is not None:  # the plan, then each tier of its cascade
        if type(plan.check) is not bool:
            return f"GuardianPlan.check must be True or False, got {_shown(plan.check)}"
        why = _reason("GuardianPlan", plan.reason)
        if why is not None:
            return why
        if not isinstance(plan.extra, dict):
            return f"GuardianPlan.extra must be a dict, got {_shown(plan.extra)}"
        if plan.extra and _stored(plan.extra) is not None:
            return f"GuardianPlan.extra must be JSON-encodable (it is stored with the decision): {_stored(plan.extra)}"
        if plan.mode not in GUARDIAN_MODES:
            return f"GuardianPlan.mode must be 'sync' or 'async', got {_shown(plan.mode)}"
        if plan.combine not in GUARDIAN_COMBINES:
            return f"GuardianPlan.combine must be 'any', 'majority', 'weighted' or None, got {_shown(plan.combine)}"
        if plan.cached is not None:
            if not isinstance(plan.cached, dict):
                return f"GuardianPlan.cached must be a dict (a known verdict) or None, got {_shown(plan.cached)}"
            why = _cached_verdict(plan.cached)
            if why is not None:
                return why
        elif plan.check and not (plan.names and all(_text(n) and n for n in plan.names)):
            return f"GuardianPlan names no guardian to check with (guardian {plan.guardian!r}, guardians {plan.guardians!r})"
        if plan.then is not None and not isinstance(plan.then, GuardianPlan):
            return f"GuardianPlan.then must be a GuardianPlan or None, got {_shown(plan.then)}"
        plan = plan.then
    return None


def _cached_verdict(cached: dict) -> str | None:
    """A known verdict's fields: its verdict, guardian and reason are stored as text (the request's verdict and
    reason), its score with the decision."""
    for key in ("verdict", "guardian", "reason", "stage"):
        value = cached.get(key)
        if value is not None and not _text(value):
            return f"GuardianPlan.cached[{key!r}] must be a string, got {_shown(value)}"
    score = cached.get("score")
    if score is not None and not (_real(score) and math.isfinite(score)):
        return f"GuardianPlan.cached['score'] must be a finite number or None, got {_shown(score)}"
    return None


#: Hook name -> a check of its result's fields (the result is of the hook's type): an error
#: message, or None when the core can act on it. Each runs on every non-None result, so each is cheap
#: where its hook is asked often (a route, a prefix lookup: per request, a few type tests) and checks
#: more only where the answer is rare or costs more itself (a cache hit: served, a decision recorded;
#: a route's scores: encoded again when stored).
FIELD_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "cp_admit_request": _admission_fields,  # (built-in admission answers only to refuse)
    "cp_scale": _scale_fields,
    "cp_plan_memory": _memory_fields,
    "cp_cache_lookup": _cache_hit_fields,
    "cp_guardian_plan": _guardian_fields,
    "cp_route_request": _route_fields,  # (per request: two type tests without scores)
    "cp_prefix_lookup": _tokens("cp_prefix_lookup"),
    "cp_prefix_peek": _tokens("cp_prefix_peek"),
}


def wrong_result(hook: str, result: Any) -> TypeError | None:
    """The error of ``hook`` having returned ``result``; None when it is of the hook's type (or None)."""
    expected = RESULT_TYPES.get(hook)
    if result is None or expected is None:
        return None
    if isinstance(result, expected):
        check = FIELD_CHECKS.get(hook)
        message = check(result) if check is not None else None
        return TypeError(message) if message is not None else None
    name = (expected[0] if isinstance(expected, tuple) else expected).__name__
    shown = repr(result)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return TypeError(f"{hook} returned {type(result).__name__} ({shown}), expected {name} or None")
