"""The live run's log lines from its events (`controlplane.live.event_log`): scale decisions, workers
draining and stopped, and the requests that end other than completed, each naming its request id."""

from __future__ import annotations

import logging

from controlplane.events import RequestFinished
from controlplane.live.daemon_logging import REQUESTS_LOGGER
from controlplane.live.event_log import EventLog
from controlplane.testing import ScaleCycle, make_trace, replay_with
from controlplane.types import Decision, ReasonCode, Request, RequestStatus


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


def test_the_requests_that_end_other_than_completed_are_logged_by_id_when_asked_for(caplog):
    """A timeout, a refusal or a re-route had no log line naming its request."""
    log = EventLog()
    timed_out = Request("req-7", 0.0, 4, 100, model="m", status=RequestStatus.CANCELLED,
                        reason="timed out: no answer within 0.3s", reason_code=ReasonCode.TIMEOUT)
    refused = Request("req-8", 0.0, 4, 100, model="nope", status=RequestStatus.REJECTED,
                      reason="unknown model", reason_code=ReasonCode.UNKNOWN_MODEL)
    done = Request("req-9", 0.0, 4, 100, model="m", status=RequestStatus.COMPLETED)
    events = [RequestFinished(1.0, timed_out), RequestFinished(1.0, refused), RequestFinished(1.0, done),
              Decision(1.0, "cp_route_request", "core", "reroute", "req-10", "retry 1 of max_retries 3: worker m-0 "
                       "failed: killed", {"worker": "m-0", "retry": 1})]
    caplog.set_level(logging.INFO)
    for e in events:
        log.cp_on_event(e)
    assert not [r for r in caplog.records if r.name == REQUESTS_LOGGER]  # not by default: one line per request
    caplog.set_level(logging.INFO, logger=REQUESTS_LOGGER)  # (--access-log)
    for e in events:
        log.cp_on_event(e)
    records = [r for r in caplog.records if r.name == REQUESTS_LOGGER]
    assert [r.getMessage() for r in records] == [
        "request req-7 cancelled (timeout): timed out: no answer within 0.3s",
        "request req-8 rejected (unknown_model): unknown model",
        "request req-10 re-routed: retry 1 of max_retries 3: worker m-0 failed: killed"]
    assert [r.request_id for r in records] == ["req-7", "req-8", "req-10"]  # (the JSON format's request_id)
