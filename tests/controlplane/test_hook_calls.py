"""A plugin that raises `SystemExit` (``argparse`` or ``sys.exit`` inside a hook) or `asyncio.CancelledError` is
isolated like one raising `RuntimeError`: its ``error`` decision names the plugin and the hook and the fallback
decides (before, both went through: a replay failed with ``SystemExit: 2`` naming neither, the daemon answered
500). `KeyboardInterrupt` still goes through (Ctrl-C stops a run), and a task's own cancellation is not lost."""

from __future__ import annotations

import asyncio

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import RouteDecision
from controlplane.testing import make_context, make_plugin_set, make_trace, replay_with

RAISED = [SystemExit(2), asyncio.CancelledError("its own future"), GeneratorExit()]


class Raising(Plugin):
    """Raises ``exc`` in the hooks named in ``hooks``."""

    name = "raising"

    def __init__(self, exc: BaseException, hooks: tuple[str, ...] = ("cp_route_request",)) -> None:
        super().__init__()
        self.exc, self.hooks = exc, hooks

    def _maybe_raise(self, hook: str) -> None:
        if hook in self.hooks:
            raise self.exc

    @hookimpl
    def cp_run_started(self, ctx):
        self._maybe_raise("cp_run_started")

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        self._maybe_raise("cp_route_request")

    @hookimpl
    def cp_on_event(self, event):
        self._maybe_raise("cp_on_event")


class FirstWorker(Plugin):
    """A second router, so the raising one is asked through the generic caller (`_FirstResult`)."""

    name = "first-worker"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision(workers[0].worker_id, "the first")


class Wrapping(Plugin):
    """A wrapper around routing that raises: pluggy's own caller runs the hook."""

    name = "wrapping"

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    @hookimpl(wrapper=True)
    def cp_route_request(self, ctx, request, workers):
        yield
        raise self.exc


def _errors(res, hook):
    return [d for d in res.decisions if d.is_error and d.hook == hook]


@pytest.mark.parametrize("exc", RAISED, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("hooks", [("cp_route_request",), ("cp_on_event",), ("cp_run_started",)],
                         ids=lambda h: h[0])
def test_a_hook_raising_a_base_exception_is_the_plugins_error(exc, hooks):
    res = replay_with(Raising(exc, hooks), trace=make_trace(6))
    errors = _errors(res, hooks[0])
    assert errors and {d.plugin for d in errors} == {"raising"}
    assert errors[0].reason.startswith(type(exc).__name__)
    assert res.summary["num_completed"] == 6
    if hooks[0] == "cp_route_request":  # the built-in router decided each
        routed = [d for d in res.decisions if d.hook == "cp_route_request" and not d.is_error]
        assert len(routed) == 6 and all(d.plugin == "least-loaded" for d in routed)


@pytest.mark.parametrize("exc", RAISED, ids=lambda e: type(e).__name__)
def test_a_base_exception_is_isolated_with_another_router_and_in_a_wrapper(exc):
    res = replay_with(Raising(exc), FirstWorker(), trace=make_trace(6))  # the generic caller
    assert {d.plugin for d in _errors(res, "cp_route_request")} == {"raising"}
    assert res.summary["num_completed"] == 6
    res = replay_with(Wrapping(exc), trace=make_trace(6))  # pluggy's caller
    assert {d.plugin for d in _errors(res, "cp_route_request")} == {"wrapping"}
    assert res.summary["num_completed"] == 6


@pytest.mark.parametrize("hooks", [("cp_route_request",), ("cp_on_event",)], ids=lambda h: h[0])
def test_keyboard_interrupt_still_stops_the_run(hooks):
    with pytest.raises(KeyboardInterrupt):
        replay_with(Raising(KeyboardInterrupt(), hooks), trace=make_trace(6))
    with pytest.raises(KeyboardInterrupt):
        replay_with(Raising(KeyboardInterrupt(), hooks), FirstWorker(), trace=make_trace(6))


def test_a_cancelled_error_a_hook_raises_does_not_cancel_its_task_and_a_tasks_cancellation_is_kept():
    """Hooks are plain functions: a task is cancelled at its next ``await``, never inside a hook, so a
    `CancelledError` out of a hook is the plugin's own; a ``cancel()`` of the task while a hook runs (the hook
    cancelling it, as nothing else runs meanwhile) still cancels it at that ``await``."""
    plugins = make_plugin_set(Raising(asyncio.CancelledError(), ("cp_run_started",)))
    ctx = make_context()

    async def serve() -> str:
        plugins.hook.cp_run_started(ctx=ctx)
        await asyncio.sleep(0)
        return "served"

    class CancelsItsTask(Plugin):
        name = "cancels-its-task"

        @hookimpl
        def cp_run_started(self, ctx):
            asyncio.current_task().cancel()
            raise asyncio.CancelledError

    cancelling = make_plugin_set(CancelsItsTask())

    async def cancelled() -> str:
        cancelling.hook.cp_run_started(ctx=ctx)
        await asyncio.sleep(0)
        return "not cancelled"

    async def waiting() -> None:
        plugins.hook.cp_run_started(ctx=ctx)
        await asyncio.sleep(10)

    async def main() -> None:
        assert await asyncio.create_task(serve()) == "served"
        assert [(e.plugin, e.hook) for e in plugins.monitor.take_errors()] == [("raising", "cp_run_started")]
        task = asyncio.create_task(cancelled())
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [e.plugin for e in cancelling.monitor.take_errors()] == ["cancels-its-task"]
        task = asyncio.create_task(waiting())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
