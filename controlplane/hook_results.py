"""What each policy hook must return (its decision type, or None to defer).

A plugin returning anything else made a mistake the core cannot act on: the callers in
`controlplane.plugin_manager` and `controlplane.policy_calls` treat it like a raise (recorded
as the plugin's error, the next implementation or the built-in fallback decides), with the
`TypeError` of :func:`wrong_result` as its reason.
"""

from __future__ import annotations

import numbers
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


def wrong_result(hook: str, result: Any) -> TypeError | None:
    """The error of ``hook`` having returned ``result``; None when it is of the hook's type (or None)."""
    expected = RESULT_TYPES.get(hook)
    if result is None or expected is None or isinstance(result, expected):
        return None
    name = (expected[0] if isinstance(expected, tuple) else expected).__name__
    shown = repr(result)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return TypeError(f"{hook} returned {type(result).__name__} ({shown}), expected {name} or None")
