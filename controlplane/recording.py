"""The SQL recorder: an observer plugin that turns the run's events into database rows.

It sees every request, decision and metric sample of a run (a few rows per simulated
request), so rows go to the recorder as value tuples in the table's column order
(:meth:`RunRecorder.appender`, one per table): checked like dict rows, without building dicts.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Final

from controlplane.events import IterationTimed, MetricSample, RequestFinished, WorkerChanged
from controlplane.hookspecs import hookimpl
from controlplane.request_latency import NO_LATENCIES, latencies
from controlplane.storage.rows import SPECS
from controlplane.types import Decision
from controlplane.verdict_after_reply import VerdictAfterReply

#: Column orders the tuples below are written in; checked against the tables on import.
REQUEST_COLUMNS: Final = (
    "request_id", "model", "tenant", "priority", "worker_id", "status", "reason", "reason_code", "arrival_s", "scheduled_s",
    "first_token_s", "finish_s", "prompt_tokens", "output_tokens", "max_output_tokens", "cached_tokens", "cache_hit",
    "num_preemptions", "guardian_verdict", "ttft_s", "tpot_s", "e2e_s", "queue_s",
)
DECISION_COLUMNS: Final = ("time_s", "plugin", "hook", "subject", "action", "payload", "reason", "is_error")
METRIC_COLUMNS: Final = ("time_s", "name", "value", "labels")
#: The profile row's fields, stored one column each (``controlplane.hardware.profile_format``).
ITERATION_ROW_FIELDS: Final = (
    "num_prefill_tokens", "num_prefill_seqs", "num_decode_seqs", "sum_decode_context", "sum_prefill_context",
    "iteration_s", "padded_prefill_tokens", "padded_decode_context",
)
ITERATION_COLUMNS: Final = ("worker_id", "batch_id", "start_s", "end_s", *ITERATION_ROW_FIELDS)
for _table, _columns in (("request", REQUEST_COLUMNS), ("decision", DECISION_COLUMNS),
                         ("metric_sample", METRIC_COLUMNS), ("iteration", ITERATION_COLUMNS)):
    if SPECS[_table].columns != _columns:
        raise RuntimeError(f"controlplane.recording: {_table} columns are {SPECS[_table].columns}, not {_columns}")


def request_values(r: Any) -> tuple:
    """A request's final state as a `request` row (``REQUEST_COLUMNS`` order), with the
    latencies of :func:`controlplane.request_latency.stored_latencies` (the summary's own; NULL unless
    completed)."""
    arrival, first, finish, scheduled = r.arrival_s, r.first_token_s, r.finish_s, r.scheduled_s
    out = r.output_tokens
    code = r.reason_code
    status = r.status._value_  # (an enum's ``_value_``: its ``.value`` without the two Python calls of the property)
    return (
        r.request_id, r.model, r.tenant, r.priority, r.worker_id, status, r.reason,
        None if code is None else code._value_, arrival, scheduled, first, finish, r.prompt_tokens, out,
        r.max_output_tokens, r.cached_tokens, r.cache_hit, r.num_preemptions, r.guardian_verdict,
        *(latencies(arrival, scheduled, first, finish, out, r.reply_held) if status == "completed" else NO_LATENCIES),
    )


def _count(value: Any) -> Any:
    """Profile rows may carry counts as floats (``3.0``); the columns are integers."""
    return int(value) if type(value) is float and value.is_integer() else value


def iteration_values(e: IterationTimed) -> tuple:
    """An `IterationTimed` event as an `iteration` row (``ITERATION_COLUMNS`` order); the
    padded counts are NULL for backends that do not pad."""
    row = e.row
    get = row.get
    return (
        e.worker_id, e.batch_id, e.start_s, e.time_s,
        _count(row["num_prefill_tokens"]), _count(row["num_prefill_seqs"]), _count(row["num_decode_seqs"]),
        _count(row["sum_decode_context"]), _count(row["sum_prefill_context"]), row["iteration_s"],
        _count(get("padded_prefill_tokens")), _count(get("padded_decode_context")),
    )


def _appender(recorder: Any, table: str, attributes: tuple[str, ...] | None = None) -> Any:
    """The recorder's adder for one table: ``RunRecorder.appender``, or ``add_values`` bound to
    the table for stand-ins that have only that (the sweep's row collector). With
    ``attributes``, it takes an event and stores those of its attributes (one per column)."""
    appender = getattr(recorder, "appender", None)
    if appender is not None:
        return appender(table) if attributes is None else appender(table, attributes)
    add = recorder.add_values
    if attributes is None:
        return lambda values: add(table, values)
    get = attrgetter(*attributes)
    return lambda event: add(table, get(event))


class SqlRecorder:
    """Buffers every finished request, decision, metric sample and worker event for bulk writes,
    each live iteration's timing when ``record_iterations`` is on (``storage.record_iterations``),
    and each guardian verdict that came after a request's reply, as an update of its row
    (`controlplane.verdict_after_reply`)."""

    name = "sql-recorder"

    def __init__(self, recorder: Any, *, record_iterations: bool = False) -> None:
        self.recorder = recorder
        add_request = _appender(recorder, "request")
        #: What the event bus calls, by event type, with the event alone (``PolicyCalls.emit``);
        #: events of other types are not delivered. ``cp_on_event`` does the same for pluggy's caller.
        #: A decision and a metric sample are stored from their attributes of the columns' names.
        self.event_handlers: dict[type, Any] = {
            RequestFinished: lambda e: add_request(request_values(e.request)),
            Decision: _appender(recorder, "decision", DECISION_COLUMNS),
            MetricSample: _appender(recorder, "metric_sample", METRIC_COLUMNS),
            WorkerChanged: self._worker,
        }
        if record_iterations:
            add_iteration = _appender(recorder, "iteration")
            self.event_handlers[IterationTimed] = lambda e: add_iteration(iteration_values(e))
        add_verdict = getattr(recorder, "add_request_verdict", None)
        if add_verdict is not None:  # (every recorder the project makes has it: the stored runs' and the sweeps')
            #: A verdict after the reply: written to the request's row, after the row.
            self.event_handlers[VerdictAfterReply] = lambda e: add_verdict(e.request_id, e.verdict, e.row_reason)

    @hookimpl
    def cp_on_event(self, event):
        fn = self.event_handlers.get(type(event))
        if fn is not None:
            fn(event)

    def _worker(self, w: WorkerChanged) -> None:
        self.recorder.add_worker_event({"time_s": w.time_s, "worker_id": w.worker_id, "kind": w.kind, "detail": w.detail})
