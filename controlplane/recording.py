"""The SQL recorder: an observer plugin that turns the run's events into database rows."""

from __future__ import annotations

from typing import Any

from controlplane.events import MetricSample, RequestFinished, WorkerChanged
from controlplane.hookspecs import hookimpl
from controlplane.types import Decision


def request_row(r: Any) -> dict[str, Any]:
    """A request's final state as a `request` table row."""
    return {
        "request_id": r.request_id,
        "model": r.model,
        "tenant": r.tenant,
        "worker_id": r.worker_id,
        "status": r.status.value,
        "reason": r.reason,
        "arrival_s": r.arrival_s,
        "scheduled_s": r.scheduled_s,
        "first_token_s": r.first_token_s,
        "finish_s": r.finish_s,
        "prompt_tokens": r.prompt_tokens,
        "output_tokens": r.output_tokens,
        "cached_tokens": r.cached_tokens,
        "cache_hit": r.cache_hit,
        "num_preemptions": r.num_preemptions,
        "guardian_verdict": r.guardian_verdict,
    }


class SqlRecorder:
    """Buffers every finished request, decision, metric sample and worker event for bulk writes."""

    name = "sql-recorder"

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self._dispatch = {
            RequestFinished: self._request,
            Decision: self._decision,
            MetricSample: self._metric,
            WorkerChanged: self._worker,
        }

    @hookimpl
    def cp_on_event(self, event):
        fn = self._dispatch.get(type(event))
        if fn is not None:
            fn(event)

    def _request(self, e: RequestFinished) -> None:
        self.recorder.add_request(request_row(e.request))

    def _decision(self, d: Decision) -> None:
        self.recorder.add_decision(
            {
                "time_s": d.time_s,
                "plugin": d.plugin,
                "hook": d.hook,
                "subject": d.subject,
                "action": d.action,
                "payload": d.payload,
                "reason": d.reason,
                "is_error": d.is_error,
            }
        )

    def _metric(self, m: MetricSample) -> None:
        self.recorder.add_metric({"time_s": m.time_s, "name": m.name, "value": m.value, "labels": m.labels})

    def _worker(self, w: WorkerChanged) -> None:
        self.recorder.add_worker_event({"time_s": w.time_s, "worker_id": w.worker_id, "kind": w.kind, "detail": w.detail})
