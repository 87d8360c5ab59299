"""What a `RunRecorder` cannot write goes to a spill file (what the database refused for good, to a
refused file; what is left at the close, after waiting for the database), and a spill file's rows can be
written later: the recorder's spilling half (a mixin
of `controlplane.storage.recorder.RunRecorder`, which owns the buffers, the backlog and the lock
these methods use)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, select

from controlplane.storage import spill, spill_notes
from controlplane.storage.backlog import Backlog, chunks_from_entries, read_mark, skip_committed
from controlplane.storage.db import describe_url, sqlite_path
from controlplane.storage.errors import StorageError
from controlplane.storage.models import Run
from controlplane.storage.refused import Refusal, RefusedRows, refusal_message
from controlplane.storage.request_verdicts import REQUEST_VERDICT
from controlplane.storage.retry import FlushFailure
from controlplane.storage.rows import SPECS

__all__ = ["RecorderSpills"]

log = logging.getLogger("controlplane.storage.recorder")

_RUN: Final = Run.__table__
#: The wait at the close tries again at most this many times (each try is a flush with its retries).
_CLOSE_TRIES: Final = 8


class RecorderSpills:
    """Spill what is unwritten; load a spill file back."""

    engine: Engine
    spill_dir: Path | None
    writer: str
    errors: list[FlushFailure]
    close_wait_s: float
    retry_backoff_s: float
    pending: int
    _sleep: Callable[[float], None]
    _clock: Callable[[], float]
    written: dict[str, int]
    refused: RefusedRows
    _backlog: Backlog
    _buffers: dict[str, list[tuple]]
    _run_updates: list[dict[str, Any]]
    _io: Any  # a threading.RLock: one writer at a time
    _lock: threading.Lock  # the buffers

    # (the recorder's own: flush what is buffered, take the buffers, run a write with retries)
    flush: Callable[[], bool]
    _take_buffers: Callable[[], None]
    _attempt: Callable[[Callable[[], Any]], tuple[Any, FlushFailure | None]]
    _check_open: Callable[[], None]

    run_identities: dict[int, dict[str, Any]]

    def identify_run(self, run_id: int, values: Mapping[str, Any]) -> None:
        """Remember run ``run_id``'s name and start (``values``: its row's): the files this recorder
        spills name them, so that loading one writes into this run only, not another run that has
        its id in another database (`replay_spill`)."""
        self.run_identities[run_id] = {"name": values.get("name"), "started_at": values.get("started_at")}

    def _spill_directories(self, directory: Path | None) -> list[Path]:
        directory = directory if directory is not None else self.spill_dir
        if directory is None:
            db_file = sqlite_path(self.engine)
            directory = db_file.resolve().parent if db_file is not None else None
        return spill.default_directories(directory)

    def _spill_all(self, directory: Path | None) -> tuple[Path, int]:
        self._take_buffers()
        backlog = self._backlog
        count, run_ids = len(backlog), backlog.run_ids()
        try:
            path = spill.write_spill(backlog.all_entries, directories=self._spill_directories(directory),
                                     run_ids=run_ids, source=describe_url(self.engine), writer=self.writer,
                                     runs=self.run_identities)
        except StorageError as exc:  # (no folder took it: a full disk, a file-size limit)
            raise StorageError(self._lost(str(exc))) from None
        for f in backlog.files:
            f.path.unlink(missing_ok=True)
        backlog.files, backlog.chunks = [], []
        log.error("storage: %d unwritten rows spilled to %s", count, path)
        # (so that the run, left `running`, is not taken for a killed one: controlplane.storage.crashed)
        spill_notes.note_spill(path, run_ids, self._database_key(), count)
        return path, count

    def _lost(self, why: str) -> str:
        """The close's error when no spill file could take the rows the database did not: how many rows of which
        runs, by table, the database's error and the spill's (``why``); and where earlier spills keep theirs."""
        backlog = self._backlog
        counts = backlog.counts(spilled=False)
        run_ids = {run_id for chunk in backlog.chunks for run_id in chunk.run_ids()}
        lost = sum(counts.values())
        tables = ", ".join(f"{n:,} {name}" for name, n in counts.items() if n)
        runs = ", ".join(map(str, sorted(run_ids)))
        last = self.errors[-1].error if self.errors else "unknown error"
        text = (f"{lost:,} rows of run{'s' if len(run_ids) > 1 else ''} {runs} ({tables}) could not be written to "
                f"{describe_url(self.engine)} ({last}), nor saved to a spill file, so they are lost: {why}")
        if backlog.files:
            kept = sum(map(len, backlog.files))
            files = ", ".join(str(f.path) for f in backlog.files)
            text += f"; the {kept:,} rows spilled before are in {files}: load them with `controlplane db load-spill`"
        return text

    def _wait_for_database(self) -> bool:
        """At the close, after a flush that failed: while the database is away (a retryable
        failure), flush again now and then for up to ``close_wait_s``; return whether it took
        everything. The writer process closes with this same wait. Ctrl-C ends the wait (the
        rows are then spilled)."""
        if not self.close_wait_s or not self.errors or not self.errors[-1].retryable:
            return False
        pause = max(self.close_wait_s / _CLOSE_TRIES, self.retry_backoff_s)
        start, slept = self._clock(), 0.0  # (slept: with an injected sleep the clock may not move)
        log.warning("storage: %s is still unavailable at the close; waiting up to %.0f s for it to take the last "
                    "%d rows before they are saved to a spill file (Ctrl-C: save them now)",
                    describe_url(self.engine), self.close_wait_s, self.pending)
        try:
            while max(self._clock() - start, slept) < self.close_wait_s:
                wait = min(pause, self.close_wait_s - max(self._clock() - start, slept))
                self._sleep(wait)
                slept += wait
                if self.flush():
                    return True
                if not self.errors[-1].retryable:
                    return False
        except KeyboardInterrupt:
            log.warning("storage: interrupted while waiting for %s: saving the rows to a spill file",
                        describe_url(self.engine))
        return False

    def _database_key(self) -> str:
        return spill_notes.database_key(describe_url(self.engine), sqlite_path(self.engine))

    def _save_refused(self, refusal: Refusal) -> None:
        """Rows the database refused (the flush's other rows are committed): to a refused file,
        counted in :attr:`refused`, and logged once with the table, the ids and what to do."""
        path: Path | None
        try:
            path = spill.write_spill(refusal.file_entries(), directories=self._spill_directories(None),
                                     run_ids=refusal.run_ids(), source=describe_url(self.engine), kind="refused")
        except StorageError as exc:
            log.error("storage: %s", exc)
            path = None
        for table, n in refusal.counts().items():
            if table in self.written:
                self.written[table] -= n  # (counted with their flush)
        self.refused.add(refusal, path)
        log.error("%s", refusal_message(refusal, path))

    def _note_refused(self, by_run: Mapping[int, Mapping[str, int]] | None = None, *, sign: int = 1) -> None:
        """Each finished run whose rows the database refused says so in its summary, ``rows_refused`` (by table):
        it read as complete (`runs list`: every request completed) with part of its rows missing. Added at the
        close (after its end is written) from this recorder's refusals (``by_run``: `RefusedRows.by_run`);
        ``sign=-1`` takes a refused file's rows, loaded, off. A failure is logged (the refused files and the
        run's warning say it too)."""
        from sqlalchemy import update

        for run_id, counts in (self.refused.by_run if by_run is None else by_run).items():
            try:
                with self.engine.begin() as conn:
                    summary = conn.execute(select(_RUN.c.summary).where(_RUN.c.id == run_id)).scalar_one_or_none()
                    if not isinstance(summary, dict):
                        continue
                    noted = dict(summary.get("rows_refused") or {})
                    for table, n in counts.items():
                        noted[table] = noted.get(table, 0) + sign * n
                    noted = {t: n for t, n in sorted(noted.items()) if n > 0}
                    values = {k: v for k, v in summary.items() if k != "rows_refused"}
                    conn.execute(update(_RUN).where(_RUN.c.id == run_id)
                                 .values(summary={**values, "rows_refused": noted} if noted else values))
            except Exception as exc:  # noqa: BLE001 - the run's rows are written; this is its note
                log.warning("storage: could not note in run %s's summary that %s of its rows were refused: %s",
                            run_id, sum(counts.values()), exc)

    def replay_spill(self, path: str | Path) -> int:
        """Load a spill file's rows and write them now; return how many were written (rows the
        database refuses go to a refused file, as in a flush).

        The runs they belong to must exist in this recorder's database, and be the runs the file
        names in its header (their names and starts, where it names them), not other runs that
        have their ids: else ``StorageError``, and nothing is written. Rows
        whose flush the spilling recorder did commit after all (its
        acknowledgement was lost) are skipped. The file is left in place:
        delete it once this returns. Raises ``StorageError`` if the rows could
        not be written; they then stay pending here and a later :meth:`close`
        spills them again.
        """
        self._check_open()
        path = Path(path)
        header = spill.read_header(path)
        writer = header.get("writer")
        entries = list(spill.read_entries(path))
        unknown_tables = {t for t, _, _ in entries} - set(SPECS) - {spill.RUN_UPDATE, REQUEST_VERDICT}
        if unknown_tables:
            raise StorageError(f"{path}: unknown table(s) {sorted(unknown_tables)}")
        run_ids = {row["id"] if t == spill.RUN_UPDATE else row["run_id"] for t, row, _ in entries}
        with self._io:
            found, failure = self._attempt(lambda: self._existing_runs(run_ids, writer))
            if failure is not None:
                raise StorageError(f"could not read runs from {describe_url(self.engine)}: {failure.error}")
            existing, mark, journals = found
            missing = run_ids - existing.keys()
            if missing:
                raise StorageError(
                    f"{path} holds rows of run(s) {sorted(missing)}, not present in {describe_url(self.engine)}"
                )
            others = other_runs(header, existing)
            if others:
                raise StorageError(f"{path} holds rows of {'; '.join(others)} in {describe_url(self.engine)}: "
                                   "they are other runs with the same ids (another database, or this one made "
                                   "anew?), so nothing was "
                                   "written; load the file into the database whose runs it holds")
            for run_id, (name, started) in existing.items():  # (a file it spills of them names them too)
                self.run_identities.setdefault(run_id, {"name": name, "started_at": _utc(started) or started})
            todo = list(skip_committed(iter(entries), mark))
            refused_before = self.refused.count
            was_refused = header.get("kind") == "refused" or path.name.startswith("controlplane-refused-")
            by_run: dict[int, dict[str, int]] = {}
            for table, row, _ in todo if was_refused else ():
                counts = by_run.setdefault(row["id"] if table == spill.RUN_UPDATE else row["run_id"], {})
                counts[table] = counts.get(table, 0) + 1
            loaded = chunks_from_entries(((t, row, None) for t, row, _ in todo), 0)
            with self._lock:
                for chunk in loaded:
                    for name, rows in chunk.rows.items():
                        self._buffers[name].extend(rows)
                    self._run_updates.extend(chunk.updates)
            if not self.flush():
                raise StorageError(
                    f"could not write the {len(todo)} rows from {path} to {describe_url(self.engine)}: "
                    f"{self.errors[-1].error}"
                )
            spill_notes.forget(path, journals)
            self._note_refused(by_run, sign=-1)  # (a refused file's rows, written: its runs lack them no more)
            return len(todo) - (self.refused.count - refused_before)  # (refused again: in a new refused file)

    def _existing_runs(self, run_ids: set[int],
                       writer: str | None) -> tuple[dict[int, tuple], int | None, list[Path]]:
        """The runs of ``run_ids`` in the database, ``{id: (name, started_at)}``, ``writer``'s mark, and
        the folders of the runs' journals (where the notes of their spills are: `spill_notes`)."""
        with self.engine.connect() as conn:
            mark = read_mark(conn, writer) if writer is not None else None
            if not run_ids:
                return {}, mark, []
            query = (select(_RUN.c.id, _RUN.c.name, _RUN.c.started_at, _RUN.c.config)
                     .where(_RUN.c.id.in_(sorted(run_ids))))
            rows = conn.execute(query).all()
        processes = [row.config.get("process") if isinstance(row.config, dict) else None for row in rows]
        journals = [p.get("journal") for p in processes if isinstance(p, dict)]
        folders = list(dict.fromkeys(Path(j).parent for j in journals if isinstance(j, str)))
        return {row.id: (row.name, row.started_at) for row in rows}, mark, folders


def _utc(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def other_runs(header: Mapping[str, Any], stored: Mapping[int, tuple]) -> list[str]:
    """The runs of a spill file's header (``runs``: name and start of each) that are not the runs of
    the same ids in ``stored`` (``{id: (name, started_at)}``), each as a line saying both; empty
    where all are (or the header names none: a file of an older version)."""
    out = []
    for key, identity in (header.get("runs") or {}).items():
        run_id = int(key)
        if run_id not in stored or not isinstance(identity, Mapping):
            continue
        name, started = stored[run_id]
        if identity.get("name") != name or _utc(identity.get("started_at")) != _utc(started):
            out.append(f"run {run_id} {_named(identity.get('name'))} started {identity.get('started_at')}, but run "
                       f"{run_id} there is {_named(name)} started "
                       f"{_utc(started).isoformat() if _utc(started) else started}")
    return out


def _named(name: Any) -> str:
    return "(no name)" if name is None else repr(name)
