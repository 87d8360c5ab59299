"""Bulk, failure-tolerant writer for one process's runs.

The simulator produces rows far faster than row-at-a-time ORM inserts can take them, and the daemon
must keep serving when the database hiccups. So rows are validated and buffered in memory, written with
a compiled Core ``insert(table)`` executemany (see :mod:`controlplane.storage.bulk`), one transaction per
flush, and never dropped.

Appending never waits for the database: a flush takes the buffers under a short lock (appends go on
into fresh ones) and writes and retries outside it. With ``background=True`` (the daemon) a thread of the
recorder's own does all writing; otherwise the append that fills a buffer flushes in its own thread
(the simulator, which has nothing better to do). A failed flush keeps its rows, retries with exponential
backoff, and past ``max_pending_rows`` spills the oldest to a local file; when the database is back,
spilled rows go in first, in order (an outage is logged when it starts, now and then, and when it ends:
:mod:`controlplane.storage.outage_log`). A row the database refuses for good (a repeated request id) holds
back no other row: the flush commits all the others and saves the refused ones to a file of their own
(:mod:`controlplane.storage.refused`, :attr:`RunRecorder.refused`). Each flush's transaction also records
how far this recorder got (:mod:`controlplane.storage.backlog`), so a commit whose acknowledgement was lost
is not written twice. :meth:`RunRecorder.close` waits through an outage for up to ``close_wait_s``
(`CLOSE_WAIT_S`), then saves whatever is still unwritten to one spill file that
:meth:`RunRecorder.replay_spill` can load later (into the run it names only).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, insert

from controlplane.storage import spill
from controlplane.storage.backlog import Backlog, Chunk, count_updates
from controlplane.storage.bulk import BulkInsert
from controlplane.storage.db import describe_url, fold_wal
from controlplane.storage.errors import RunDeleted, StorageError
from controlplane.storage.models import RUN_MODES, RUN_STATUSES, Run
from controlplane.storage.orphans import refuse_orphans
from controlplane.storage.outage_log import OutageLog
from controlplane.storage.recorder_spills import RecorderSpills
from controlplane.storage.refused import RefusedRows
from controlplane.storage.request_verdicts import request_verdict
from controlplane.storage.retry import FlushFailure, with_retries
from controlplane.storage.rows import SPECS, derive_latencies

__all__ = ["CLOSE_WAIT_S", "DEFAULT_MAX_PENDING_ROWS", "FlushFailure", "RunRecorder"]

log = logging.getLogger(__name__)

_RUN: Final = Run.__table__
_MAX_ERRORS: Final = 1000
DEFAULT_MAX_PENDING_ROWS: Final = 200_000
#: How long :meth:`RunRecorder.close` keeps retrying a database that is away before it spills the
#: rows: a run that ends during a short outage (a restart, a failover) is still written whole.
CLOSE_WAIT_S: Final = 60.0
#: During an outage, the seconds between the automatic flushes' single attempts (`RunRecorder.flush`).
OUTAGE_PAUSE_S: Final = 5.0


class RunRecorder(RecorderSpills):
    """Buffers rows for one or more runs and writes them in bulk; see the module docstring.

    Not meant to be shared across processes; within a process it is thread-safe. Appends take one
    short lock; flushes (and their retries' sleeps) run in the thread that calls :meth:`flush`, in the
    recorder's own thread with ``background=True``, else in the appending thread once a buffer holds
    ``batch_size`` rows.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 5000,
        max_retries: int = 3,
        retry_backoff_s: float = 0.5,
        flush_interval_s: float | None = None,
        max_pending_rows: int = DEFAULT_MAX_PENDING_ROWS,
        background: bool = False,
        spill_dir: str | Path | None = None,
        close_wait_s: float = CLOSE_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``flush_interval_s`` also flushes once that long has passed since the last flush, for
        slow producers such as the daemon. ``max_pending_rows`` bounds the rows kept in memory
        while the database is away (give or take what arrives during one flush's retries); the
        rest are spilled. ``background`` starts a writer thread, so appends never write.
        ``close_wait_s``: how long :meth:`close` waits for a database that is away (0: spill at once).
        ``sleep``/``clock`` are injectable for tests."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_pending_rows < 1:
            raise ValueError(f"max_pending_rows must be >= 1, got {max_pending_rows}")
        if close_wait_s < 0:
            raise ValueError(f"close_wait_s must be >= 0, got {close_wait_s}")
        self.engine = engine
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.flush_interval_s = flush_interval_s
        self.max_pending_rows = max_pending_rows
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.close_wait_s = close_wait_s
        self.errors: list[FlushFailure] = []
        self.num_flush_failures = 0
        self.retries = 0
        self.written: dict[str, int] = {name: 0 for name in SPECS}
        #: Rows the database refused for good (a repeated request id), saved to files of their own.
        self.refused = RefusedRows()
        #: A run deleted while this recorder wrote it (`controlplane.storage.deleted_runs`): its rows are dropped.
        self.deleted: RunDeleted | None = None
        self.run_id: int | None = None
        self.run_identities: dict[int, dict[str, Any]] = {}  # (RecorderSpills.identify_run)
        #: This recorder's row in ``writer_mark``; also in the header of the files it spills.
        self.writer = uuid.uuid4().hex
        self._sleep = sleep
        self._clock = clock
        self._specs = SPECS
        self._inserts = {name: BulkInsert(spec.table, engine.dialect, spec.fields) for name, spec in SPECS.items()}
        # Appends: under _lock, swapped out whole by a flush.
        self._lock = threading.Lock()
        self._buffers: dict[str, list[tuple]] = {name: [] for name in SPECS}
        self._run_updates: list[dict[str, Any]] = []
        # Flushes, retries and the backlog: under _io, never held by an append.
        self._io = threading.RLock()
        self._backlog = Backlog(self.writer)
        self.outage = OutageLog(describe_url(engine), pending=lambda: self.pending, written=self.written, clock=clock)
        self._seq = 0
        self._last_flush = clock()
        self._next_attempt = 0.0  # during an outage: when an automatic flush may try the database again
        self._closed = False
        self._interval = None if background else flush_interval_s
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._woken = False
        if background:
            self._thread = threading.Thread(target=self._writer_loop, name="cp-recorder", daemon=True)
            self._thread.start()

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

        Retries like a flush, but raises ``StorageError`` if the database stays unavailable, since nothing
        can be recorded without a run id, and `OrphanRows` (none inserted) if its id names rows already.
        """
        self._check_open()
        if mode not in RUN_MODES:
            raise ValueError(f"run mode {mode!r} is not one of {sorted(RUN_MODES)}")
        values = {"name": name, "mode": mode, "status": "running", "trace": trace, "trace_format": trace_format,
                  "seed": seed, "config": config, "plugins": plugins, "started_at": started_at}

        def write() -> int:
            with self.engine.begin() as conn:
                run_id = int(conn.execute(insert(_RUN).values(values)).inserted_primary_key[0])
                refuse_orphans(conn, run_id, describe_url(self.engine))  # (rows of a run deleted without them)
                return run_id

        with self._io:
            run_id, failure = self._attempt(write)
            if failure is not None:
                raise StorageError(f"could not start run in {describe_url(self.engine)}: {failure.error}")
            if not self._backlog.chunks and not self._backlog.files:
                self.outage.ended()  # written, and nothing else waits: an outage its retries rode out is over
            self.run_id = run_id
            self.identify_run(run_id, values)
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
        update_ = {"id": run_id, "status": status, "summary": summary, "finished_at": finished_at,
                   "wall_s": wall_s, "sim_end_s": sim_end_s}
        with self._lock:
            self._run_updates.append(update_)
        return self.flush()

    # -- appends ------------------------------------------------------------

    def add_request(self, row: Mapping[str, Any]) -> None:
        """Buffer a request's final state; latency columns are derived when not given."""
        spec = self._specs["request"]
        self._append("request", spec.to_tuple(derive_latencies(spec.build(row, self._run()))))

    def add_request_verdict(self, request_id: str, verdict: str, reason: str | None = None) -> None:
        """Buffer a guardian verdict that came after the request's row was added
        (`controlplane.verdict_after_reply`): the row's ``guardian_verdict`` becomes ``verdict``, and
        its ``reason`` ``reason`` unless None. Written with the run updates, after the row."""
        values = request_verdict(self._run(), request_id, verdict, reason)
        with self._lock:
            self._run_updates.append(values)

    def add_decision(self, row: Mapping[str, Any]) -> None:
        """Buffer one plugin decision."""
        self._add("decision", row)

    def add_metric(self, row: Mapping[str, Any]) -> None:
        """Buffer one metric sample."""
        self._add("metric_sample", row)

    def add_worker_event(self, row: Mapping[str, Any]) -> None:
        """Buffer one worker lifecycle event."""
        self._add("worker_event", row)

    def add_iteration(self, row: Mapping[str, Any]) -> None:
        """Buffer one timed live iteration."""
        self._add("iteration", row)

    def add_values(self, table: str, values: tuple) -> None:
        """Buffer one row of ``table`` given as values for every column in ``SPECS[table].columns``
        order, checked like the dict methods (request latency columns are not derived here)."""
        self._append(table, self._specs[table].pack(values, self._run()))

    def appender(self, table: str, attributes: Sequence[str] | None = None) -> Callable[[Any], None]:
        """``add_values`` for one table, inlined (of an object's ``attributes``: ``RowSpec.packer``)."""
        pack, lock, timed = self._specs[table].packer(attributes), self._lock, self._interval is not None

        def add(values: Any) -> None:  # a tuple, or the object of `attributes`
            run_id = self.run_id
            if run_id is None or self._closed:
                run_id = self._run()
            row = pack(values, run_id)
            with lock:
                buffer = self._buffers[table]
                buffer.append(row)
                n = len(buffer)
            if n >= self.batch_size or (timed and self._clock() - self._last_flush >= self._interval):
                self._flush_due()

        return add

    def _add(self, table: str, row: Mapping[str, Any]) -> None:
        spec = self._specs[table]
        self._append(table, spec.to_tuple(spec.build(row, self._run())))

    def _append(self, table: str, row: tuple) -> None:
        with self._lock:
            buffer = self._buffers[table]
            buffer.append(row)
            n = len(buffer)
        if n >= self.batch_size or (self._interval is not None and self._clock() - self._last_flush >= self._interval):
            self._flush_due()

    def _run(self) -> int:
        run_id = self.run_id
        if run_id is None or self._closed:
            self._check_open()
            raise StorageError("no run started: call start_run() before adding rows")
        return run_id

    def _flush_due(self) -> None:
        if self._thread is None:
            self.flush(patient=False)
        elif not self._woken:  # one wake-up per flush, not one per append while the writer is busy
            self._woken = True
            self._wake.set()

    # -- flushing -----------------------------------------------------------

    @property
    def pending(self) -> int:
        """Rows (and run updates, request verdicts) not yet in the database: buffered, retrying or spilled."""
        return sum(len(b) for b in self._buffers.values()) + len(self._run_updates) + len(self._backlog)

    def pending_by_table(self) -> dict[str, int]:
        """Pending rows per table, plus ``run_update`` for pending :meth:`finish_run` calls and
        ``request_verdict`` for pending :meth:`add_request_verdict` calls."""
        counts = self._backlog.counts()
        for name, rows in self._buffers.items():
            counts[name] += len(rows)
        count_updates(self._run_updates, counts)
        return counts

    @property
    def spilled(self) -> list[Path]:
        """Spill files holding rows that waited too long for the database; written back first."""
        return [f.path for f in self._backlog.files]

    def flush(self, *, patient: bool = True) -> bool:
        """Write all pending rows, oldest first, retrying transient failures; return success.

        Spill files go first (one transaction each), then the rows in memory in one transaction.
        After the retries are exhausted the rows stay pending, the failure is appended to
        :attr:`errors`, and if more than ``max_pending_rows`` are in memory they are spilled.
        Appends go on meanwhile, into fresh buffers; an automatic flush comes again after
        another ``batch_size`` rows (or ``flush_interval_s``).

        ``patient=False`` (the automatic flushes): during an outage one attempt, without retries, at most
        every `OUTAGE_PAUSE_S`, the rows kept meanwhile: a replay runs on at its pace (retrying each batch
        made it crawl) and its close waits, then spills."""
        with self._io:
            self._last_flush = self._clock()
            self._take_buffers()
            backlog = self._backlog
            if backlog.deleted and backlog.drop_runs(backlog.deleted):  # (rows of a run deleted while being written)
                raise self.deleted  # type: ignore[misc]
            if not backlog.chunks and not backlog.files:
                return True
            impatient = not patient and self.outage.active  # (a schema gone: nothing more is tried, kept to spill)
            if self.outage.schema_gone is not None or (impatient and self._clock() < self._next_attempt):
                if backlog.in_memory > self.max_pending_rows:
                    self._spill_overflow()
                return False
            try:
                failure = self._write_backlog(retries=0 if impatient else None)
            except RunDeleted as exc:  # (once: its rows dropped, and every later flush of its rows says it)
                backlog.drop_runs(set(exc.run_ids))
                self.deleted = self.deleted or exc
                raise
            if failure is None:
                self.outage.ended()
                return True
            self._next_attempt = self._clock() + OUTAGE_PAUSE_S
            self._note(failure)
            self._take_buffers()
            if backlog.in_memory > self.max_pending_rows:
                self._spill_overflow()
            return False

    def _take_buffers(self) -> None:
        """Move the buffers into the backlog as the next chunk; appends carry on into fresh ones."""
        with self._lock:
            if not self._run_updates and not any(self._buffers.values()):
                return
            rows, updates = self._buffers, self._run_updates
            self._buffers = {name: [] for name in SPECS}
            self._run_updates = []
            self._woken = False
        self._seq += 1
        self._backlog.chunks.append(Chunk(self._seq, rows, updates))

    def _write_backlog(self, retries: int | None = None) -> FlushFailure | None:
        backlog = self._backlog
        while backlog.files:
            saved = backlog.files[0]
            loaded: list[Chunk] = []
            refused, failure = self._attempt(lambda: backlog.commit(self.engine, self._inserts, loaded, saved), retries)
            if failure is not None:
                return failure
            self._count_written(backlog.drop_through(saved.last_seq))
            if refused is not None:
                self._save_refused(refused)
            log.info("storage: %d spilled rows from %s written to %s", len(saved), saved.path,
                     describe_url(self.engine))
        if backlog.chunks:
            chunks = list(backlog.chunks)
            refused, failure = self._attempt(lambda: backlog.commit(self.engine, self._inserts, chunks), retries)
            if failure is not None:
                return failure
            self._count_written(backlog.drop_through(backlog.chunks[-1].seq))
            if refused is not None:
                self._save_refused(refused)
        return None

    def _count_written(self, counts: Mapping[str, int]) -> None:
        for name, n in counts.items():
            if name in self.written:
                self.written[name] += n

    def _note(self, failure: FlushFailure) -> None:
        self.num_flush_failures += 1
        self.errors.append(failure)
        if len(self.errors) > _MAX_ERRORS:
            del self.errors[: _MAX_ERRORS // 2]
        self.outage.gave_up(failure)

    def _spill_overflow(self) -> None:
        try:
            saved = self._backlog.spill(self._spill_directories(None), source=describe_url(self.engine),
                                        writer=self.writer, runs=self.run_identities)
        except StorageError as exc:
            log.error("storage: %d rows wait in memory for %s and could not be spilled: %s",
                      self._backlog.in_memory, describe_url(self.engine), exc)
            return
        self.outage.spilled(len(saved), saved.path)

    def _attempt(self, fn: Callable[[], Any], retries: int | None = None) -> tuple[Any, FlushFailure | None]:
        return with_retries(fn, max_retries=self.max_retries if retries is None else retries,
                            backoff_s=self.retry_backoff_s, sleep=self._sleep,
                            target=describe_url(self.engine), pending=lambda: self.pending, on_retry=self._retried)

    def _retried(self, error: str, schema_missing: bool) -> None:
        self.retries += 1
        if not schema_missing:  # (a table missing is no outage: `OutageLog.gave_up` says it once, if it stays)
            self.outage.failed(error)

    def _writer_loop(self) -> None:
        """The background writer: flush when woken by appends or every ``flush_interval_s``."""
        interval = self.flush_interval_s or 1.0
        pause = max(self.retry_backoff_s * 2 ** self.max_retries, interval)
        deleted_said = False
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                ok = self.flush()
            except RunDeleted as exc:  # (said once: its rows are dropped as they come)
                if not deleted_said:
                    log.error("storage: %s", exc)
                deleted_said, ok = True, False
            except Exception:  # the rows stay pending; close() reports what is left
                log.exception("storage: background flush failed")
                ok = False
            if not ok:
                self._stop.wait(pause)

    def _stop_writer(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join()

    # -- closing and spills -------------------------------------------------

    def close(self, *, spill_dir: str | Path | None = None) -> None:
        """Flush what is left, waiting through an outage for up to ``close_wait_s``; if the database
        still refuses it, spill it and raise ``StorageError``.

        Everything unwritten, earlier spills included, goes to one file; the error's message and
        ``spill_path`` say where. The spill goes to ``spill_dir`` (argument, else constructor), else
        next to the SQLite file, else the cwd, falling back to the temp directory. Closing twice is harmless.
        """
        self._stop_writer()
        with self._io:
            if self._closed:
                return
            try:
                done = self.flush() or self._wait_for_database()
            except RunDeleted:  # (the run's rows dropped: nothing to spill, the one error)
                self._closed = True
                raise
            if done:
                self._closed = True
                self._note_refused()  # (a finished run that lost rows says so: `rows_refused`)
                fold_wal(self.engine)
                if self.deleted is not None:  # (its rows were dropped: the run is not recorded)
                    raise self.deleted
                return
            path, count = self._spill_all(Path(spill_dir) if spill_dir is not None else None)
            self._closed = True
            last = self.errors[-1].error if self.errors else "unknown error"
            raise StorageError(
                f"{count} rows could not be written to {describe_url(self.engine)} ({last}); "
                f"they were saved to {path} - {spill.load_advice(path, describe_url(self.engine))}",
                spill_path=path,
            )

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("RunRecorder is closed")

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
