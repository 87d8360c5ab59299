"""The SQL recorder: an observer plugin that turns the run's events into database rows.

It sees every request, decision and metric sample of a run (a few rows per simulated
request), so rows go to the recorder as value tuples in the table's column order
(:meth:`RunRecorder.add_values`): checked like dict rows, without building dicts.
"""

from __future__ import annotations

from typing import Any, Final

from controlplane.events import MetricSample, RequestFinished, WorkerChanged
from controlplane.hookspecs import hookimpl
from controlplane.storage.rows import SPECS
from controlplane.types import Decision

#: Column orders the tuples below are written in; checked against the tables on import.
REQUEST_COLUMNS: Final = (
    "request_id", "model", "tenant", "worker_id", "status", "reason", "arrival_s", "scheduled_s",
    "first_token_s", "finish_s", "prompt_tokens", "output_tokens", "cached_tokens", "cache_hit",
    "num_preemptions", "guardian_verdict", "ttft_s", "tpot_s", "e2e_s", "queue_s",
)
DECISION_COLUMNS: Final = ("time_s", "plugin", "hook", "subject", "action", "payload", "reason", "is_error")
METRIC_COLUMNS: Final = ("time_s", "name", "value", "labels")
for _table, _columns in (("request", REQUEST_COLUMNS), ("decision", DECISION_COLUMNS),
                         ("metric_sample", METRIC_COLUMNS)):
    if SPECS[_table].columns != _columns:
        raise RuntimeError(f"controlplane.recording: {_table} columns are {SPECS[_table].columns}, not {_columns}")


def request_values(r: Any) -> tuple:
    """A request's final state as a `request` row (``REQUEST_COLUMNS`` order), with the
    latencies as :func:`controlplane.storage.rows.derive_latencies` defines them."""
    arrival, first, finish, scheduled = r.arrival_s, r.first_token_s, r.finish_s, r.scheduled_s
    out = r.output_tokens
    return (
        r.request_id, r.model, r.tenant, r.worker_id, r.status.value, r.reason, arrival, scheduled,
        first, finish, r.prompt_tokens, out, r.cached_tokens, r.cache_hit, r.num_preemptions,
        r.guardian_verdict,
        None if first is None else first - arrival,
        (finish - first) / (out - 1) if first is not None and finish is not None and out > 1 else None,
        None if finish is None else finish - arrival,
        None if scheduled is None else scheduled - arrival,
    )


class SqlRecorder:
    """Buffers every finished request, decision, metric sample and worker event for bulk writes."""

    name = "sql-recorder"

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        add = recorder.add_values
        self._dispatch = {
            RequestFinished: lambda e: add("request", request_values(e.request)),
            Decision: lambda d: add("decision", (d.time_s, d.plugin, d.hook, d.subject, d.action, d.payload,
                                                 d.reason, d.is_error)),
            MetricSample: lambda m: add("metric_sample", (m.time_s, m.name, m.value, m.labels)),
            WorkerChanged: self._worker,
        }

    @hookimpl
    def cp_on_event(self, event):
        fn = self._dispatch.get(type(event))
        if fn is not None:
            fn(event)

    def _worker(self, w: WorkerChanged) -> None:
        self.recorder.add_worker_event({"time_s": w.time_s, "worker_id": w.worker_id, "kind": w.kind, "detail": w.detail})
