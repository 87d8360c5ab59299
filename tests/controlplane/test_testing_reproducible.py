"""`controlplane.testing.assert_reproducible`: two replays of one trace with a plugin that reads state outside the run
(the wall clock, the global random module, a module global) differ, and nothing told the plugin's author; it names
the first decision (or request) where they part, and passes a plugin that keeps its state on itself."""

from __future__ import annotations

import random
import threading

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import RouteDecision
from controlplane.replay_differences import first_difference
from controlplane.testing import assert_reproducible, make_trace, replay_with

_OUTSIDE = random.Random(3)


class OutsideRandomRouter(Plugin):
    name = "outside-random-router"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision(_OUTSIDE.choice(list(workers)).worker_id, "outside random")


class CountingRouter(Plugin):
    """Reproducible: its state is its own (each replay gets a copy as it was), its random draws the run's."""

    name = "counting-router"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        self.calls += 1
        pick = workers[(self.calls + int(ctx.rng.integers(2))) % len(workers)]
        return RouteDecision(pick.worker_id, f"call {self.calls}")


def test_a_plugin_reading_state_outside_the_run_is_named_at_its_first_different_decision():
    with pytest.raises(AssertionError, match=r"not reproducible: .*decision #\d+ \(cp_route_request about \d+\) "
                                             r"differs: the first replay's was outside-random-router route"):
        assert_reproducible(OutsideRandomRouter(), trace=make_trace(60, qps=5),
                            cluster={"models": [{"name": "default", "replicas": 3}]})


def test_a_plugin_keeping_its_state_passes_and_each_replay_starts_from_a_copy():
    router = CountingRouter()
    router.calls = 5
    result = assert_reproducible(router, trace=iter(make_trace(40, qps=5)))  # (a stream: read into a list once)
    assert router.calls == 5 and result.summary["num_requests"] == 40  # (the copies counted, not the original)
    assert {d.reason for d in result.decisions if d.action == "route"} >= {"call 6", "call 45"}
    assert_reproducible(CountingRouter, trace=make_trace(10))  # (a class: a new instance each replay)


def test_a_plugin_that_cannot_be_copied_is_asked_for_its_class():
    router = CountingRouter()
    router.lock = threading.Lock()
    with pytest.raises(TypeError, match=r"plugin #1 \(CountingRouter\) cannot be copied .* pass its class"):
        assert_reproducible(router, trace=make_trace(5))


def test_requests_are_compared_when_the_decisions_agree():
    first = replay_with(trace=make_trace(5))
    second = replay_with(trace=make_trace(5))
    assert first_difference(first.decisions, second.decisions, first.requests, second.requests) is None
    second.requests[2].finish_s += 0.5
    said = first_difference(first.decisions, second.decisions, first.requests, second.requests)
    assert said.startswith(f"request {second.requests[2].request_id} differs first: its finish_s was")
    assert first_difference(first.decisions, second.decisions[:-1], first.requests, second.requests).startswith(
        "the first replay made more decisions")
