"""One run of a sweep, in whatever process the backend chose: replay, collect rows, return them.

Workers never touch the database. A run's rows (requests, decisions, metric samples, worker
events) are collected in memory and handed back with the summary; the driver process writes
them, one run at a time, so a sweep on SQLite has exactly one writer and a sweep on a remote
Ray cluster needs no database access from the cluster.

A run may stop early (``RunTask.stop_below``): once more requests missed the SLO than a run
may miss and still reach that attainment, it cannot meet it, and replaying the rest would only
confirm that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from controlplane.config import RunConfig
from controlplane.events import RequestFinished
from controlplane.hookspecs import hookimpl
from controlplane.recording import SqlRecorder
from controlplane.request_latency import request_latencies
from controlplane.storage.rows import SPECS
from controlplane.types import RequestStatus
from sim.traces import TraceRequest

__all__ = ["RunOutcome", "RunTask", "failed_outcome", "run_task"]


@dataclass(frozen=True)
class RunTask:
    """What a worker needs besides the trace: the run's full config and how to record it."""

    key: str  # the point's key in its sweep (what resume matches on)
    index: int  # the point's index in the space
    seed: int
    overrides: dict[str, Any]  # the point's dotted overrides (for the sweep table and reports)
    config: dict[str, Any]  # the validated run config
    trace_id: str  # which of the shipped traces this run replays
    trace_name: str | None = None
    trace_format: str | None = None
    record: str = "full"  # full: collect every row; summary: the summary only
    stop_below: float | None = None  # stop once SLO attainment can no longer reach this
    stage: str | None = None  # search: which rung
    limit: int | None = None  # replay only the trace's first ``limit`` requests (a search's screen)
    trace_read: dict[str, Any] | None = None  # how the spec reads its trace (`sim.replay.trace_read`), stored
    rows_left_out: dict[str, Any] = field(default_factory=dict)  # `sim.replay.rows_left_out` of its trace's read


@dataclass
class RunOutcome:
    """A finished (or early-stopped) run, ready for the driver to store."""

    task: RunTask
    status: str  # finished | stopped | failed
    summary: dict[str, Any]
    plugins: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, list[tuple]] = field(default_factory=dict)
    worker_events: list[dict[str, Any]] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_s: float = 0.0
    sim_end_s: float | None = None
    messages: list[str] = field(default_factory=list)  # its warnings, said once by the driver (`sim.sweep.messages`)


class _Collector:
    """Stands in for ``RunRecorder`` behind the SQL recorder plugin: keeps the rows in lists."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple]] = {}
        self.worker_events: list[dict[str, Any]] = []

    def add_values(self, table: str, values: tuple) -> None:
        rows = self.rows.get(table)
        if rows is None:
            rows = self.rows[table] = []
        rows.append(values)

    def add_worker_event(self, row: dict[str, Any]) -> None:
        self.worker_events.append(row)

    def add_request_verdict(self, request_id: str, verdict: str, reason: str | None = None) -> None:
        """A guardian verdict after the reply (`controlplane.verdict_after_reply`), onto the request's kept row, as
        ``RunRecorder`` writes it onto the stored one."""
        columns = SPECS["request"].columns
        at_id, at_verdict, at_reason = (columns.index(c) for c in ("request_id", "guardian_verdict", "reason"))
        rows = self.rows.get("request", [])
        for i in range(len(rows) - 1, -1, -1):  # (the latest rows first: a verdict comes soon after its row)
            row = rows[i]
            if row[at_id] == request_id:
                new = list(row)
                new[at_verdict] = verdict
                if reason is not None:
                    new[at_reason] = reason
                rows[i] = tuple(new)
                return


class _Stop(Exception):
    """Raised from the progress callback: the run can no longer reach its attainment target."""


class _SloBudget:
    """Counts requests that missed the SLO (as ``RunStats`` counts them) as they finish."""

    name = "sweep-slo-budget"

    def __init__(self, config: RunConfig) -> None:
        self.slo = config.slo
        self.misses = 0

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        if type(event) is not RequestFinished:
            return
        r = event.request
        if r.status is not RequestStatus.COMPLETED:
            self.misses += r.status is not RequestStatus.IN_FLIGHT
            return
        ttft, tpot, e2e, _ = request_latencies(r)
        slo = self.slo
        ok = (ttft is not None and ttft <= slo.ttft_s and (tpot is None or tpot <= slo.tpot_s)
              and (slo.e2e_s is None or (e2e is not None and e2e <= slo.e2e_s)))
        if not ok:
            self.misses += 1


_AVAILABLE: dict[str, Any] = {}


def _available_plugins() -> dict[str, Any]:
    """The installed plugins, discovered once per worker process (not once per run)."""
    if not _AVAILABLE:
        from controlplane.plugin_manager import discover_plugins

        _AVAILABLE.update(discover_plugins())
    return _AVAILABLE


def run_task(task: RunTask, trace: list[TraceRequest]) -> RunOutcome:
    """Replay ``trace`` with the task's config (not recorded in any database) and return the run;
    a run that raises (a plugin setting its plugin refuses, say) comes back ``failed`` with the
    error, so one bad point does not stop a sweep."""
    from sim.sweep.messages import kept_messages

    started = datetime.now(timezone.utc)
    with kept_messages() as messages:  # (said once by the driver, not printed here: glued onto its progress bar)
        try:
            outcome = _run_task(task, trace)
        except Exception as exc:  # noqa: BLE001 - reported with the run, the sweep goes on
            outcome = failed_outcome(task, f"{type(exc).__name__}: {exc}", started)
    outcome.messages = messages
    return outcome


def failed_outcome(task: RunTask, error: str, started_at: datetime | None = None) -> RunOutcome:
    """``task`` as a failed run, ``error`` in its summary: stored ``failed``, and run again when its sweep resumes."""
    return RunOutcome(task, "failed", {"error": error}, started_at=started_at, finished_at=datetime.now(timezone.utc))


def _run_task(task: RunTask, trace: list[TraceRequest]) -> RunOutcome:
    from sim.replay import replay

    if task.limit is not None:
        trace = trace[: task.limit]
    config = RunConfig(**task.config)
    collector = _Collector() if task.record == "full" else None
    extra: list[object] = []
    if collector is not None:
        extra.append(SqlRecorder(collector))
    budget = None
    on_progress = None
    n = len(trace)
    if task.stop_below is not None:
        budget = _SloBudget(config)
        extra.append(budget)
        allowed = (1.0 - task.stop_below) * n

        def on_progress(_arrived: int, _t: float) -> None:
            if budget.misses > allowed:
                raise _Stop

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    try:
        result = replay(trace, config, trace_format=task.trace_format, trace_name=task.trace_name, record=False,
                        extra_plugins=extra, on_progress=on_progress, available=_available_plugins())
    except _Stop:
        wall = time.perf_counter() - t0
        bound = 1.0 - budget.misses / n if n else 0.0
        summary = {"num_requests": n, "slo_attainment_max": round(bound, 9), "stopped": True,
                   "slo_misses": budget.misses}
        return RunOutcome(task, "stopped", summary, started_at=started, finished_at=datetime.now(timezone.utc),
                          wall_s=wall)
    wall = time.perf_counter() - t0
    summary = {k: v for k, v in result.summary.items() if k not in ("run_id", "wall_s")} | task.rows_left_out
    return RunOutcome(
        task, "finished", summary, plugins=result.session.plugins.versions(),
        rows=collector.rows if collector else {}, worker_events=collector.worker_events if collector else [],
        started_at=started, finished_at=datetime.now(timezone.utc), wall_s=wall,
        sim_end_s=result.session.clock.now_s,
    )
