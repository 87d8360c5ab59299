"""Reading recorded runs back: listings, streaming row iterators and exports.

Results are plain dicts (and JSON columns plain dicts/lists), so callers
(CLI, notebooks, the daemon's API) never hold ORM objects tied to a session.
Row iterators stream with a server-side cursor where the driver has one, so
exporting a multi-million-request run does not load it into memory.

Export column order is fixed and part of the interface (downstream scripts
read CSVs by position as well as by name); see :data:`EXPORT_COLUMNS`.
Database surrogate keys (``id``, ``run_id``) are not exported.

Typical use (docs/schema.md, "Reading runs from Python")::

    engine = make_engine("sqlite:///controlplane.db")
    run = get_run(engine, list_runs(engine, 1)[0]["id"])    # the newest run's row
    run["summary"]["slo_attainment"]                         # its summary, a dict
    for row in iter_rows(engine, run["id"], "requests"):     # its requests, streamed
        ...
    engine.dispose()
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO, overload

from sqlalchemy import Engine, Table, case, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from controlplane.hardware.profile_format import PADDED_FIELDS, ROW_FIELDS
from controlplane.storage.columns import RUN_STATUSES
from controlplane.storage.db import describe_url, plain_sqlite_file
from controlplane.storage.errors import StorageError, database_error
from controlplane.storage.jsoncodec import dumps
from controlplane.storage.models import Decision, Iteration, MetricSample, Request, Run, Sweep, WorkerEvent
from controlplane.storage.old_summaries import completed

if TYPE_CHECKING:
    from controlplane.config import RunConfig

What = Literal["requests", "decisions", "metrics", "worker_events", "iterations"]
Format = Literal["csv", "json", "jsonl"]

EXPORT_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "requests": (
        "request_id",
        "arrival_s",
        "first_token_s",
        "finish_s",
        "status",
        "reason",
        "model",
        "tenant",
        "priority",
        "worker_id",
        "scheduled_s",
        "prompt_tokens",
        "output_tokens",
        "max_output_tokens",
        "cached_tokens",
        "cache_hit",
        "num_preemptions",
        "guardian_verdict",
        "ttft_s",
        "tpot_s",
        "e2e_s",
        "queue_s",
        "reason_code",
    ),
    "decisions": ("time_s", "plugin", "hook", "subject", "action", "reason", "is_error", "payload"),
    "metrics": ("time_s", "name", "value", "labels"),
    "worker_events": ("time_s", "worker_id", "kind", "detail"),
    "iterations": ("worker_id", "batch_id", "start_s", "end_s", *ROW_FIELDS, *PADDED_FIELDS),
}
"""Columns of each export, in output order."""

FORMATS: Final = ("csv", "json", "jsonl")

_TABLES: Final[dict[str, Table]] = {
    "requests": Request.__table__,
    "decisions": Decision.__table__,
    "metrics": MetricSample.__table__,
    "worker_events": WorkerEvent.__table__,
    "iterations": Iteration.__table__,
}
_RUN: Final = Run.__table__
_STREAM_CHUNK: Final = 2000


def _order_by(what: str, table: Table) -> list[ColumnElement[Any]]:
    if what == "requests":
        return [table.c.arrival_s, table.c.request_id]
    if what == "iterations":
        return [table.c.end_s, table.c.id]
    return [table.c.time_s, table.c.id]


@contextmanager
def _stored_runs(engine: Engine) -> Iterator[None]:
    """Reading stored runs: a SQLite file that is not there, or a database without the runs' tables, is
    a `StorageError` saying so (not an empty file made by the read, nor SQL's "no such table: run"); any
    other database failure (a server not reachable, a database not there, a file that is not a database)
    is a `StorageError` of one line naming the database, password hidden (`database_error`), as a replay's
    is (SQLAlchemy's error, its cause, says more)."""
    path = plain_sqlite_file(engine.url.render_as_string(hide_password=False))
    if path is not None and not path.exists():
        raise StorageError(f"{describe_url(engine)}: no such file ({path}), so no run is stored there")
    try:
        yield
    except DBAPIError as exc:
        text = str(exc.orig)
        if "no such table" in text or getattr(exc.orig, "sqlstate", None) == "42P01":  # (PostgreSQL's undefined_table)
            raise StorageError(f"{describe_url(engine)} holds no controlplane runs (no run tables): check the URL, "
                               "or replay a trace into it first (the replay makes them)") from None
        raise database_error(exc, describe_url(engine)) from exc


def _checked_status(status: str | None) -> str | None:
    """``status`` if it is a run's or a sweep's (`RUN_STATUSES`: they share them) or None, else a ``ValueError``
    naming the valid ones (a typo such as ``finshed`` matched nothing and read as no runs)."""
    if status is None or status in RUN_STATUSES:
        return status
    from controlplane.errors import did_you_mean

    raise ValueError(f"unknown status {status!r}{did_you_mean(str(status), RUN_STATUSES)}; "
                     f"statuses: {', '.join(sorted(RUN_STATUSES))}")


def list_runs(engine: Engine, limit: int | None = 50, *, status: str | None = None,
              sweep_id: int | None = None) -> list[dict[str, Any]]:
    """The most recent ``limit`` runs (``None``: all), newest first: each a dict of the ``run`` table's columns,
    as `get_run` gives it. Only those of that ``status``, if given (``crashed``...; another is a ``ValueError``),
    and of the sweep or search ``sweep_id``, if given (one ``list_sweeps`` lists; a ``LookupError`` naming the
    database for one that is not there)."""
    stmt = select(_RUN) if _checked_status(status) is None else select(_RUN).where(_RUN.c.status == status)
    if sweep_id is not None:
        stmt = stmt.where(_RUN.c.sweep_id == sweep_id)
    with _stored_runs(engine), engine.connect() as conn:
        sweeps = Sweep.__table__
        if sweep_id is not None and conn.execute(select(sweeps.c.id).where(sweeps.c.id == sweep_id)).first() is None:
            raise LookupError(f"sweep {sweep_id} not found in {describe_url(engine)}")
        rows = conn.execute(stmt.order_by(_RUN.c.id.desc()).limit(limit)).mappings()
        return [completed(dict(row)) for row in rows]


def list_sweeps(engine: Engine, limit: int = 50, *, status: str | None = None) -> list[dict[str, Any]]:
    """The most recent ``limit`` sweeps and searches (of that ``status``, if given: a run's statuses), newest
    first, each with ``runs_finished`` (its runs stored ``finished``; ``num_runs`` is how many it has in all)."""
    _checked_status(status)
    s = Sweep.__table__
    finished = (select(func.count()).select_from(_RUN)
                .where(_RUN.c.sweep_id == s.c.id, _RUN.c.status == "finished").scalar_subquery())
    cols = (s.c.id, s.c.name, s.c.kind, s.c.status, s.c.num_runs, s.c.created_at, s.c.finished_at)
    with _stored_runs(engine), engine.connect() as conn:
        stmt = select(*cols, finished.label("runs_finished"))
        if status is not None:
            stmt = stmt.where(s.c.status == status)
        rows = conn.execute(stmt.order_by(s.c.id.desc()).limit(limit))
        return [dict(row._mapping) for row in rows]


def get_run(engine: Engine, run_id: int) -> dict[str, Any]:
    """One run's row as a dict of the ``run`` table's columns (docs/schema.md): ``id``, ``name``, ``mode``,
    ``status``, ``trace``, ``trace_format``, ``seed``, ``config`` and ``summary`` (dicts: the summary as
    ``sim replay --json`` prints it, None while running), ``plugins``, ``started_at``, ``finished_at``, ``wall_s``,
    ``sim_end_s``, ``notes``, ``sweep_id``, ``sweep_key``. A summary stored by an older release gets what today's
    has and its row can tell (`controlplane.storage.old_summaries`: GPU-hours, SLO targets; ``derived_keys``
    names them). ``LookupError`` naming the database if there is no such run; a `StorageError` for a database
    without runs (a SQLite file that is not there: none is made)."""
    with _stored_runs(engine), engine.connect() as conn:
        row = conn.execute(select(_RUN).where(_RUN.c.id == run_id)).mappings().first()
    if row is None:
        raise LookupError(f"run {run_id} not found in {describe_url(engine)}")
    return completed(dict(row))


#: What a run adds to its config in its row (``controlplane.session``, ``sim.sweep.store``): how it read its trace,
#: the latency-model files it read, and which process ran it. Not run-config keys: `run_config` leaves them out.
RUN_FACTS: Final = ("trace_read", "latency_files", "process")


@overload
def run_config(engine: Engine, run_id: int, *, validate: Literal[True] = ...) -> RunConfig: ...
@overload
def run_config(engine: Engine, run_id: int, *, validate: Literal[False]) -> dict[str, Any]: ...


def run_config(engine: Engine, run_id: int, *, validate: bool = True) -> RunConfig | dict[str, Any]:
    """The run config a stored run ran with: its row's ``config`` without the facts the run added (`RUN_FACTS`;
    ``trace_read``'s transforms are ``TraceTransforms``' fields). The passwords of its URLs are ``***``, as the row
    keeps them. ``LookupError`` for a run that is not there (`get_run`).

    By default (``validate=True``) a ``RunConfig`` as ``load_config`` makes one (to replay it again, or to change
    it), checked as this release checks a config: a ``ConfigError`` naming run ``run_id`` for a config this release
    no longer takes (a run of an older release that wrote the default ``gpu`` beside a measured profile of another
    device), and a relative latency-profile path is read from the working folder. ``validate=False``: the stored
    config itself, a plain dict, as the run ran with it whatever this release makes of it (`controlplane runs
    config` prints it so, with a note of what this release refuses)."""
    from controlplane.config import load_config
    from controlplane.errors import ConfigError

    stored = {key: value for key, value in (get_run(engine, run_id)["config"] or {}).items() if key not in RUN_FACTS}
    if not validate:
        return stored
    try:
        return load_config(None, stored)
    except ConfigError as exc:  # (load_config takes the stored config as overrides: it is no option of the user's)
        text = str(exc).replace(" (given as an option or override)", "")
        raise ConfigError(text.replace("invalid configuration:", f"run {run_id}'s stored config is one this "
                                       "release refuses:", 1)) from None


def _stream(engine: Engine, what: str, run_id: int) -> Iterator[dict[str, Any]]:
    table = _TABLES[what]
    columns = EXPORT_COLUMNS[what]
    stmt = (
        select(*(table.c[name] for name in columns))
        .where(table.c.run_id == run_id)
        .order_by(*_order_by(what, table))
    )
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=_STREAM_CHUNK).execute(stmt)
        try:
            for row in result.mappings():
                yield dict(row)
        finally:
            result.close()


def iter_rows(engine: Engine, run_id: int, what: What | str) -> Iterator[dict[str, Any]]:
    """Stream one run's rows of ``what`` as dicts with the :data:`EXPORT_COLUMNS` keys.

    Requests come ordered by ``(arrival_s, request_id)``, iterations by when
    their reply came (``end_s``), everything else by time; ties in insertion order. The run and ``what`` are checked now, not
    at the first ``next()``; the connection is held until the iterator is
    exhausted or closed.
    """
    if what not in _TABLES:
        raise ValueError(f"unknown row kind {what!r}; expected one of {list(_TABLES)}")
    check_rows_stored(engine, get_run(engine, run_id))
    return _stream(engine, what, run_id)


def check_rows_stored(engine: Engine, run: dict[str, Any]) -> None:
    """A sweep's or search's run recorded with ``record: summary`` stored its summary alone: its rows would
    read as a run of none (an export's bare header). ``LookupError`` saying why, as ``runs compare`` says."""
    requests = (run.get("summary") or {}).get("num_requests")
    if run.get("sweep_id") is None or not requests:
        return
    with engine.connect() as conn:
        if conn.execute(select(Request.run_id).where(Request.run_id == run["id"]).limit(1)).first() is not None:
            return
    raise LookupError(f"run {run['id']} has no stored rows (its summary counts {requests} requests): it was "
                      f"recorded with `record: summary` (sweep {run['sweep_id']}), which stores the run's summary "
                      "alone; set `record: full` in the spec to keep its requests, decisions and metrics")


def iter_request_rows(engine: Engine, run_id: int) -> Iterator[dict[str, Any]]:
    """Stream one run's requests, ordered by ``(arrival_s, request_id)``."""
    return iter_rows(engine, run_id, "requests")


def iteration_rows(engine: Engine, run_id: int, worker: str | None = None) -> list[dict[str, Any]]:
    """A live run's timed iterations (``storage.record_iterations``), oldest reply first,
    optionally of one worker: dicts with the ``iterations`` :data:`EXPORT_COLUMNS` keys, the
    padded counts ``None`` where the backend does not pad."""
    rows = iter_rows(engine, run_id, "iterations")
    if worker is None:
        return list(rows)
    return [r for r in rows if r["worker_id"] == worker]


#: What a spreadsheet reads as the start of a formula in a cell (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return dumps(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value  # text a client chose (a model, a tenant, a request id): never run as a formula
    return value


def export_rows(engine: Engine, run_id: int, what: What | str, fmt: Format | str, out: TextIO) -> int:
    """Write one run's rows of ``what`` to ``out``; return how many rows were written.

    ``csv``: a header then one line per row, columns as in
    :data:`EXPORT_COLUMNS`, empty cells for NULL, JSON columns as JSON text,
    booleans as ``true``/``false``, a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return prefixed with ``'`` (a spreadsheet would run it as a formula; numbers are left as they are).
    ``json``: one array of objects.
    ``jsonl``: one object per line. NaN/inf become ``null`` in JSON output.
    Open ``out`` with ``newline=""`` for CSV, as the csv module requires.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {list(FORMATS)}")
    rows = iter_rows(engine, run_id, what)
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS[what])
        for row in rows:
            writer.writerow([_csv_value(v) for v in row.values()])
            count += 1
    elif fmt == "jsonl":
        for row in rows:
            out.write(dumps(row))
            out.write("\n")
            count += 1
    else:
        out.write("[")
        for row in rows:
            out.write(",\n" if count else "\n")
            out.write(dumps(row))
            count += 1
        out.write("\n]\n" if count else "]\n")
    return count


def plugin_errors(engine: Engine, run_id: int) -> list[dict[str, Any]]:
    """The run's plugin errors by plugin and hook: ``{"plugin", "hook", "count", "first_s", "reason"}``
    (the reason of the first), most frequent first: why a summary counts ``num_plugin_errors``."""
    get_run(engine, run_id)
    table = _TABLES["decisions"]
    errors = table.c.is_error.is_(True)
    stmt = (select(table.c.plugin, table.c.hook, func.count().label("count"), func.min(table.c.time_s).label("first_s"),
                   func.min(table.c.id).label("first_id"))
            .where(table.c.run_id == run_id, errors).group_by(table.c.plugin, table.c.hook))
    with engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(stmt).mappings()]
        ids = [r.pop("first_id") for r in rows]
        reasons = dict(conn.execute(select(table.c.id, table.c.reason).where(table.c.id.in_(ids))).all()) if ids else {}
    for row, first in zip(rows, ids):
        row["reason"] = reasons.get(first)
    return sorted(rows, key=lambda r: (-r["count"], r["plugin"], r["hook"]))


def decision_counts(engine: Engine, run_id: int) -> list[dict[str, Any]]:
    """How often each plugin took each action at each hook, and how many of those were errors.

    Returns ``{"hook", "plugin", "action", "count", "errors"}`` dicts sorted
    by hook, plugin, action (``None`` actions first).
    """
    get_run(engine, run_id)
    table = _TABLES["decisions"]
    stmt = (
        select(
            table.c.hook,
            table.c.plugin,
            table.c.action,
            func.count().label("count"),
            func.sum(case((table.c.is_error, 1), else_=0)).label("errors"),
        )
        .where(table.c.run_id == run_id)
        .group_by(table.c.hook, table.c.plugin, table.c.action)
    )
    with engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(stmt).mappings()]
    for row in rows:
        row["errors"] = int(row["errors"] or 0)
    return sorted(rows, key=lambda r: (r["hook"], r["plugin"], r["action"] is not None, r["action"] or ""))


def requests_at_length(engine: Engine, run_id: int, *, prompt_tokens: int | None = None,
                       output_tokens: int | None = None) -> dict[str, int]:
    """How many of a run's requests have at least ``prompt_tokens`` prompt tokens (``prompts``) and at
    least ``output_tokens`` output tokens (``outputs``; a length not given is not counted), of ``total``:
    what length caps left at the cap, counted from the stored rows in one pass."""
    get_run(engine, run_id)
    c = Request.__table__.c
    counts = [func.count().label("total")]
    for name, column, at in (("prompts", c.prompt_tokens, prompt_tokens), ("outputs", c.output_tokens, output_tokens)):
        if at is not None:
            counts.append(func.sum(case((column >= at, 1), else_=0)).label(name))
    with engine.connect() as conn:
        row = conn.execute(select(*counts).where(c.run_id == run_id)).one()
    return {k: int(v or 0) for k, v in row._mapping.items()}


def recorded_figures(engine: Engine, run_id: int) -> dict[str, Any]:
    """A run's figures counted from its stored request rows, for a run whose summary was never written
    (``crashed``: its process died): ``num_requests`` (its rows), ``num_completed`` (those completed)
    and ``e2e_p50_s``, the median end-to-end latency of the completed ones (None without any). The rows
    only: requests the process had not recorded when it died are not among them."""
    c = Request.__table__.c
    completed = (c.run_id == run_id) & (c.status == "completed")
    timed = completed & c.e2e_s.is_not(None)
    with engine.connect() as conn:
        total, done = conn.execute(select(func.count(), func.sum(case((completed, 1), else_=0)))
                                   .where(c.run_id == run_id)).one()
        n = conn.execute(select(func.count()).where(timed)).scalar_one()
        middle = (list(conn.scalars(select(c.e2e_s).where(timed).order_by(c.e2e_s)
                                    .offset((n - 1) // 2).limit(2 - n % 2))) if n else [])
    return {"num_requests": int(total or 0), "num_completed": int(done or 0),
            "e2e_p50_s": sum(middle) / len(middle) if middle else None}
