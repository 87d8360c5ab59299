"""A decision whose fields the core cannot act on (a refusal's code as a string, a memory plan of no
sequences, a negative replica target, signals that are not numbers by name, a cache hit of negative
tokens, a guardian plan's unknown combine rule) is the plugin's error, recorded like a raise: the next
implementation or the built-in decides and the run completes with every request accounted for
(`controlplane.hook_results.FIELD_CHECKS`). Before, each of these crashed the run with a traceback, or
was applied silently (a target of -2 scaled to 0; a memory plan of -1 KV blocks rejected every request)."""

from __future__ import annotations

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import Admission, CacheHit, GuardianPlan, MemoryPlan, ScaleDecision
from controlplane.testing import make_trace, replay_with
from controlplane.types import ReasonCode
from tests.fixtures.common import assert_conserved


def _returning(hook: str, args: str, value: object) -> Plugin:
    namespace: dict = {"hookimpl": hookimpl, "value": value}
    exec(f"def {hook}(self, {args}):\n    return value\n", namespace)  # noqa: S102
    return type("Faulty", (Plugin,), {"name": "faulty", hook: hookimpl(namespace[hook])})()


_GUARDED = {"guardians": {"models": [{"name": "g"}]}}

BAD = [
    ("cp_admit_request", "ctx, request", Admission(False, "full", code="queue_full"),
     "Admission.code must be a controlplane.types.ReasonCode, got str 'queue_full'", {}),
    ("cp_admit_request", "ctx, request", Admission(False, 123), "Admission.reason must be a string, got int 123", {}),
    ("cp_admit_request", "ctx, request", Admission(True, "ok", priority="high"),
     "Admission.priority must be a whole number or None, got str 'high'", {}),
    ("cp_admit_request", "ctx, request", Admission(False, "later", code=ReasonCode.QUEUE_FULL, retry_after_s=-1),
     "Admission.retry_after_s must be a finite number of seconds >= 0 or None", {}),
    ("cp_admit_request", "ctx, request", Admission(1, "yes"), "Admission.admit must be True or False, got int 1", {}),
    ("cp_scale", "ctx, model, scaling", ScaleDecision("default", 2, "x", signals=[1, 2]),
     "ScaleDecision.signals must be a dict of names to numbers or None, got list [1, 2]", {}),
    ("cp_scale", "ctx, model, scaling", ScaleDecision("default", 2, "x", confidence=3.0),
     "ScaleDecision.confidence must be a number from 0 to 1 or None, got float 3.0", {}),
    ("cp_plan_memory", "ctx, worker, trigger", MemoryPlan(0, 0, -1),
     "MemoryPlan.max_num_seqs must be a whole number >= 1, got int 0", {}),
    ("cp_plan_memory", "ctx, worker, trigger", MemoryPlan(8, 2048, 100, 0),
     "MemoryPlan.kv_block_size must be a whole number >= 1, got int 0", {}),
    ("cp_cache_lookup", "ctx, request", CacheHit("exact", output_tokens=-5),
     "CacheHit.output_tokens must be a whole number >= 0 or None, got int -5", {}),
    ("cp_cache_lookup", "ctx, request", CacheHit("banana"), "CacheHit.kind must be one of exact, semantic", {}),
    ("cp_guardian_plan", "ctx, request, stage", GuardianPlan(True, "g", combine="all"),
     "GuardianPlan.combine must be 'any', 'majority', 'weighted' or None, got str 'all'", _GUARDED),
    ("cp_guardian_plan", "ctx, request, stage", GuardianPlan(True, "g", mode="later"),
     "GuardianPlan.mode must be 'sync' or 'async', got str 'later'", _GUARDED),
]


@pytest.mark.parametrize(("hook", "args", "value", "message", "config"), BAD,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_a_decision_with_a_field_the_core_cannot_act_on_is_the_plugins_error(hook, args, value, message, config):
    res = replay_with(_returning(hook, args, value), trace=make_trace(6), **config)
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {(hook, "faulty")}
    assert errors[0].reason.startswith(f"TypeError: {message}")
    assert res.summary["num_plugin_errors"] == len(errors)
    assert res.summary["num_completed"] == 6  # the built-in (or nobody, for a cache or a guardian) decided
    assert_conserved(res.summary, res.requests)
