"""The live run's log lines from its event bus (an observer the live driver adds to every run's plugins):
on ``controlplane.live.driver``, at INFO, each scale decision (``model chat: scale 1 -> 3 replicas
(hpa: ...)``), and each worker that starts draining (a scale-down) or stops.
"""

from __future__ import annotations

import logging
from typing import Any

from controlplane.events import WorkerChanged
from controlplane.hookspecs import hookimpl
from controlplane.types import Decision

__all__ = ["EventLog"]

log = logging.getLogger("controlplane.live.driver")


class EventLog:
    """`cp_on_event` observer: scale decisions, workers draining and stopped."""

    name = "live-event-log"
    observes = (Decision, WorkerChanged)

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is Decision:
            if event.action == "scale":
                p = event.payload or {}
                why = event.reason or "no reason given"
                log.info("model %s: scale %s -> %s replicas (%s)", event.subject, p.get("from"), p.get("to"),
                         why if why.startswith(f"{event.plugin}:") else f"{event.plugin}: {why}")
        elif kind is WorkerChanged:
            if event.kind == "draining":
                why = (event.detail or {}).get("reason")
                log.info("worker %s draining: it finishes its requests, then stops (%s)", event.worker_id,
                         why or "scaled down")
            elif event.kind == "stopped":
                why = (event.detail or {}).get("reason")
                log.info("worker %s stopped%s", event.worker_id, f" ({why})" if why else "")
