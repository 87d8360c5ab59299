"""The live run's log lines from its events (`controlplane.live.event_log`): scale decisions, workers
draining and stopped."""

from __future__ import annotations

import logging

from controlplane.live.event_log import EventLog
from controlplane.testing import ScaleCycle, make_trace, replay_with


def test_scale_decisions_and_workers_draining_and_stopped_are_logged(caplog):
    """A scale-up, a scale-down and the workers it stopped left no line in the daemon's log."""
    caplog.set_level(logging.INFO, logger="controlplane.live.driver")
    replay_with(EventLog(), ScaleCycle(counts=(2, 1), period_s=5.0), trace=make_trace(60, qps=4),
                control={"tick_s": 1.0})
    lines = [r.getMessage() for r in caplog.records if r.name == "controlplane.live.driver"]
    assert "model default: scale 1 -> 2 replicas (scale-cycle: test)" in lines, lines
    assert "model default: scale 2 -> 1 replicas (scale-cycle: test)" in lines, lines
    drained = [line for line in lines if " draining: it finishes its requests, then stops (test)" in line]
    assert drained, lines
    worker = drained[0].split()[1]
    assert f"worker {worker} stopped" in lines, lines

