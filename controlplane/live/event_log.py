"""The live run's log lines from its event bus (an observer the live driver adds to every run's plugins):

* on ``controlplane.live.driver``, at INFO: each scale decision (``model chat: scale 1 -> 3 replicas
  (hpa: ...)``; a scale-up once the pool placed its replicas or found no device or slot for them, and then with
  what was placed: ``model chat: scale 1 -> 3 replicas asked, 0 of 2 placed: chat-1, chat-2 found no free device
  or worker slot (...)``, at WARNING for a model's first such since one of its replicas was placed), and each
  worker that starts draining (a scale-down) or stops;
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


class _ScaleUp:
    """A scale-up decision whose new replicas are not all placed or refused yet (`EventLog`)."""

    __slots__ = ("start", "to", "why", "pending", "placed", "unplaced")

    def __init__(self, start: int, to: int, why: str) -> None:
        self.start, self.to, self.why = start, to, why
        self.pending = to - start  # replicas the pool has not placed or refused yet
        self.placed: list[str] = []
        self.unplaced: list[tuple[str, str]] = []  # (worker, why it was not placed)


class EventLog:
    """`cp_on_event` observer: scale decisions, workers draining and stopped, and requests' ends and re-routes."""

    name = "live-event-log"
    observes = (Decision, WorkerChanged, RequestFinished)

    def __init__(self) -> None:
        self._scale_ups: dict[str, _ScaleUp] = {}  # model -> its scale-up still being placed
        self._unplaced_warned: set[str] = set()  # models warned of an unplaced scale-up since one was placed

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
                why = why if why.startswith(f"{event.plugin}:") else f"{event.plugin}: {why}"
                self._flush(event.subject)
                start, to = p.get("from"), p.get("to")
                if isinstance(start, int) and isinstance(to, int) and to > start:  # logged once placed or refused
                    self._scale_ups[event.subject] = _ScaleUp(start, to, why)
                else:
                    self._unplaced_warned.discard(event.subject)  # its target went down: warned afresh
                    log.info("model %s: scale %s -> %s replicas (%s)", event.subject, start, to, why)
            elif event.action in ("scale_unplaced", "start_failed") and event.subject in self._scale_ups:
                up = self._scale_ups[event.subject]
                worker = (event.payload or {}).get("worker", "?")
                detail = event.reason.split(": ", 1)[1] if ": " in event.reason else event.reason
                up.unplaced.append((worker, detail.removeprefix("unplaceable: ")))
                self._resolved(event.subject, up)
            elif event.action == "reroute" and requests_log.isEnabledFor(logging.INFO):
                requests_log.info("request %s re-routed: %s", event.subject, event.reason,
                                  extra={"request_id": event.subject})
        elif kind is WorkerChanged:
            model = (event.detail or {}).get("model")
            if event.kind == "starting" and model in self._scale_ups:
                up = self._scale_ups[model]
                up.placed.append(event.worker_id)
                self._unplaced_warned.discard(model)
                self._resolved(model, up)
            elif event.kind == "draining":
                why = (event.detail or {}).get("reason")
                log.info("worker %s draining: it finishes its requests, then stops (%s)", event.worker_id,
                         why or "scaled down")
            elif event.kind == "stopped":
                why = (event.detail or {}).get("reason")
                log.info("worker %s stopped%s", event.worker_id, f" ({why})" if why else "")

    def _resolved(self, model: str, up: _ScaleUp) -> None:
        """One of ``up``'s replicas placed or refused: the line once none is left."""
        up.pending -= 1
        if up.pending <= 0:
            self._flush(model)

    def _flush(self, model: str) -> None:
        """The line of ``model``'s scale-up still being placed, if any, with what was placed so far."""
        up = self._scale_ups.pop(model, None)
        if up is None:
            return
        if not up.unplaced and not up.pending:
            log.info("model %s: scale %s -> %s replicas (%s)", model, up.start, up.to, up.why)
            return
        placed = len(up.placed)
        missing = ", ".join(w for w, _ in up.unplaced)
        whys = list(dict.fromkeys(why for _, why in up.unplaced))
        first = model not in self._unplaced_warned
        if up.unplaced:
            self._unplaced_warned.add(model)
        log.log(logging.WARNING if up.unplaced and first else logging.INFO,
                "model %s: scale %s -> %s replicas asked, %s of %s placed%s%s (%s)", model, up.start, up.to, placed,
                up.to - up.start,
                f": {missing} {'was' if len(up.unplaced) == 1 else 'were'} not placed ({'; '.join(whys)})"
                + ("; the core asks again while the autoscaler wants more (these lines at INFO until one is placed)"
                   if first else "") if up.unplaced else "", f", {up.pending} not yet" if up.pending else "", up.why)
