"""A policy hook that returns the wrong type is the plugin's error, isolated like a raise: recorded
as an error decision naming the plugin, the hook and what it returned, and the next
implementation (or the built-in fallback) decides. The run completes."""

from __future__ import annotations

import pytest

from controlplane import Plugin, hookimpl
from controlplane.config import DEFAULT_PLUGINS
from controlplane.decisions import RouteDecision
from controlplane.hook_calls import MAX_RECORDED_ERRORS
from controlplane.plugin_manager import TRACE_ENV
from controlplane.testing import make_trace, replay_with
from tests.fixtures.common import assert_conserved


def _returning(hook: str, args: str, value: object) -> Plugin:
    """A plugin whose ``hook`` returns ``value``."""
    namespace: dict = {"hookimpl": hookimpl, "value": value}
    exec(f"def {hook}(self, {args}):\n    return value\n", namespace)  # noqa: S102
    cls = type("Wrong", (Plugin,), {"name": f"wrong-{hook}", hook: hookimpl(namespace[hook])})
    return cls()


WRONG = [
    ("cp_admit_request", "ctx, request", True, "bool"),
    ("cp_cache_lookup", "ctx, request", True, "bool"),
    ("cp_route_request", "ctx, request, workers", "default-0", "str"),
    ("cp_form_batch", "ctx, worker", [], "list"),
    ("cp_scale", "ctx, model, scaling", 2, "int"),
    ("cp_plan_memory", "ctx, worker, trigger", {"max_num_seqs": 4}, "dict"),
    ("cp_guardian_plan", "ctx, request, stage", False, "bool"),
]


@pytest.fixture(params=["fast", "pluggy"])
def caller(request, monkeypatch):
    """Both callers: the fast one, and pluggy's own (tracing on)."""
    if request.param == "pluggy":
        monkeypatch.setenv(TRACE_ENV, "1")
    else:
        monkeypatch.delenv(TRACE_ENV, raising=False)
    return request.param


@pytest.mark.parametrize(("hook", "args", "value", "type_name"), WRONG, ids=[w[0] for w in WRONG])
def test_a_wrong_return_type_is_an_error_decision_and_the_run_completes(caller, hook, args, value, type_name):
    plugin = _returning(hook, args, value)
    res = replay_with(plugin, trace=make_trace(6), plugins={"enabled": list(DEFAULT_PLUGINS)})
    errors = [d for d in res.decisions if d.is_error]
    assert errors, "the wrong result must be recorded"
    assert {(d.hook, d.plugin) for d in errors} == {(hook, plugin.name)}
    assert errors[0].reason.startswith(f"TypeError: {hook} returned {type_name}")
    assert "or None" in errors[0].reason
    assert res.summary["num_requests"] == 6
    # (a batcher answering wrongly is asked at every iteration, as in the exact mode: past the first
    # MAX_RECORDED_ERRORS of a plugin's hook its errors are counted, not recorded)
    assert len(errors) == min(res.summary["num_plugin_errors"], MAX_RECORDED_ERRORS)
    assert_conserved(res.summary, res.requests)


def test_the_next_router_decides_after_a_wrong_return_type(caller):
    class FirstReady(Plugin):
        name = "first-ready"

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            return RouteDecision(workers[0].worker_id, "first")

    res = replay_with(_returning("cp_route_request", "ctx, request, workers", "default-0"), FirstReady(),
                      trace=make_trace(5))
    assert {d.plugin for d in res.decisions if d.action == "route"} == {"first-ready"}
    assert res.summary["num_completed"] == 5


def test_a_wrapper_returning_a_wrong_type_is_recorded_and_the_fallback_decides():
    class BadWrapper:
        name = "bad-wrapper"

        @hookimpl(wrapper=True)
        def cp_scale(self, ctx, model, scaling):
            yield
            return "two"

    res = replay_with(BadWrapper(), trace=make_trace(5))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_scale", "bad-wrapper")}
    assert errors[0].reason.startswith("TypeError: cp_scale returned str")
    assert res.summary["num_completed"] == 5


class RaisingWrapper(Plugin):
    """Wraps a hook whose built-in plugin is enabled (the default list) and raises on every third call: no
    fallback was left to ask, so nobody decided (a batch never planned: its worker's requests failed as stalled
    or rejected; a route to nobody, sent on by the core under its own name)."""

    def __init__(self, hook: str) -> None:
        super().__init__()
        self.name, self.calls = f"raising-{hook}-wrapper", 0

    def _after(self):
        self.calls += 1
        if self.calls % 3 == 0:
            raise RuntimeError("audit log unavailable")

    @hookimpl(wrapper=True)
    def cp_form_batch(self, ctx, worker):
        plan = yield
        if self.name == "raising-cp_form_batch-wrapper":
            self._after()
        return plan

    @hookimpl(wrapper=True)
    def cp_route_request(self, ctx, request, workers):
        decision = yield
        if self.name == "raising-cp_route_request-wrapper":
            self._after()
        return decision


@pytest.mark.parametrize(("hook", "builtin"), [("cp_form_batch", "continuous-batching"),
                                               ("cp_route_request", "least-loaded")])
def test_a_raising_wrapper_around_an_enabled_built_in_leaves_the_built_in_to_decide(hook, builtin):
    res = replay_with(RaisingWrapper(hook), trace=make_trace(40, qps=10))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {(hook, f"raising-{hook}-wrapper")}
    # (a wrapper of cp_form_batch is asked at every iteration: its errors past MAX_RECORDED_ERRORS are only counted)
    assert res.summary["num_completed"] == 40
    assert len(errors) == min(res.summary["num_plugin_errors"], MAX_RECORDED_ERRORS)
    # (the core's batch_cut rows record what a batch ran, not who formed it)
    by = {d.plugin for d in res.decisions if d.hook == hook and not d.is_error and d.action != "batch_cut"}
    assert f"{builtin} (fallback)" in by and "core" not in by
    assert_conserved(res.summary, res.requests)


def test_a_subclass_of_the_decision_type_is_accepted():
    from controlplane.scaling import SteadyScaleDecision

    class Steady(Plugin):
        name = "steady"

        @hookimpl
        def cp_scale(self, ctx, model, scaling):
            return SteadyScaleDecision(model, 1, "one")

    res = replay_with(Steady(), trace=make_trace(5))
    assert not [d for d in res.decisions if d.is_error]


@pytest.mark.parametrize("target", [2.5, 2.0, "2", None, -2, True])
def test_a_scale_decision_with_a_target_that_is_not_a_whole_number_is_an_error_decision(caller, target):
    from controlplane.decisions import ScaleDecision

    class FloatScaler(Plugin):
        name = "float-scaler"

        @hookimpl
        def cp_scale(self, ctx, model, scaling):
            return ScaleDecision(model, target, "computed with numpy")

    res = replay_with(FloatScaler(), trace=make_trace(6))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_scale", "float-scaler")}
    assert f"ScaleDecision.target_replicas must be a whole number >= 0 (int), got {type(target).__name__}" \
        in errors[0].reason
    assert res.summary["num_completed"] == 6


def test_a_numpy_integer_target_is_a_whole_number():
    import numpy as np

    from controlplane.decisions import ScaleDecision

    class NumpyScaler(Plugin):
        name = "numpy-scaler"

        @hookimpl
        def cp_scale(self, ctx, model, scaling):
            return ScaleDecision(model, np.int64(2), "numpy int")

    res = replay_with(NumpyScaler(), trace=make_trace(6))
    assert not [d for d in res.decisions if d.is_error]
    assert res.summary["num_completed"] == 6


def test_a_scale_decision_for_another_model_is_an_error_and_not_applied():
    from controlplane.decisions import ScaleDecision

    class Confused(Plugin):
        name = "confused-scaler"

        @hookimpl
        def cp_scale(self, ctx, model, scaling):
            return ScaleDecision("some-other-model", 5, "a table keyed by the wrong name")

    res = replay_with(Confused(), trace=make_trace(6))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_scale", "confused-scaler")}
    assert "returned a ScaleDecision for 'some-other-model'; not applied" in errors[0].reason
    assert errors[0].subject == "default"  # the model it was asked about
    assert res.summary["num_scale_events"] == 0 and res.summary["peak_replicas"] == 2  # the configured 2 kept
    assert res.summary["num_completed"] == 6 and res.summary["num_plugin_errors"] >= 1


def _cache_hit_plugin(latency: object) -> Plugin:
    from controlplane.decisions import CacheHit

    class Hit(Plugin):
        name = "bad-latency-cache"

        @hookimpl
        def cp_cache_lookup(self, ctx, request):
            return CacheHit("exact", latency, None, 1.0, "always")

    return Hit()


@pytest.mark.parametrize("latency", [-1.0, -1, float("nan"), float("inf"), "0.1", None],
                         ids=["negative", "negative-int", "nan", "inf", "str", "none"])
def test_a_cache_hit_with_a_bad_latency_is_an_error_decision_and_the_request_is_served(caller, latency):
    res = replay_with(_cache_hit_plugin(latency), trace=make_trace(6))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_cache_lookup", "bad-latency-cache")}
    assert f"CacheHit.latency_s must be a finite number of seconds >= 0, got {type(latency).__name__}" \
        in errors[0].reason
    assert res.summary["num_completed"] == 6  # by a worker: the hit was not served
    assert not any(r.cache_hit for r in res.requests)
    assert all(r.first_token_s >= r.arrival_s and r.finish_s >= r.first_token_s for r in res.requests)
    assert res.summary["ttft_p50_s"] > 0
    assert_conserved(res.summary, res.requests)


@pytest.mark.parametrize("latency", [0.0, 0, 0.25])
def test_a_cache_hit_with_a_finite_latency_is_served(caller, latency):
    import numpy as np

    for value in (latency, np.float64(latency)):
        res = replay_with(_cache_hit_plugin(value), trace=make_trace(6))
        assert not [d for d in res.decisions if d.is_error]
        assert all(r.cache_hit == "exact" for r in res.requests)
        assert all(r.finish_s == pytest.approx(r.arrival_s + float(latency)) for r in res.requests)


@pytest.mark.parametrize("at", ["soon", float("nan"), float("inf")])
def test_a_scale_decision_with_a_next_start_that_is_not_a_run_time_is_an_error_decision(at):
    from controlplane.decisions import ScaleDecision

    class LateScaler(Plugin):
        name = "late-scaler"

        @hookimpl
        def cp_scale(self, ctx, model, scaling):
            return ScaleDecision(model, 1, "held back", next_start_s=at)

    res = replay_with(LateScaler(), trace=make_trace(6))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_scale", "late-scaler")}
    assert "ScaleDecision.next_start_s must be a finite run time in seconds or None" in errors[0].reason
    assert res.summary["num_completed"] == 6


def test_a_raise_in_cp_run_finished_is_counted_in_the_summary():
    """It was recorded as an error decision after the summary's count was taken: `runs show` listed the error
    beside "plugin errors 0"."""

    class FinishBoom(Plugin):
        name = "finish-boom"

        @hookimpl
        def cp_run_finished(self, ctx, summary):
            raise RuntimeError("cannot export summary")

    res = replay_with(FinishBoom(), trace=make_trace(5))
    errors = [d for d in res.decisions if d.is_error]
    assert [(d.hook, d.plugin) for d in errors] == [("cp_run_finished", "finish-boom")]
    assert res.summary["num_plugin_errors"] == 1
    assert res.summary["plugin_error_counts"] == {"finish-boom": {"cp_run_finished": 1}}
