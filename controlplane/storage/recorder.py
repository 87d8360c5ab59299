"""Bulk, failure-tolerant writer for one process's runs.

The simulator produces rows far faster than row-at-a-time ORM inserts can
take them, and the daemon must keep serving when the database hiccups. So
rows are validated and buffered in memory, written with a compiled Core
``insert(table)`` executemany (see :mod:`controlplane.storage.bulk`), one
transaction per flush, and never dropped: a failed flush keeps its rows,
retries with exponential backoff, and :meth:`RunRecorder.close` saves
whatever is still unwritten to a spill file that
:meth:`RunRecorder.replay_spill` can load later. Because a flush is a single
transaction, a retry does not write a row twice (unless a commit succeeded
but its acknowledgement was lost; the unique request id then reports it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from controlplane.storage import spill
from controlplane.storage.bulk import BulkInsert
from controlplane.storage.db import describe_url, sqlite_path
from controlplane.storage.errors import StorageError
from controlplane.storage.models import RUN_MODES, RUN_STATUSES, Run
from controlplane.storage.rows import SPECS, derive_latencies

log = logging.getLogger(__name__)

_RUN: Final = Run.__table__
_PERMANENT: Final = (IntegrityError, DataError)


@dataclass(frozen=True)
class FlushFailure:
    """A flush that gave up: its rows are still pending in the recorder."""

    at: datetime
    attempts: int
    pending: int
    error: str
    retryable: bool


def _is_retryable(exc: SQLAlchemyError) -> bool:
    """Connection loss, lock timeouts, a missing table mid-migration: worth retrying. Bad data is not."""
    return isinstance(exc, DBAPIError) and not isinstance(exc, _PERMANENT)


class RunRecorder:
    """Buffers rows for one or more runs and writes them in bulk; see the module docstring.

    Not meant to be shared across processes; within a process it is
    thread-safe (one lock around buffers and flushes). Retries sleep in the
    calling thread, so an asyncio daemon should append from a worker thread,
    or pass ``max_retries=0`` and rely on ``flush_interval_s`` and
    :meth:`close` for the next attempts.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 5000,
        max_retries: int = 3,
        retry_backoff_s: float = 0.5,
        flush_interval_s: float | None = None,
        spill_dir: str | Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``flush_interval_s`` also flushes on append once that long has passed since the last
        flush, for slow producers such as the daemon; ``sleep``/``clock`` are injectable for tests."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.engine = engine
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.flush_interval_s = flush_interval_s
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.errors: list[FlushFailure] = []
        self.retries = 0
        self.written: dict[str, int] = {name: 0 for name in SPECS}
        self.run_id: int | None = None
        self._sleep = sleep
        self._clock = clock
        self._buffers: dict[str, list[tuple]] = {name: [] for name in SPECS}
        self._specs = SPECS
        self._inserts = {name: BulkInsert(spec.table, engine.dialect, spec.fields) for name, spec in SPECS.items()}
        self._run_updates: list[dict[str, Any]] = []
        self._flush_at = batch_size
        self._last_flush = clock()
        self._lock = threading.RLock()
        self._closed = False

    # -- runs ---------------------------------------------------------------

    def start_run(
        self,
        *,
        name: str | None,
        mode: str,
        trace: str | None,
        trace_format: str | None,
        seed: int | None,
        config: dict[str, Any],
        plugins: list[dict[str, Any]],
        started_at: datetime,
    ) -> int:
        """Insert a ``running`` run and make it the target of subsequent appends; return its id.

        Retries like a flush, but raises ``StorageError`` if the database stays
        unavailable, since nothing can be recorded without a run id.
        """
        self._check_open()
        if mode not in RUN_MODES:
            raise ValueError(f"run mode {mode!r} is not one of {sorted(RUN_MODES)}")
        values = {
            "name": name,
            "mode": mode,
            "status": "running",
            "trace": trace,
            "trace_format": trace_format,
            "seed": seed,
            "config": config,
            "plugins": plugins,
            "started_at": started_at,
        }

        def write() -> int:
            with self.engine.begin() as conn:
                return int(conn.execute(insert(_RUN).values(values)).inserted_primary_key[0])

        with self._lock:
            run_id, failure = self._attempt(write)
            if failure is not None:
                raise StorageError(f"could not start run in {describe_url(self.engine)}: {failure.error}")
            self.run_id = run_id
            return run_id

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        summary: dict[str, Any] | None,
        finished_at: datetime,
        wall_s: float | None,
        sim_end_s: float | None,
    ) -> bool:
        """Flush everything and mark the run finished, in one transaction; return whether it was written.

        On failure the update stays pending with the rows and is retried by
        the next flush, or spilled by :meth:`close`.
        """
        self._check_open()
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {sorted(RUN_STATUSES)}")
        if finished_at.tzinfo is None:
            raise ValueError(f"finished_at {finished_at!r} is naive; pass a timezone-aware datetime")
        with self._lock:
            self._run_updates.append(
                {
                    "id": run_id,
                    "status": status,
                    "summary": summary,
                    "finished_at": finished_at,
                    "wall_s": wall_s,
                    "sim_end_s": sim_end_s,
                }
            )
            return self.flush()

    # -- appends ------------------------------------------------------------

    def add_request(self, row: Mapping[str, Any]) -> None:
        """Buffer a request's final state; latency columns are derived when not given."""
        spec = self._specs["request"]
        self._append(self._buffers["request"], spec.to_tuple(derive_latencies(spec.build(row, self._run()))))

    def add_decision(self, row: Mapping[str, Any]) -> None:
        """Buffer one plugin decision."""
        self._add("decision", row)

    def add_metric(self, row: Mapping[str, Any]) -> None:
        """Buffer one metric sample."""
        self._add("metric_sample", row)

    def add_worker_event(self, row: Mapping[str, Any]) -> None:
        """Buffer one worker lifecycle event."""
        self._add("worker_event", row)

    def add_values(self, table: str, values: tuple) -> None:
        """Buffer one row of ``table`` given as values for every column in
        ``SPECS[table].columns`` order: the fast path for producers that know the table (the
        run's SQL recorder, once per request and decision). Checked like the dict methods;
        request latency columns are not derived here."""
        self._append(self._buffers[table], self._specs[table].pack(values, self._run()))

    def _add(self, table: str, row: Mapping[str, Any]) -> None:
        spec = self._specs[table]
        self._append(self._buffers[table], spec.to_tuple(spec.build(row, self._run())))

    def _run(self) -> int:
        run_id = self.run_id
        if run_id is None or self._closed:
            self._check_open()
            raise StorageError("no run started: call start_run() before adding rows")
        return run_id

    def _append(self, buffer: list[tuple], row: tuple) -> None:
        with self._lock:
            buffer.append(row)
            if len(buffer) >= self._flush_at or (
                self.flush_interval_s is not None and self._clock() - self._last_flush >= self.flush_interval_s
            ):
                self.flush()

    # -- flushing -----------------------------------------------------------

    @property
    def pending(self) -> int:
        """Rows (and run updates) buffered but not yet in the database."""
        return sum(len(b) for b in self._buffers.values()) + len(self._run_updates)

    def pending_by_table(self) -> dict[str, int]:
        """Pending rows per table, plus ``run_update`` for pending :meth:`finish_run` calls."""
        counts = {name: len(b) for name, b in self._buffers.items()}
        counts[spill.RUN_UPDATE] = len(self._run_updates)
        return counts

    def flush(self) -> bool:
        """Write all pending rows in one transaction, retrying transient failures; return success.

        After the retries are exhausted the rows stay pending, the failure is
        appended to :attr:`errors`, and automatic flushing backs off until
        another ``batch_size`` rows have arrived, so a dead database does not
        stall every append.
        """
        with self._lock:
            self._last_flush = self._clock()
            if not self.pending:
                return True
            counts = {name: len(b) for name, b in self._buffers.items()}
            updates = len(self._run_updates)
            _, failure = self._attempt(lambda: self._write(counts, updates))
            if failure is None:
                for name, n in counts.items():
                    del self._buffers[name][:n]
                    self.written[name] += n
                del self._run_updates[:updates]
                self._flush_at = self.batch_size
                return True
            self.errors.append(failure)
            self._flush_at = max(len(b) for b in self._buffers.values()) + self.batch_size
            log.error(
                "storage: flush to %s failed after %d attempt(s); %d rows kept pending: %s",
                describe_url(self.engine),
                failure.attempts,
                failure.pending,
                failure.error,
            )
            return False

    def _write(self, counts: Mapping[str, int], updates: int) -> None:
        with self.engine.begin() as conn:
            for name, n in counts.items():
                self._inserts[name].execute(conn, self._buffers[name][:n])
            for values in self._run_updates[:updates]:
                run_id = values["id"]
                changes = {k: v for k, v in values.items() if k != "id"}
                if conn.execute(update(_RUN).where(_RUN.c.id == run_id).values(changes)).rowcount == 0:
                    log.warning("storage: finish_run for run %s, which is not in %s", run_id, describe_url(self.engine))

    def _attempt(self, fn: Callable[[], Any]) -> tuple[Any, FlushFailure | None]:
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(), None
            except SQLAlchemyError as exc:
                retryable = _is_retryable(exc)
                message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                if not retryable or attempt > self.max_retries:
                    failure = FlushFailure(
                        at=datetime.now(timezone.utc),
                        attempts=attempt,
                        pending=self.pending,
                        error=message,
                        retryable=retryable,
                    )
                    return None, failure
                self.retries += 1
                delay = self.retry_backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "storage: write to %s failed (attempt %d/%d), retrying in %.2fs: %s",
                    describe_url(self.engine),
                    attempt,
                    self.max_retries + 1,
                    delay,
                    message,
                )
                self._sleep(delay)

    # -- closing and spills -------------------------------------------------

    def close(self, *, spill_dir: str | Path | None = None) -> None:
        """Flush what is left; if the database still refuses it, spill it and raise ``StorageError``.

        The error's message and ``spill_path`` say where the rows went. The
        spill goes to ``spill_dir`` (argument, else constructor), else next to
        the SQLite file, else the cwd, falling back to the temp directory.
        Closing twice is harmless.
        """
        with self._lock:
            if self._closed:
                return
            if self.flush():
                self._closed = True
                return
            path, count = self._spill(Path(spill_dir) if spill_dir is not None else self.spill_dir)
            self._closed = True
            last = self.errors[-1].error if self.errors else "unknown error"
            raise StorageError(
                f"{count} rows could not be written to {describe_url(self.engine)} ({last}); "
                f"they were saved to {path} - load them with RunRecorder(engine).replay_spill({str(path)!r})",
                spill_path=path,
            )

    def _spill(self, directory: Path | None) -> tuple[Path, int]:
        if directory is None:
            db_file = sqlite_path(self.engine)
            directory = db_file.resolve().parent if db_file is not None else None
        entries = [(name, SPECS[name].decoded(row)) for name, rows in self._buffers.items() for row in rows]
        entries += [(spill.RUN_UPDATE, values) for values in self._run_updates]
        run_ids = [row[0] for rows in self._buffers.values() for row in rows] + [u["id"] for u in self._run_updates]
        path = spill.write_spill(
            entries,
            directories=spill.default_directories(directory),
            run_ids=run_ids,
            source=describe_url(self.engine),
        )
        for rows in self._buffers.values():
            rows.clear()
        self._run_updates.clear()
        log.error("storage: %d unwritten rows spilled to %s", len(entries), path)
        return path, len(entries)

    def replay_spill(self, path: str | Path) -> int:
        """Load a spill file's rows and write them now; return how many were written.

        The runs they belong to must exist in this recorder's database. The
        file is left in place: replaying it twice would duplicate rows (or
        fail on the unique request ids), so delete it once this returns.
        Raises ``StorageError`` if the rows could not be written; they then
        stay pending here and a later :meth:`close` spills them again.
        """
        self._check_open()
        path = Path(path)
        entries = list(spill.read_spill(path))
        unknown_tables = {t for t, _ in entries} - set(SPECS) - {spill.RUN_UPDATE}
        if unknown_tables:
            raise StorageError(f"{path}: unknown table(s) {sorted(unknown_tables)}")
        run_ids = {row["id"] if t == spill.RUN_UPDATE else row["run_id"] for t, row in entries}
        with self._lock:
            existing, failure = self._attempt(lambda: self._existing_runs(run_ids))
            if failure is not None:
                raise StorageError(f"could not read runs from {describe_url(self.engine)}: {failure.error}")
            missing = run_ids - existing
            if missing:
                raise StorageError(
                    f"{path} holds rows of run(s) {sorted(missing)}, not present in {describe_url(self.engine)}"
                )
            for table, row in entries:
                if table == spill.RUN_UPDATE:
                    self._run_updates.append(row)
                else:
                    spec = SPECS[table]
                    self._buffers[table].append(spec.to_tuple(spec.build(row, row.pop("run_id"))))
            if not self.flush():
                raise StorageError(
                    f"could not write the {len(entries)} rows from {path} to {describe_url(self.engine)}: "
                    f"{self.errors[-1].error}"
                )
            return len(entries)

    def _existing_runs(self, run_ids: set[int]) -> set[int]:
        if not run_ids:
            return set()
        with self.engine.connect() as conn:
            return set(conn.scalars(select(_RUN.c.id).where(_RUN.c.id.in_(sorted(run_ids)))))

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("RunRecorder is closed")

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
