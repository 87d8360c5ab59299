"""The writer process's side: it writes a simulator run's rows while the run goes on.

A replay spends about a sixth of its event loop inside SQLite (binding values and storing
rows: ~5 µs a row, three to five rows a request). Those writes cannot overlap the simulation
in a thread: the sqlite3 driver holds the GIL while it binds values, and gives it back only for
each statement step. So a simulator run forks a writer process
(:class:`controlplane.storage.early.EarlyWriter`, at the start of ``controlplane sim replay``
or of the run's session), which imports this module, and with it SQLAlchemy, while the
replaying process imports the simulator; :func:`serve_fresh` opens the database, checks its
schema, inserts the run row, then :func:`serve` writes each buffer the replaying process
sends with the unchanged :class:`~controlplane.storage.recorder.RunRecorder` code: same
chunks, same transactions, same order, same retries, spills and writer marks as an inline
recorder. ``flush`` and ``finish_run`` wait for the writer to have written everything sent
so far; ``close`` waits for its close and raises the ``StorageError`` (message and
``spill_path``) an inline close would have raised. If the replaying process dies without
closing, the writer sees the pipe close and closes the recorder itself: its rows are written,
or spilled where an inline close would spill them.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from typing import Any

from controlplane import timings
from controlplane.storage import sqlite_start
from controlplane.storage.crashed import mark_crashed_quietly
from controlplane.storage.db import SCHEMA_HEAD, ensure_schema, make_engine, plain_sqlite_file, prepare_schema
from controlplane.storage.early import portable_error
from controlplane.storage.errors import RunDeleted, StorageError
from controlplane.storage.heap import heap_trimmer
from controlplane.storage.pipe import CONFIG, FLUSH, INBOX, ROWS, START, read_into, receive, send, unpack_rows
from controlplane.storage.recorder import RunRecorder

__all__ = ["TRIM_EVERY", "serve", "serve_fresh"]

#: The writer gives its heap's free pages back after this many batches of rows
#: (``controlplane.storage.heap``): its memory stays level over a run of any length.
TRIM_EVERY = 8

log = logging.getLogger("controlplane.storage.recorder")


def serve(recorder: RunRecorder, rfd: int, wfd: int) -> None:
    """The writer process's loop: write what the parent sends, in order, with the inline
    recorder's own flush and close; reply to flushes and to the close."""
    # A thread reads the pipe while this one writes to the database, so the parent's sends
    # do not wait for a write; a few messages at most, then the pipe holds the parent back.
    inbox: queue.Queue[Any] = queue.Queue(maxsize=INBOX)
    threading.Thread(target=read_into, args=(rfd, inbox), name="cp-writer-inbox", daemon=True).start()
    fault: str | None = None  # the last unexpected error (not a database failure)
    trim, batches = heap_trimmer(), 0

    def state() -> dict[str, Any]:
        return {"errors": recorder.errors, "num_flush_failures": recorder.num_flush_failures,
                "retries": recorder.retries, "written": recorder.written, "refused": recorder.refused,
                "fault": fault, "deleted": recorder.deleted}

    def close_here(spill_dir: str | None) -> tuple[str, str | None] | None:
        nonlocal fault
        try:
            RunRecorder.close(recorder, spill_dir=spill_dir)
        except StorageError as exc:
            return str(exc), str(exc.spill_path) if exc.spill_path is not None else None
        except Exception as exc:
            log.exception("storage: close in the writer process failed")
            fault = f"{type(exc).__name__}: {exc}"
        return None

    while True:
        message = inbox.get()
        if message is None:  # the parent is gone without closing: close for it
            close_here(None)
            return
        (kind, marshalled, updates, arg), data = message
        with recorder._lock:
            if data:
                for name, table_rows in unpack_rows(marshalled, data).items():
                    recorder._buffers[name].extend(table_rows)
            recorder._run_updates.extend(updates)
        if kind == ROWS:
            try:
                RunRecorder.flush(recorder, patient=False)  # (an outage: one try now and then, rows kept)
            except RunDeleted:  # the run's row is gone: say so (the parent reads it when its next send fails), end
                send(wfd, (False, state()))
                return
            except Exception as exc:  # as the thread writer: rows stay pending, close reports them
                log.exception("storage: flush in the writer process failed")
                fault = f"{type(exc).__name__}: {exc}"
            batches += 1
            if batches % TRIM_EVERY == 0:
                trim()
        elif kind == FLUSH:
            try:
                ok = RunRecorder.flush(recorder)
            except RunDeleted:
                send(wfd, (False, state()))
                return
            except Exception as exc:
                log.exception("storage: flush in the writer process failed")
                fault, ok = f"{type(exc).__name__}: {exc}", False
            send(wfd, (ok, state()))
        else:
            send(wfd, (close_here(arg), state()))
            return


def serve_fresh(rfd: int, wfd: int) -> None:
    """The loop of a writer started before the run (:class:`controlplane.storage.early.EarlyWriter`):
    on ``CONFIG``, make the engine and a recorder (``controlplane sim replay`` sends it as soon as
    its config is read, before the simulator's imports); on ``START``, bring the schema to head,
    start the run and reply with its id, or with the error that stopped it (then exit); then
    :func:`serve`. A parent that closes the pipe first ends it quietly.

    A plain SQLite file's run starts with the standard library (:mod:`controlplane.storage.sqlite_start`):
    the reply comes before the engine and the recorder are made (the replaying process waits for
    it), and they are made after it; where that start cannot tell, the engine's way does it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes us
    message = receive(rfd)
    if message is None:
        return
    (kind, _, _, (url, engine_kwargs, settings)), _ = message
    if kind != CONFIG:
        raise StorageError(f"writer process: expected the configuration first, got message {kind}")
    recorder: RunRecorder | None = None
    error: BaseException | None = None
    at_head = False
    sqlite_file = None if engine_kwargs else plain_sqlite_file(url)

    def make_recorder() -> None:
        nonlocal recorder, error, at_head
        try:
            engine = make_engine(url, **engine_kwargs)
            recorder = RunRecorder(engine, **settings)
        except Exception as exc:  # noqa: BLE001 - the parent raises it at start_run
            error = exc
        else:
            try:  # nothing written: a new database's schema is made at the start
                at_head = prepare_schema(engine)
            except Exception:  # noqa: BLE001 - the start checks the schema itself and reports what fails
                at_head = False

    if sqlite_file is None:
        make_recorder()
    timings.mark("writer_ready")
    message = receive(rfd)
    if message is None:
        return
    timings.mark("writer_start")
    (kind, _, _, run), _ = message
    if kind != START:
        raise StorageError(f"writer process: expected the run's start, got message {kind}")
    run_id = None
    if sqlite_file is not None:
        # The database is touched only now: a command that fails before its run starts (a
        # missing trace) leaves none behind, though the configuration came early.
        run_id = sqlite_start.start_run(sqlite_file, run, head=SCHEMA_HEAD)
        if run_id is not None:
            send(wfd, (run_id, None))
            timings.mark("writer_answered")
        make_recorder()
        if run_id is not None:
            if recorder is None:  # the file took the run row, yet its engine fails: report it as a fault
                raise StorageError(f"writer process: no engine for {url} after the run's start") from error
            recorder.run_id = run_id
            recorder.identify_run(run_id, run)
            mark_crashed_quietly(recorder.engine, exclude={run_id})
            serve(recorder, rfd, wfd)
            return
    if recorder is not None:
        try:
            if not at_head:
                ensure_schema(recorder.engine)
            recorder.start_run(**run)
        except Exception as exc:  # noqa: BLE001
            error = exc
    if error is not None or recorder is None:
        send(wfd, (None, portable_error(error, url)))
        return
    send(wfd, (recorder.run_id, None))
    timings.mark("writer_answered")
    mark_crashed_quietly(recorder.engine, exclude={recorder.run_id})  # (after the reply: the run waits for none)
    serve(recorder, rfd, wfd)
