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
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_MODES: Final = frozenset({"sim", "live"})
RUN_STATUSES: Final = frozenset({"running", "finished", "failed", "interrupted", "crashed"})
REQUEST_STATUSES: Final = frozenset({"completed", "rejected", "failed", "in_flight", "cancelled", "blocked"})
CACHE_HITS: Final = frozenset({"exact", "semantic", "prefix"})
WORKER_EVENT_KINDS: Final = frozenset({"starting", "ready", "failed", "stopped", "draining"})

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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    """One simulator or daemon run: what was run (config, plugins, trace) and how it ended."""

    __tablename__ = "run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(String)
    mode: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    trace: Mapped[str | None] = mapped_column(String)
    trace_format: Mapped[str | None] = mapped_column(String)
    seed: Mapped[int | None] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    plugins: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    wall_s: Mapped[float | None] = mapped_column(Float)
    sim_end_s: Mapped[float | None] = mapped_column(Float)
    summary: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    notes: Mapped[str | None] = mapped_column(Text)
    # A run of a sweep or search (`controlplane sim sweep`): its sweep and its point's key there.
    # Not a foreign key: adding one to SQLite's existing run table needs a rebuild (see 0003).
    sweep_id: Mapped[int | None] = mapped_column(Integer)
    sweep_key: Mapped[str | None] = mapped_column(String)

    __table_args__ = (Index("ix_run_sweep_id_sweep_key", "sweep_id", "sweep_key", unique=True),)


class Sweep(Base):
    """A sweep or configuration search: its spec, and its runs (``run.sweep_id``), one per point and seed.

    ``spec_hash`` identifies the spec, so running the same spec against the same database
    resumes an unfinished sweep; ``result`` holds a search's outcome (its best configuration).
    """

    __tablename__ = "sweep"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)  # grid | random | search
    status: Mapped[str] = mapped_column(String)  # running | finished | failed | interrupted
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String)
    trace: Mapped[str | None] = mapped_column(String)
    num_runs: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)

    __table_args__ = (Index("ix_sweep_spec_hash", "spec_hash"),)


class Request(Base):
    """Final state of one trace request (written once, when it finished or the run ended).

    ``(run_id, request_id)`` is unique, and its index also serves lookups by
    run. There is deliberately no ``(run_id, arrival_s)`` index: it would cost
    10-15% of bulk insert throughput on every run to save one sort per export.
    """

    __tablename__ = "request"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    request_id: Mapped[str] = mapped_column(String)
    model: Mapped[str | None] = mapped_column(String)
    tenant: Mapped[str | None] = mapped_column(String)
    worker_id: Mapped[str | None] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    reason: Mapped[str | None] = mapped_column(Text)
    reason_code: Mapped[str | None] = mapped_column(String)  # ``controlplane.types.ReasonCode`` value
    arrival_s: Mapped[float] = mapped_column(Float)
    scheduled_s: Mapped[float | None] = mapped_column(Float)
    first_token_s: Mapped[float | None] = mapped_column(Float)
    finish_s: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cache_hit: Mapped[str | None] = mapped_column(String)
    num_preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    guardian_verdict: Mapped[str | None] = mapped_column(String)
    ttft_s: Mapped[float | None] = mapped_column(Float)
    tpot_s: Mapped[float | None] = mapped_column(Float)
    e2e_s: Mapped[float | None] = mapped_column(Float)
    queue_s: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("run_id", "request_id"),
    )


class Decision(Base):
    """One plugin decision at one hook, with the plugin's stated reason.

    ``run_id`` is indexed as the leading column of ``(run_id, hook, time_s)``.
    """

    __tablename__ = "decision"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    time_s: Mapped[float] = mapped_column(Float)
    plugin: Mapped[str] = mapped_column(String)
    hook: Mapped[str] = mapped_column(String)
    subject: Mapped[str | None] = mapped_column(String)
    action: Mapped[str | None] = mapped_column(String)
    payload: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    reason: Mapped[str | None] = mapped_column(Text)
    is_error: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (Index("ix_decision_run_id_hook_time_s", "run_id", "hook", "time_s"),)


class MetricSample(Base):
    """One point of a metric time series; ``run_id`` is indexed via ``(run_id, name, time_s)``."""

    __tablename__ = "metric_sample"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    time_s: Mapped[float] = mapped_column(Float)
    name: Mapped[str] = mapped_column(String)
    value: Mapped[float] = mapped_column(Float)
    labels: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)

    __table_args__ = (Index("ix_metric_sample_run_id_name_time_s", "run_id", "name", "time_s"),)


class WorkerEvent(Base):
    """A worker lifecycle transition; ``run_id`` is indexed via ``(run_id, time_s)``."""

    __tablename__ = "worker_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    time_s: Mapped[float] = mapped_column(Float)
    worker_id: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    detail: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)

    __table_args__ = (Index("ix_worker_event_run_id_time_s", "run_id", "time_s"),)


class Iteration(Base):
    """One live worker iteration as the control plane timed it (``storage.record_iterations``).

    The calibration's raw material: the batch's shape (the profile row fields of
    ``controlplane.hardware.profile_format``), the backend's own ``iteration_s``, and the run
    times the core started the batch (``start_s``) and saw its reply (``end_s``).
    ``run_id`` is indexed via ``(run_id, end_s)``.
    """

    __tablename__ = "iteration"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    worker_id: Mapped[str] = mapped_column(String)
    batch_id: Mapped[int] = mapped_column(BigInteger)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    num_prefill_tokens: Mapped[int] = mapped_column(Integer)
    num_prefill_seqs: Mapped[int] = mapped_column(Integer)
    num_decode_seqs: Mapped[int] = mapped_column(Integer)
    sum_decode_context: Mapped[int] = mapped_column(BigInteger)
    sum_prefill_context: Mapped[int] = mapped_column(BigInteger)
    iteration_s: Mapped[float] = mapped_column(Float)
    padded_prefill_tokens: Mapped[int | None] = mapped_column(BigInteger)
    padded_decode_context: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_iteration_run_id_end_s", "run_id", "end_s"),)


class WriterMark(Base):
    """How far each recorder's flushes got: the sequence number of its last committed flush.

    Written in the same transaction as the flush's rows, so after a failed commit whose
    outcome is unknown (the connection died while committing) the recorder reads it back and
    knows whether to write those rows again: nothing is lost and nothing is written twice.
    """

    __tablename__ = "writer_mark"

    writer: Mapped[str] = mapped_column(String, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
