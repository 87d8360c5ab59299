"""The core's cancellations: a request cancelled by its client, failed by its worker or blocked
by an async prompt check leaves the system at once, or at its running batch's next boundary.
A mixin of `controlplane.core.ControlPlane`, which owns the state these methods use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.types import ReasonCode, RequestStatus

if TYPE_CHECKING:
    from controlplane.types import Request, Worker

__all__ = ["Cancellations"]


class Cancellations:
    """Cancel and fail events in, requests out of the system."""

    active: dict[str, Request]
    workers: dict[str, Worker]
    unrouted: Any
    guardian_pending: dict[str, Any]
    _batches: dict[str, Any]
    _cancelling: dict[str, tuple[str, ReasonCode | None]]
    _interrupted: set[str]
    _out: list[Any]
    kv: Any  # KVCacheManager

    def _on_cancel(self, e: ev.RequestCancelled) -> None:
        self._leave(e.request_id, e.reason, None)

    def _on_request_failed(self, e: ev.RequestFailed) -> None:
        self._leave(e.request_id, e.reason, e.code)

    def _leave(self, request_id: str, reason: str, code: ReasonCode | None) -> None:
        """Cancel (``code`` None) or fail a request: now, or at its running batch's next boundary."""
        r = self.active.get(request_id)
        if r is None:
            return  # already answered
        w = self.workers.get(r.worker_id) if r.worker_id is not None else None
        batch = self._batches.get(w.worker_id) if w is not None else None
        if batch is not None and (r in batch.decode or r in batch.then_decode
                                  or any(p is r for p, _ in batch.prefill)):
            self._cancelling[r.request_id] = (reason, code)  # it leaves at the batch's next boundary
            if batch.max_iterations > 1 and w.worker_id not in self._interrupted:
                self._interrupted.add(w.worker_id)
                self._out.append(act.InterruptBatch(w.worker_id))
            return
        self._cancel(r, w, reason, code)

    def _apply_cancellations(self, w: Worker) -> None:
        """Cancel the requests of ``w`` whose cancellation waited for their batch to end."""
        for r in [r for r in (*w.running, *w.waiting) if r.request_id in self._cancelling]:
            self._cancel(r, w, *self._cancelling[r.request_id], schedule=False)

    def _cancel(self, r: Request, w: Worker | None, reason: str, code: ReasonCode | None = None, *,
                schedule: bool = True) -> None:
        """Take ``r`` out of the system: cancelled, or failed with ``code``."""
        self._cancelling.pop(r.request_id, None)
        if w is not None:
            if r in w.running:
                w.running.remove(r)
                self.kv.recount(w)
            elif r in w.waiting:
                w.waiting.remove(r)
        elif r in self.unrouted:
            self.unrouted.remove(r)
        self.guardian_pending.pop(r.request_id, None)
        self._drop_checks(r.request_id)
        if code is None:
            r.reason = reason
            self._decision("core", "core", "cancel", r.request_id, reason)
            self._finish(r, RequestStatus.CANCELLED)
        elif code is ReasonCode.BLOCKED:  # an async prompt check blocked it (`Responses._decided`)
            self._block(r, "input", reason)
        else:
            self._fail(r, reason, code)
        if w is not None and schedule:
            self._schedule(w)

