"""What each policy hook must return (its decision type, or None to defer).

A plugin returning anything else made a mistake the core cannot act on: the callers in
`controlplane.plugin_manager` and `controlplane.policy_calls` treat it like a raise (recorded
as the plugin's error, the next implementation or the built-in fallback decides), with the
`TypeError` of :func:`wrong_result` as its reason. A few fields the core cannot act on unless
they have the right type or range are checked too (`FIELD_CHECKS`: a replica count of 2.5, a
cache hit's negative latency).
"""

from __future__ import annotations

import math
import numbers
import operator
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


def _scale_fields(decision: ScaleDecision) -> str | None:
    try:
        operator.index(decision.target_replicas)
    except TypeError:
        value = decision.target_replicas
        return f"ScaleDecision.target_replicas must be a whole number (int), got {type(value).__name__} {value!r}"
    at = decision.next_start_s
    if at is not None and not (isinstance(at, numbers.Real) and math.isfinite(at)):
        return f"ScaleDecision.next_start_s must be a finite run time in seconds or None, got {type(at).__name__} {at!r}"
    return None


def _cache_hit_fields(hit: CacheHit) -> str | None:
    latency = hit.latency_s
    # float first: the common case costs one type test and one chained comparison (no NaN, no inf)
    if (type(latency) is float or isinstance(latency, numbers.Real)) and 0.0 <= latency < math.inf:
        return None
    return f"CacheHit.latency_s must be a finite number of seconds >= 0, got {type(latency).__name__} {latency!r}"


#: Hook name -> a check of its result's fields (the result is of the hook's type): an error
#: message, or None when the core can act on it. Each runs on every non-None result, so only for
#: hooks asked rarely (per tick) or whose non-None results are rare enough to cost nothing beside
#: what the core does with them (a cache hit: served, a decision recorded; a miss is not checked).
FIELD_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "cp_scale": _scale_fields,
    "cp_cache_lookup": _cache_hit_fields,
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
