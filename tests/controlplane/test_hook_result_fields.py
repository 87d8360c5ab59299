"""A decision whose fields the core cannot act on (a refusal's code as a string, a memory plan of no
sequences, a negative replica target, signals that are not numbers by name, a cache hit of negative
tokens, a guardian plan's unknown combine rule) is the plugin's error, recorded like a raise: the next
implementation or the built-in decides and the run completes with every request accounted for
(`controlplane.hook_results.FIELD_CHECKS`). Before, each of these crashed the run with a traceback, or
was applied silently (a target of -2 scaled to 0; a memory plan of -1 KV blocks rejected every request)."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import Admission, BatchPlan, CacheHit, GuardianPlan, MemoryPlan, RouteDecision, ScaleDecision
from controlplane.testing import make_trace, replay_with, stored_rows
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


def _plugin_errors(hook, args, value, config):
    """The error decisions of a replay whose plugin ``faulty`` answers ``hook`` with ``value``; the run itself
    checked: every request served (the built-in, or nobody for a cache or a guardian, decided) and accounted."""
    res = replay_with(_returning(hook, args, value), trace=make_trace(6), **config)
    errors = [d for d in res.decisions if d.is_error]
    assert res.summary["num_plugin_errors"] == len(errors)
    assert res.summary["num_completed"] == 6
    assert_conserved(res.summary, res.requests)
    return errors


@pytest.mark.parametrize(("hook", "args", "value", "message", "config"), BAD,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_a_decision_with_a_field_the_core_cannot_act_on_is_the_plugins_error(hook, args, value, message, config):
    errors = _plugin_errors(hook, args, value, config)
    assert errors and {(d.hook, d.plugin) for d in errors} == {(hook, "faulty")}
    assert errors[0].reason.startswith(f"TypeError: {message}")


# What the core stores of a decision: its ``reason`` as text, its scores, extra and cached verdict as JSON. Before, a
# bad one was applied and failed only in the SQL recorder, blamed on ``sql-recorder``; a cache hit's reason is also
# its request's, so that request's row was lost.
UNSTORABLE = [
    ("cp_cache_lookup", "ctx, request", CacheHit("exact", 0.0, reason=("hit", 1)),
     "CacheHit.reason must be a string, got tuple ('hit', 1)", {}),
    ("cp_cache_lookup", "ctx, request", CacheHit("exact", 0.0, similarity="high"),
     "CacheHit.similarity must be a finite number or None, got str 'high'", {}),
    ("cp_route_request", "ctx, request, workers", RouteDecision("default-0", reason=7),
     "RouteDecision.reason must be a string, got int 7", {}),
    ("cp_route_request", "ctx, request, workers", RouteDecision("default-0", "x", scores={"default-0": object()}),
     "RouteDecision.scores must be JSON-encodable (it is stored with the decision)", {}),
    ("cp_route_request", "ctx, request, workers", RouteDecision("default-0", "x", scores=[1.0]),
     "RouteDecision.scores must be a dict or None, got list [1.0]", {}),
    ("cp_plan_memory", "ctx, worker, trigger", MemoryPlan(8, 2048, 100, reason=None),
     "MemoryPlan.reason must be a string, got NoneType None", {}),
    ("cp_guardian_plan", "ctx, request, stage", GuardianPlan(True, "g", reason=b"why"),
     "GuardianPlan.reason must be a string, got bytes b'why'", _GUARDED),
    ("cp_guardian_plan", "ctx, request, stage", GuardianPlan(False, "g", extra={"backoff": True, "at": object()}),
     "GuardianPlan.extra must be JSON-encodable (it is stored with the decision)", _GUARDED),
    ("cp_guardian_plan", "ctx, request, stage", GuardianPlan(True, "g", cached={"verdict": ["pass"]}),
     "GuardianPlan.cached['verdict'] must be a string, got list ['pass']", _GUARDED),
]


@pytest.mark.parametrize(("hook", "args", "value", "message", "config"), UNSTORABLE,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(UNSTORABLE)])
def test_a_decision_the_core_could_not_store_is_the_plugins_error(hook, args, value, message, config):
    errors = _plugin_errors(hook, args, value, config)
    assert errors and {(d.hook, d.plugin) for d in errors} == {(hook, "faulty")}
    assert errors[0].reason.startswith(f"TypeError: {message}")


class _UnstorableExpiry(Plugin):
    """Expires every waiting request with a reason that is not a string (the request's reason, once refused)."""

    name = "faulty"

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        return BatchPlan(expire=tuple((r, ("too", "late")) for r in worker.waiting)) if worker.waiting else None


def test_a_batch_plans_reason_that_is_not_a_string_is_the_plugins_error():
    res = replay_with(_returning("cp_form_batch", "ctx, worker", BatchPlan(reason=3)), trace=make_trace(6))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_form_batch", "faulty")}
    assert "reason must be a string, got int 3" in errors[0].reason
    res = replay_with(_UnstorableExpiry(), trace=make_trace(6))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_form_batch", "faulty")}
    assert "its reason must be a string, got tuple ('too', 'late')" in errors[0].reason
    assert res.summary["num_completed"] == 6 and all(type(r.reason) in (str, type(None)) for r in res.requests)


@pytest.mark.parametrize("plugin", [
    _returning("cp_cache_lookup", "ctx, request", CacheHit("exact", 0.0, reason=("hit", 1))),
    _returning("cp_route_request", "ctx, request, workers", RouteDecision("default-0", "x", scores={"a": object()})),
    _UnstorableExpiry(),
], ids=["cache-hit-reason", "route-scores", "expiry-reason"])
def test_a_bad_decision_payload_loses_no_stored_row(tmp_path, plugin):
    """The repro: a cache hit whose reason is a tuple, replayed into SQLite, stored 0 request rows."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = replay_with(plugin, trace=make_trace(6), db_url=url)
    assert not [d for d in res.decisions if d.plugin == "sql-recorder"]
    assert len(stored_rows(url, res.run_id, "requests")) == 6
    stored = stored_rows(url, res.run_id, "decisions")
    assert len(stored) == len(res.decisions)
    assert {d["plugin"] for d in stored if d["is_error"]} == {"faulty"}


# A number is never a bool, and a token count never negative (before, CacheHit(latency_s=True) was served in 1 s,
# cp_prefix_lookup's -50 was silently no hit and True a hit of 1 token, where 100.7 was an error).
NOT_NUMBERS = [
    ("cp_cache_lookup", "ctx, request", CacheHit("exact", True),
     "CacheHit.latency_s must be a finite number of seconds >= 0, got bool True", {}),
    ("cp_scale", "ctx, model, scaling", ScaleDecision("default", 1, "x", next_start_s=True),
     "ScaleDecision.next_start_s must be a finite run time in seconds or None, got bool True", {}),
]


@pytest.mark.parametrize(("hook", "args", "value", "message", "config"), NOT_NUMBERS,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(NOT_NUMBERS)])
def test_a_bool_or_a_negative_count_is_the_plugins_error(hook, args, value, message, config):
    errors = _plugin_errors(hook, args, value, config)
    assert errors and {(d.hook, d.plugin) for d in errors} == {(hook, "faulty")}
    assert errors[0].reason.startswith(f"TypeError: {message}")


def _hashed_trace(n: int = 6) -> list:
    """A trace whose requests carry prefix block hashes: the core asks the prefix caches about them."""
    return [dataclasses.replace(t, hash_ids=(1, 2), hash_block_tokens=16) for t in make_trace(n)]


@pytest.mark.parametrize("answer", [-50, True])
def test_a_prefix_lookup_of_a_bool_or_a_negative_count_is_the_plugins_error(answer):
    res = replay_with(_returning("cp_prefix_lookup", "ctx, worker, request", answer), trace=_hashed_trace())
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_prefix_lookup", "faulty")}
    assert errors[0].reason == ("TypeError: cp_prefix_lookup must return a whole number of tokens >= 0 (0 or None: "
                                f"no hit), got {type(answer).__name__} {answer!r}")
    assert res.summary["num_completed"] == 6 and all(not r.cached_tokens for r in res.requests)


def test_a_prefix_lookup_of_a_whole_number_is_a_hit_and_no_error():
    import numpy as np

    for value in (0, 64, np.int64(64)):
        res = replay_with(_returning("cp_prefix_lookup", "ctx, worker, request", value), trace=_hashed_trace())
        assert not [d for d in res.decisions if d.is_error]
        assert all(r.cached_tokens == (64 if value else 0) for r in res.requests)


class _Peeking(Plugin):
    """A router that reads ``ctx.prefix_match`` (``cp_prefix_peek``), and a peek answering ``answer``."""

    name = "faulty"

    def __init__(self, answer: object) -> None:
        super().__init__()
        self.answer, self.matches = answer, []

    @hookimpl
    def cp_prefix_peek(self, ctx, worker, request):
        return self.answer

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        self.matches.append(ctx.prefix_match(workers[0], request))


@pytest.mark.parametrize("answer", [-5, True])
def test_a_prefix_peek_of_a_bool_or_a_negative_count_is_the_plugins_error(answer):
    plugin = _Peeking(answer)
    res = replay_with(plugin, trace=make_trace(6))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_prefix_peek", "faulty")}
    assert f"got {type(answer).__name__} {answer!r}" in errors[0].reason
    assert plugin.matches == [0] * 6 and res.summary["num_completed"] == 6


def test_a_batch_plans_wake_of_true_is_the_plugins_error():
    res = replay_with(_returning("cp_form_batch", "ctx, worker", BatchPlan(wake_after_s=True)), trace=make_trace(6))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_form_batch", "faulty")}
    assert "wake_after_s must be a finite number >= 0, got True" in errors[0].reason
    assert res.summary["num_completed"] == 6
