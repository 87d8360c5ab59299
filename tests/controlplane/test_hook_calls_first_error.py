"""A plugin's errors in the daemon's log: the first of each plugin and hook is a warning naming the plugin, the
hook and the error's first line; later ones are only counted (a plugin failing on every request was counted in
the summary and /metrics, and the log said nothing). A replay stays quiet: it prints its count at its end."""

from __future__ import annotations

import logging

import pytest

from controlplane import hook_calls
from controlplane.testing import make_trace, replay_with
from tests.controlplane.test_hook_calls import Raising

LOGGER = "controlplane.plugin_manager"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.fixture()
def warning_on():
    hook_calls.warn_plugin_errors(True)
    yield
    hook_calls.warn_plugin_errors(False)


def test_the_first_error_of_each_plugin_and_hook_is_logged_once(caplog, warning_on):
    exc = RuntimeError("chaos router exploded\n  second line of detail")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        res = replay_with(Raising(exc, ("cp_route_request", "cp_on_event")), trace=make_trace(6))
    assert res.summary["num_plugin_errors"] > 6
    warned = _warnings(caplog)
    assert len(warned) == 2, warned
    route = next(w for w in warned if "cp_route_request" in w)
    assert "'raising'" in route and "RuntimeError: chaos router exploded" in route
    assert "second line" not in route and "counted, not logged" in route
    assert any("cp_on_event" in w for w in warned)


def test_a_replay_logs_none(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        res = replay_with(Raising(RuntimeError("boom")), trace=make_trace(6))
    assert res.summary["num_plugin_errors"] == 6
    assert _warnings(caplog) == []


def test_an_error_without_a_message_names_its_class(caplog, warning_on):
    monitor = hook_calls.HookMonitor()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        monitor.record("p", "cp_on_event", ValueError())
        monitor.record("p", "cp_on_event", ValueError("second"))
    assert len(_warnings(caplog)) == 1 and "(ValueError)" in _warnings(caplog)[0]
    assert monitor.error_counts == {("p", "cp_on_event"): 2}
