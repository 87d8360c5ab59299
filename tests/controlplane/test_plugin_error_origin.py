"""Where a plugin's error was raised. The decision row, `runs show`'s first-error column and the daemon's warning said
only ``KeyError: 'missing'``: no file, no line. Now the first error of each plugin and hook names the plugin's own
line (the innermost frame of its code, not the library's it called), its decision's payload holds the traceback
(bounded), and the daemon logs it with the traceback; a test can make plugin errors raise instead."""

from __future__ import annotations

import logging
import json

import numpy as np
import pytest

from controlplane import Plugin, hook_calls, hookimpl
from controlplane.plugin_error_origin import MAX_TRACEBACK_CHARS, error_origin
from controlplane.testing import (PluginHookError, make_context, make_plugin_set, make_requests, make_trace,
                                  make_worker, replay_with)

HERE = "tests/controlplane/test_plugin_error_origin.py"


def _line(fn, offset: int) -> int:
    return fn.__code__.co_firstlineno + offset


class MissingKeyBatcher(Plugin):
    name = "missing-key-batcher"

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        return self._plan(worker)

    def _plan(self, worker):
        return {}["missing"]


class NumpyRouter(Plugin):
    """Fails inside numpy: the place is the plugin's line that called it."""

    name = "numpy-router"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return np.empty(0).max()


class DeepRouter(Plugin):
    name = "deep-router"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        def down(n):
            return down(n - 1) if n else 1 / 0
        return down(60)


def test_the_first_error_names_the_plugins_line_and_its_decision_holds_the_traceback(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = replay_with(MissingKeyBatcher(), trace=make_trace(8), db_url=url)
    errors = [d for d in res.decisions if d.is_error]
    where = f"{HERE}:{_line(MissingKeyBatcher._plan, 1)} in _plan"
    assert errors[0].reason == f"KeyError: 'missing' (raised at {where})"
    assert errors[0].payload["where"] == where
    text = errors[0].payload["traceback"]
    assert text.startswith("Traceback (most recent call last):") and text.endswith("KeyError: 'missing'")
    assert "in cp_form_batch" in text and "hook_calls" not in text and "policy_calls" not in text  # from the hook down
    assert all(d.reason == "KeyError: 'missing'" and d.payload is None for d in errors[1:])  # later ones: what only

    from controlplane.storage import make_engine, plugin_errors
    from controlplane.testing import stored_rows

    first = plugin_errors(make_engine(url), res.run_id)[0]  # (what `runs show` lists as the first error)
    assert first["reason"] == errors[0].reason
    stored = [r for r in stored_rows(url, res.run_id, "decisions") if r["is_error"]][0]
    payload = stored["payload"] if isinstance(stored["payload"], dict) else json.loads(stored["payload"])
    assert payload == errors[0].payload


def test_an_error_inside_a_library_is_placed_at_the_plugins_call():
    res = replay_with(NumpyRouter(), trace=make_trace(3))
    first = next(d for d in res.decisions if d.is_error)
    assert first.reason.startswith("ValueError: zero-size array")
    assert first.payload["where"] == f"{HERE}:{_line(NumpyRouter.cp_route_request, 2)} in cp_route_request"
    assert "numpy" in first.payload["traceback"]  # (the rest of the way is in the traceback)


def test_the_traceback_is_bounded():
    res = replay_with(DeepRouter(), trace=make_trace(2))
    first = next(d for d in res.decisions if d.is_error)
    text = first.payload["traceback"]
    assert len(text) < MAX_TRACEBACK_CHARS + 200 and text.endswith("ZeroDivisionError: division by zero")
    assert first.payload["where"].endswith(" in down")


def test_an_answer_the_core_refuses_has_no_place():
    class WorkerIdRouter(Plugin):
        name = "worker-id-router"

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            return workers[0].worker_id

    first = next(d for d in replay_with(WorkerIdRouter(), trace=make_trace(2)).decisions if d.is_error)
    assert first.reason.startswith("TypeError: cp_route_request returned str") and first.payload is None
    assert error_origin(TypeError("never raised")) is None


def test_the_daemons_warning_names_the_place_and_logs_the_traceback(caplog):
    hook_calls.warn_plugin_errors(True)
    try:
        with caplog.at_level(logging.WARNING, logger="controlplane.plugin_manager"):
            replay_with(MissingKeyBatcher(), trace=make_trace(4))
    finally:
        hook_calls.warn_plugin_errors(False)
    [record] = [r for r in caplog.records if r.name == "controlplane.plugin_manager"]
    assert f"at {HERE}:{_line(MissingKeyBatcher._plan, 1)} in _plan" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert 'return {}["missing"]' in caplog.text  # the traceback, with the plugin's source line


def test_raise_plugin_errors_fails_the_replay_with_the_plugins_exception():
    with pytest.raises(PluginHookError) as raised:
        replay_with(MissingKeyBatcher(), trace=make_trace(4), raise_plugin_errors=True)
    err = raised.value
    assert (err.plugin, err.hook, type(err.error)) == ("missing-key-batcher", "cp_form_batch", KeyError)
    assert err.__cause__ is err.error and str(err).startswith("plugin 'missing-key-batcher' failed in cp_form_batch: "
                                                             "KeyError: 'missing' (raised at ")
    # a wrong answer too: the core's TypeError about it
    class WorkerIdRouter(Plugin):
        name = "worker-id-router"

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            return workers[0].worker_id

    with pytest.raises(PluginHookError, match="cp_route_request returned str"):
        replay_with(WorkerIdRouter(), trace=make_trace(2), raise_plugin_errors=True)
    # and only there: the next replay isolates again
    assert replay_with(MissingKeyBatcher(), trace=make_trace(2)).summary["num_plugin_errors"] > 0


def test_make_plugin_set_keeps_errors_in_its_monitor_or_raises_them():
    workers = [make_worker("default-0"), make_worker("default-1")]
    ctx, request = make_context(workers=workers), make_requests(1)[0]

    class Flaky(Plugin):
        name = "flaky"

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            raise RuntimeError("flaky")

    ps = make_plugin_set(Flaky(), enabled=["least-loaded"])
    decision = ps.hook.cp_route_request(ctx=ctx, request=request, workers=workers)
    assert decision.worker_id == "default-0"  # least-loaded answered
    [error] = ps.monitor.take_errors()
    assert (error.plugin, error.hook) == ("flaky", "cp_route_request") and error.error.startswith("RuntimeError: flaky")
    strict = make_plugin_set(Flaky(), enabled=["least-loaded"], raise_plugin_errors=True)
    with pytest.raises(PluginHookError, match="plugin 'flaky' failed in cp_route_request: RuntimeError: flaky"):
        strict.hook.cp_route_request(ctx=ctx, request=request, workers=workers)
