"""PolicyCalls: the event bus's per-type observers and the direct call of single-implementation hooks
behave as the generic callers do (who gets which event, errors recorded, fallbacks)."""

from __future__ import annotations

from controlplane import Plugin, hookimpl
from controlplane.decisions import Admission
from controlplane.events import RequestArrived, RequestFinished, WorkerChanged
from controlplane.testing import make_trace, replay_with
from controlplane.types import Decision, RequestStatus


class Typed:
    """An observer naming its handlers by event type: it gets only those, with the event alone."""

    name = "typed-observer"

    def __init__(self) -> None:
        self.seen: list[type] = []
        self.event_handlers = {RequestFinished: self._finished}

    def _finished(self, event) -> None:
        self.seen.append(type(event))

    @hookimpl
    def cp_on_event(self, ctx, event):  # pluggy's path (wrappers, tracing) only
        raise AssertionError("the bus calls event_handlers instead")


class Everything:
    name = "every-event"

    def __init__(self) -> None:
        self.types: set[type] = set()

    @hookimpl
    def cp_on_event(self, event):  # takes the event alone
        self.types.add(type(event))


class Observing(Plugin):
    """Names the event types it wants (``observes``): a base class names its subclasses too."""

    name = "observing"
    observes = (RequestFinished, WorkerChanged)

    def __init__(self) -> None:
        super().__init__()
        self.types: set[type] = set()

    @hookimpl
    def cp_on_event(self, ctx, event):
        assert ctx is not None
        self.types.add(type(event))


class Raising:
    name = "raising-observer"

    @hookimpl
    def cp_on_event(self, ctx, event):
        if type(event) is RequestArrived:
            raise RuntimeError("observer broke")


class Refusing:
    """The only admission policy, and it raises for every second request: the fallback decides."""

    name = "flaky-admission"

    def __init__(self) -> None:
        self.n = 0

    @hookimpl
    def cp_admit_request(self, ctx, request):
        self.n += 1
        if self.n % 2 == 0:
            raise ValueError("admission broke")
        return Admission(False, "no")


def test_typed_observers_get_only_their_events_and_a_raising_observer_does_not_stop_the_others():
    typed, every = Typed(), Everything()
    res = replay_with(Raising(), typed, every, trace=make_trace(20))
    assert res.summary["num_requests"] == 20
    assert typed.seen == [RequestFinished] * 20
    assert {RequestArrived, RequestFinished, Decision} <= every.types
    errors = [d for d in res.decisions if d.is_error and d.plugin == "raising-observer"]
    assert len(errors) == 20 and all(d.hook == "cp_on_event" and "observer broke" in d.reason for d in errors)


def test_an_observer_that_names_its_event_types_gets_only_those():
    observing, every = Observing(), Everything()
    res = replay_with(observing, every, trace=make_trace(15))
    assert res.summary["num_completed"] == 15
    assert RequestArrived in every.types and Decision in every.types
    assert observing.types == {RequestFinished, WorkerChanged} & every.types and RequestFinished in observing.types


def test_a_single_admission_policy_that_raises_is_recorded_and_the_request_goes_on():
    policy = Refusing()
    res = replay_with(policy, trace=make_trace(10))
    finished = {r.request_id: r for r in res.requests}
    rejected = [r for r in finished.values() if r.status is RequestStatus.REJECTED]
    assert len(rejected) == 5 and all(r.reason == "no" for r in rejected)
    errors = [d for d in res.decisions if d.is_error and d.plugin == "flaky-admission"]
    assert len(errors) == 5 and all(d.hook == "cp_admit_request" for d in errors)
    assert sum(r.status is RequestStatus.COMPLETED for r in finished.values()) == 5



class RefusingWithoutCtx:
    """As `Refusing`, taking fewer arguments than the spec (no ctx): called directly with the one it names."""

    name = "flaky-admission-no-ctx"

    def __init__(self) -> None:
        self.n = 0
        self.seen: list = []

    @hookimpl
    def cp_admit_request(self, request):
        self.seen.append(request)
        self.n += 1
        if self.n % 2 == 0:
            raise ValueError("admission broke")
        return Admission(False, "no")


def test_a_single_policy_taking_fewer_arguments_is_called_directly_with_those_it_names():
    from controlplane.types import Request

    policy = RefusingWithoutCtx()
    res = replay_with(policy, trace=make_trace(10))
    assert policy.n == 10 and all(type(r) is Request for r in policy.seen)
    finished = {r.request_id: r for r in res.requests}
    assert sum(r.status is RequestStatus.REJECTED and r.reason == "no" for r in finished.values()) == 5
    errors = [d for d in res.decisions if d.is_error and d.plugin == "flaky-admission-no-ctx"]
    assert len(errors) == 5 and all(d.hook == "cp_admit_request" for d in errors)
    assert sum(r.status is RequestStatus.COMPLETED for r in finished.values()) == 5

class Misrouting:
    """Routes every request to a replica that does not exist: the core sends it to the least loaded."""

    name = "misrouting"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        from controlplane.decisions import RouteDecision

        return RouteDecision("no-such-replica", "wrong on purpose")


def test_a_route_to_a_replica_that_is_not_a_candidate_is_an_error_row_and_the_request_is_served():
    res = replay_with(Misrouting(), trace=make_trace(12))
    errors = [d for d in res.decisions if d.hook == "cp_route_request" and d.is_error]
    assert len(errors) == 12 and all("not a candidate" in d.reason for d in errors)
    assert res.summary["num_completed"] == 12
    assert res.summary["num_plugin_errors"] == 12  # the router's errors, counted like a raise


class Withdrawing(Plugin):
    """Refuses every request, unless made with ``withdraw``: then its settings would defer every call."""

    name = "withdrawing-admission"

    def __init__(self, withdraw: bool) -> None:
        super().__init__()
        self.n = 0
        if withdraw:
            self.withdraw("cp_admit_request")

    @hookimpl
    def cp_admit_request(self, ctx, request):
        self.n += 1
        return Admission(False, "no")


def test_a_withdrawn_hook_is_neither_registered_nor_asked_as_the_fallback():
    import pytest

    from controlplane.policy_calls import PolicyCalls
    from controlplane.session import RunSession
    from controlplane.testing import make_config, make_requests

    withdrawn = Withdrawing(True)
    res = replay_with(withdrawn, trace=make_trace(6))
    assert withdrawn.n == 0 and res.summary["num_completed"] == 6  # not registered: never asked
    assert withdrawn.cp_admit_request(None, None) is None  # called directly, it defers
    with pytest.raises(AttributeError, match="no hook"):
        withdrawn.withdraw("cp_no_such_hook")
    with RunSession(make_config(), mode="sim", record=False) as session:
        core = session.core
        for plugin, asked, answer in ((Withdrawing(False), 1, "withdrawing-admission (fallback)"),
                                      (Withdrawing(True), 0, None)):
            calls = PolicyCalls(session.plugins, {"cp_admit_request": plugin}, core.ctx, core.clock)
            decision, by = calls.decide("cp_admit_request", make_requests(1)[0])
            assert plugin.n == asked and by == answer
            assert (decision is None) == (asked == 0)


def test_an_implementation_taking_fewer_arguments_is_called_through_a_function_of_the_specs_shape():
    from controlplane.policy_calls import _picking_args

    def seen(*args):
        return args

    for pick in ((), (2,), (0, 1, 3), (1, 2, 3), (0, 1, 2, 3)):
        call = _picking_args(seen, pick, 4)
        given = ("ctx", "model", "workers", "scaling")
        assert call(*given) == tuple(given[i] for i in pick)
        assert call.__code__.co_argcount == 4 and not call.__code__.co_flags & 0x04  # no *args: a call 3.11 inlines


def test_the_hooks_nobody_answers_are_named_and_answered_none_and_a_policy_or_fallback_takes_one_out():
    from controlplane.policy_calls import PolicyCalls
    from controlplane.session import RunSession
    from controlplane.testing import make_config, make_requests

    with RunSession(make_config(), mode="sim", record=False) as session:
        core = session.core
        for hook in core.calls.unanswered:  # asked anyway, each gives what the core then assumes
            args = (make_requests(1)[0], "input") if hook == "cp_guardian_plan" else (make_requests(1)[0],)
            assert core.calls.decide(hook, *args) == (None, None)
        assert "cp_route_request" not in core.calls.unanswered  # a router is enabled
        unanswered = PolicyCalls(session.plugins, {}, core.ctx, core.clock).unanswered
        with_fallback = PolicyCalls(session.plugins, {"cp_admit_request": Withdrawing(False)}, core.ctx,
                                    core.clock).unanswered
        assert "cp_admit_request" in unanswered and "cp_admit_request" not in with_fallback
    res = replay_with(RefusingWithoutCtx(), trace=make_trace(4))  # one policy answers: it is asked
    assert sum(r.status is RequestStatus.REJECTED for r in res.requests) == 2


# --- the subject of a plugin's error decision -----------------------------------------------------


class RaisesEverywhere(Plugin):
    """Raises in admission, batching, memory planning and the observer's finished events; answers cp_scale
    with an int (a wrong type)."""

    name = "raises-everywhere"

    @hookimpl
    def cp_admit_request(self, ctx, request):
        raise RuntimeError("admit")

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        raise RuntimeError("batch")

    @hookimpl
    def cp_plan_memory(self, ctx, worker, trigger):
        raise RuntimeError("memory")

    @hookimpl
    def cp_scale(self, ctx, model, workers):
        return 3

    @hookimpl
    def cp_on_event(self, ctx, event):
        if type(event) is RequestFinished:
            raise RuntimeError("observer")


def test_a_plugins_error_decision_names_what_the_call_was_about(tmp_path):
    """`select subject from decision where is_error = 1` was empty: the request (admission, observers of its
    events), the worker (batching, memory plans) or the model (cp_scale) is its subject, stored too."""
    from controlplane.testing import stored_rows

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = replay_with(RaisesEverywhere(), trace=make_trace(5), db_url=url)
    errors = [d for d in res.decisions if d.is_error]
    by_hook: dict[str, set] = {}
    for d in errors:
        by_hook.setdefault(d.hook, set()).add(d.subject)
    assert by_hook["cp_admit_request"] == {"0", "1", "2", "3", "4"}
    assert by_hook["cp_on_event"] == {"0", "1", "2", "3", "4"}  # (each request's RequestFinished)
    assert by_hook["cp_form_batch"] <= {"default-0", "default-1"} and by_hook["cp_form_batch"]
    assert by_hook["cp_plan_memory"] == {"default-0", "default-1"}
    assert by_hook["cp_scale"] == {"default"}
    stored = [row for row in stored_rows(url, res.run_id, "decisions") if row["is_error"]]
    assert len(stored) == len(errors) and all(row["subject"] for row in stored)


class Boom(Plugin):
    """An observer failing on every event, error decisions included."""

    name = "boom"

    @hookimpl
    def cp_on_event(self, ctx, event):
        raise RuntimeError(type(event).__name__)


class Counting(Plugin):
    """Counts the events an observer failing on every one would fail on: all but the error decisions of
    observers' failures."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[object] = []

    @hookimpl
    def cp_on_event(self, ctx, event):
        if not (isinstance(event, Decision) and event.is_error and event.hook == "cp_on_event"):
            self.events.append(event)


def test_an_observer_failing_on_every_event_is_not_counted_again_for_the_decisions_of_its_own_failures():
    """Each failure became an error decision the observer failed on in turn, until its 100 recorded errors were
    spent (num_plugin_errors 138 for ~38 events; 99 errors 'RuntimeError: Decision' about 'default-0', none of
    its failures on RequestFinished recorded). Now each event's failure is counted and recorded once, about it."""
    from controlplane.events import RequestArrived as Arrived
    from controlplane.policy_calls import _event_subject

    counting = Counting()
    res = replay_with(Boom(), counting, trace=make_trace(5, qps=5))
    errors = [d for d in res.decisions if d.is_error and d.plugin == "boom"]
    assert res.summary["num_plugin_errors"] == len(counting.events) == len(errors) < 100
    assert [(d.subject, d.reason.split(" (raised at ")[0]) for d in errors] == [  # (the first says where)
        (_event_subject(e), f"RuntimeError: {type(e).__name__}") for e in counting.events]
    assert sum(d.reason == "RuntimeError: RequestFinished" for d in errors) == 5
    assert {d.subject for d in errors if d.reason == "RuntimeError: RequestFinished"} == {"0", "1", "2", "3", "4"}
    assert sum(type(e) is Arrived for e in counting.events) == 5


def test_two_observers_failing_on_every_event_do_not_answer_each_others_error_decisions():
    class Bang(Boom):
        name = "bang"

    counting = Counting()
    res = replay_with(Boom(), Bang(), counting, trace=make_trace(5, qps=5))
    assert res.summary["num_plugin_errors"] == 2 * len(counting.events)
    assert res.summary["plugin_error_counts"] == {"bang": {"cp_on_event": len(counting.events)},
                                                  "boom": {"cp_on_event": len(counting.events)}}
