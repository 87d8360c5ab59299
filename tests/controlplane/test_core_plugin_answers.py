"""What plugins see and what is recorded of their answers: a route to no candidate, the model a request
arrives with."""

from __future__ import annotations

from controlplane import Plugin, hookimpl
from controlplane import events as ev
from controlplane.decisions import RouteDecision
from controlplane.events import RequestArrived
from controlplane.testing import make_trace, replay_with
from controlplane.types import Request


class ToNowhere(Plugin):
    """Routes every request to a worker that does not exist."""

    name = "to-nowhere"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision("nope-9", "bad")


def test_a_route_to_an_unknown_worker_is_the_routers_error_and_the_fallback_routes_with_its_own_reason():
    """The route decision read plugin='core', reason='bad': the refused router's reason under another name."""
    res = replay_with(ToNowhere(), trace=make_trace(6))
    assert res.summary["num_completed"] == 6
    errors = [d for d in res.decisions if d.is_error]
    routes = [d for d in res.decisions if d.action == "route"]
    assert len(errors) == len(routes) == 6
    assert {(d.plugin, d.hook) for d in errors} == {("to-nowhere", "cp_route_request")}
    assert all("not a candidate (no such worker)" in d.reason for d in errors)
    for route in routes:
        assert route.plugin == "least-loaded (fallback)"
        assert "bad" not in route.reason.split(";")[0]  # its own reason first, never the refused one
        assert route.reason.startswith("least loaded (")
        assert route.reason.endswith("to-nowhere routed it to 'nope-9', refused: no such worker")
        assert route.payload["worker"] in {"default-0", "default-1"}


class ToAnotherModel(Plugin):
    """Routes every request to the first replica of the model 'other'."""

    name = "to-another-model"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision("other-0", "wrong model")


def test_a_route_to_a_replica_of_another_model_says_which_model_it_serves():
    res = replay_with(ToAnotherModel(), trace=make_trace(3),
                      cluster={"models": [{"name": "default", "replicas": 1}, {"name": "other", "replicas": 1}]})
    routes = [d for d in res.decisions if d.action == "route"]
    assert routes and all(d.plugin == "least-loaded (fallback)" and d.payload["worker"] == "default-0"
                          and d.reason.endswith("refused: it serves model 'other', not 'default'") for d in routes)


class StaleLeastLoaded(Plugin):
    """A router named like the built-in one, answering a worker that does not exist: no built-in is left to ask."""

    name = "least-loaded"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision("gone-1", "a stale id")


def test_a_route_the_builtin_router_got_wrong_is_the_cores_with_its_own_reason(harness):
    h = harness(StaleLeastLoaded(), plugins={"enabled": ["continuous-batching", "fixed-replicas", "static-memory"]})
    h.handle(ev.RequestArrived(0.0, Request("r0", 0.0, 8, 2)))
    (error,) = [d for d in h.log.decisions if d.is_error]
    (route,) = [d for d in h.log.decisions if d.action == "route"]
    assert error.plugin == "least-loaded" and error.subject == "r0" and "not a candidate" in error.reason
    assert route.plugin == "core" and route.reason.startswith("least loaded (0 queued+running); ")
    assert route.reason.endswith("least-loaded routed it to 'gone-1', refused: no such worker")


class Seen(Plugin):
    """Keeps the model of each request as observers and as admission see it."""

    name = "seen"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.arrived: list[str | None] = []
        self.admitted: list[str | None] = []

    @hookimpl
    def cp_on_event(self, ctx, event):
        if type(event) is RequestArrived:
            self.arrived.append(event.request.model)

    @hookimpl
    def cp_admit_request(self, ctx, request):
        self.admitted.append(request.model)


def test_observers_see_the_model_a_request_is_served_by_as_it_arrives():
    """A trace without model names on a cluster of one model 'llama': RequestArrived read model None,
    cp_admit_request 'llama'."""
    seen = Seen()
    replay_with(seen, trace=make_trace(5), cluster={"models": [{"name": "llama", "replicas": 1}]})
    assert seen.arrived == seen.admitted == ["llama"] * 5
