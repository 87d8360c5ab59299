"""The live run's log lines from its event bus (an observer the live driver adds to every run's plugins):

* on ``controlplane.live.driver``, at INFO: each scale decision (``model chat: scale 1 -> 3 replicas
  (hpa: ...)``), and each worker that starts draining (a scale-down) or stops;
* on `REQUESTS_LOGGER` (``controlplane.requests``), at INFO, shown with ``--access-log`` only: each request
  that ends other than completed (a timeout, a cancellation, a refusal, a failure, a block) and each
  re-route after a worker was lost, naming its request id.
"""

from __future__ import annotations

import logging
from typing import Any

from controlplane.events import RequestFinished, WorkerChanged
from controlplane.hookspecs import hookimpl
from controlplane.live.daemon_logging import REQUESTS_LOGGER
from controlplane.types import Decision

__all__ = ["EventLog"]

log = logging.getLogger("controlplane.live.driver")
requests_log = logging.getLogger(REQUESTS_LOGGER)


class EventLog:
    """`cp_on_event` observer: scale decisions, workers draining and stopped, and requests' ends and re-routes."""

    name = "live-event-log"
    observes = (Decision, WorkerChanged, RequestFinished)

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is RequestFinished:
            r = event.request
            status = r.status.value
            if status not in ("completed", "in_flight") and requests_log.isEnabledFor(logging.INFO):
                code = r.reason_code.value if r.reason_code is not None else "no code"
                requests_log.info("request %s %s (%s): %s", r.request_id, status, code, r.reason or "no reason",
                                  extra={"request_id": r.request_id})
        elif kind is Decision:
            if event.action == "scale":
                p = event.payload or {}
                why = event.reason or "no reason given"
                log.info("model %s: scale %s -> %s replicas (%s)", event.subject, p.get("from"), p.get("to"),
                         why if why.startswith(f"{event.plugin}:") else f"{event.plugin}: {why}")
            elif event.action == "reroute" and requests_log.isEnabledFor(logging.INFO):
                requests_log.info("request %s re-routed: %s", event.subject, event.reason,
                                  extra={"request_id": event.subject})
        elif kind is WorkerChanged:
            if event.kind == "draining":
                why = (event.detail or {}).get("reason")
                log.info("worker %s draining: it finishes its requests, then stops (%s)", event.worker_id,
                         why or "scaled down")
            elif event.kind == "stopped":
                why = (event.detail or {}).get("reason")
                log.info("worker %s stopped%s", event.worker_id, f" ({why})" if why else "")
