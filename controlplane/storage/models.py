"""SQL schema for recorded runs.

One row per run, plus append-only child tables (requests, decisions, metric
samples, worker events, live iteration timings) that reference it with ON DELETE CASCADE so deleting a
run removes everything it produced. The child tables are written in bulk by
:class:`controlplane.storage.recorder.RunRecorder` and read back by
:mod:`controlplane.storage.queries`.

Enumerated columns (``mode``, ``status``, ``kind``, ...) are plain strings in
the database so that adding a value never needs a table rebuild on SQLite; the
allowed values live here and the recorder validates them on append.

The Alembic revisions under ``alembic/versions`` must match this module
exactly; ``alembic check`` (and ``tests/storage``) enforce that.

The tables are SQLAlchemy Core :class:`~sqlalchemy.Table` objects (nothing here uses the ORM,
whose import alone costs a simulator run a twentieth of a second). Each table also has a
name in the style of a mapped class (``Run``, ``Request``, ...): ``Run.__table__`` is the
table, ``Run.id`` its column, and ``select(Run.id).where(...)``, ``update(Run)`` or
``select_from(Request)`` work as they did with the declarative classes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)

# The allowed values of enumerated columns: plain data, shared with the row checks.
from controlplane.storage.columns import (  # noqa: F401
    CACHE_HITS,
    REQUEST_STATUSES,
    RUN_MODES,
    RUN_STATUSES,
    WORKER_EVENT_KINDS,
)

NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")
"""64-bit surrogate key; plain INTEGER on SQLite, where only ``INTEGER PRIMARY KEY`` autoincrements."""

NullableJSON = JSON(none_as_null=True)
"""JSON column where Python ``None`` is SQL NULL (not the JSON text ``null``), so ``IS NULL`` works."""


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamp that always comes back aware, in UTC.

    PostgreSQL stores ``timestamptz`` natively but returns it in the session's
    time zone; SQLite has no time zone support and would silently return naive
    values. Normalising to UTC on the way in and out makes both behave the
    same. Naive datetimes are refused because their meaning is ambiguous.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"timestamp {value!r} is naive; pass a timezone-aware datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Every table of the run database (what Alembic compares the migrations with)."""


class TableClass:
    """A table under a class-like name: ``__table__`` is the :class:`~sqlalchemy.Table`, each
    column is an attribute, and SQLAlchemy takes the class wherever it takes the table
    (``__clause_element__``). Made by :func:`_table_class`; never instantiated."""

    __table__: Table

    @classmethod
    def __clause_element__(cls) -> Table:
        return cls.__table__

    def __init__(self) -> None:
        raise TypeError(f"{type(self).__name__} is a table, not a row class; insert rows with SQLAlchemy Core")


def _table_class(table: Table, doc: str) -> Any:
    attrs: dict[str, Any] = {"__table__": table, "__doc__": doc, "__module__": __name__}
    for column in table.columns:
        attrs[column.key] = column
    return type(table.name.title().replace("_", ""), (TableClass,), attrs)


class Base:
    """What the declarative base used to give: ``Base.metadata`` (Alembic's ``target_metadata``)."""

    metadata = metadata


def _col(name: str, type_: Any, *args: Any, nullable: bool = True, **kwargs: Any) -> Column[Any]:
    """A column, nullable unless said otherwise (what ``Mapped[X | None]`` meant)."""
    return Column(name, type_, *args, nullable=nullable, **kwargs)


def _required(name: str, type_: Any, *args: Any, **kwargs: Any) -> Column[Any]:
    """A NOT NULL column (what ``Mapped[X]`` meant)."""
    return Column(name, type_, *args, nullable=False, **kwargs)


def _run_fk() -> Column[Any]:
    return _required("run_id", Integer, ForeignKey("run.id", ondelete="CASCADE"))


run = Table(
    "run",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _col("name", String),
    _required("mode", String),
    _required("status", String),
    _col("trace", String),
    _col("trace_format", String),
    _col("seed", Integer),
    _required("config", JSON),
    _required("plugins", JSON),
    _required("started_at", UTCDateTime),
    _col("finished_at", UTCDateTime),
    _col("wall_s", Float),
    _col("sim_end_s", Float),
    _col("summary", NullableJSON),
    _col("notes", Text),
    # A run of a sweep or search (`controlplane sim sweep`): its sweep and its point's key there.
    # Not a foreign key: adding one to SQLite's existing run table needs a rebuild (see 0003).
    _col("sweep_id", Integer),
    _col("sweep_key", String),
    Index("ix_run_sweep_id_sweep_key", "sweep_id", "sweep_key", unique=True),
    # SQLite: AUTOINCREMENT, so a deleted run's id is never given again (revision 0005): a run deleted with plain
    # SQL (no foreign-key pragma, no cascade) leaves its rows behind, which the next run of its id adopted.
    sqlite_autoincrement=True,
)
Run = _table_class(run, "One simulator or daemon run: what was run (config, plugins, trace) and how it ended.")

sweep = Table(
    "sweep",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _col("name", String),
    _required("kind", String),  # grid | random | search
    _required("status", String),  # running | finished | failed | interrupted | crashed
    _required("spec", JSON),  # the spec; its "process": the process running it (storage.crashed)
    _required("spec_hash", String),
    _col("trace", String),
    _col("num_runs", Integer),
    _required("created_at", UTCDateTime),
    _col("finished_at", UTCDateTime),
    _col("result", NullableJSON),
    Index("ix_sweep_spec_hash", "spec_hash"),
    sqlite_autoincrement=True,  # (a deleted sweep's id is never given again: runs name it, not as a foreign key)
)
Sweep = _table_class(
    sweep,
    """A sweep or configuration search: its spec, and its runs (``run.sweep_id``), one per point and seed.

    ``spec_hash`` identifies the spec, so running the same spec against the same database
    resumes an unfinished sweep; ``result`` holds a search's outcome (its best configuration).
    """,
)

request = Table(
    "request",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    _run_fk(),
    _required("request_id", String),
    _col("model", String),
    _col("tenant", String),
    _col("priority", Integer),  # NULL on rows stored before revision 0004
    _col("worker_id", String),
    _required("status", String),
    _col("reason", Text),
    _col("reason_code", String),  # ``controlplane.types.ReasonCode`` value
    _required("arrival_s", Float),
    _col("scheduled_s", Float),
    _col("first_token_s", Float),
    _col("finish_s", Float),
    _required("prompt_tokens", Integer),
    _required("output_tokens", Integer),
    _col("max_output_tokens", Integer),  # to generate (sim: the trace's; live: max_tokens); NULL before 0004
    _required("cached_tokens", Integer, default=0, server_default=text("0")),
    _col("cache_hit", String),
    _required("num_preemptions", Integer, default=0, server_default=text("0")),
    _col("guardian_verdict", String),
    _col("ttft_s", Float),
    _col("tpot_s", Float),
    _col("e2e_s", Float),
    _col("queue_s", Float),
    UniqueConstraint("run_id", "request_id"),
)
Request = _table_class(request, """Final state of one trace request (written once, when it finished or the run ended).

    ``(run_id, request_id)`` is unique, and its index also serves lookups by
    run. There is deliberately no ``(run_id, arrival_s)`` index: it would cost
    10-15% of bulk insert throughput on every run to save one sort per export.
    """)

decision = Table(
    "decision",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    _run_fk(),
    _required("time_s", Float),
    _required("plugin", String),
    _required("hook", String),
    _col("subject", String),
    _col("action", String),
    _col("payload", NullableJSON),
    _col("reason", Text),
    _required("is_error", Boolean, default=False, server_default=false()),
    Index("ix_decision_run_id_hook_time_s", "run_id", "hook", "time_s"),
)
Decision = _table_class(decision, """One plugin decision at one hook, with the plugin's stated reason.

    ``run_id`` is indexed as the leading column of ``(run_id, hook, time_s)``.
    """)

metric_sample = Table(
    "metric_sample",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    _run_fk(),
    _required("time_s", Float),
    _required("name", String),
    _required("value", Float),
    _col("labels", NullableJSON),
    Index("ix_metric_sample_run_id_name_time_s", "run_id", "name", "time_s"),
)
MetricSample = _table_class(
    metric_sample, "One point of a metric time series; ``run_id`` is indexed via ``(run_id, name, time_s)``.")

worker_event = Table(
    "worker_event",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    _run_fk(),
    _required("time_s", Float),
    _required("worker_id", String),
    _required("kind", String),
    _col("detail", NullableJSON),
    Index("ix_worker_event_run_id_time_s", "run_id", "time_s"),
)
WorkerEvent = _table_class(
    worker_event, "A worker lifecycle transition; ``run_id`` is indexed via ``(run_id, time_s)``.")

iteration = Table(
    "iteration",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    _run_fk(),
    _required("worker_id", String),
    _required("batch_id", BigInteger),
    _required("start_s", Float),
    _required("end_s", Float),
    _required("num_prefill_tokens", Integer),
    _required("num_prefill_seqs", Integer),
    _required("num_decode_seqs", Integer),
    _required("sum_decode_context", BigInteger),
    _required("sum_prefill_context", BigInteger),
    _required("iteration_s", Float),
    _col("padded_prefill_tokens", BigInteger),
    _col("padded_decode_context", BigInteger),
    Index("ix_iteration_run_id_end_s", "run_id", "end_s"),
)
Iteration = _table_class(
    iteration,
    """One live worker iteration as the control plane timed it (``storage.record_iterations``).

    The calibration's raw material: the batch's shape (the profile row fields of
    ``controlplane.hardware.profile_format``), the backend's own ``iteration_s``, and the run
    times the core started the batch (``start_s``) and saw its reply (``end_s``).
    ``run_id`` is indexed via ``(run_id, end_s)``.
    """,
)

writer_mark = Table(
    "writer_mark",
    metadata,
    Column("writer", String, primary_key=True),
    _required("seq", BigInteger),
)
WriterMark = _table_class(
    writer_mark,
    """How far each recorder's flushes got: the sequence number of its last committed flush.

    Written in the same transaction as the flush's rows, so after a failed commit whose
    outcome is unknown (the connection died while committing) the recorder reads it back and
    knows whether to write those rows again: nothing is lost and nothing is written twice.
    """,
)
