"""A simulator run's writer process, started before the run's own imports.

Importing SQLAlchemy, opening the database, checking its schema and inserting the run row
took about a third of a short replay's instructions, all before its first event. With two
CPUs that can run beside the rest of the start-up: :class:`EarlyWriter` forks a child at the
very start of ``controlplane sim replay`` (before numpy, SimPy, the plugins and the latency
models are imported and built), and the child imports the database side at once. The
replaying process never imports SQLAlchemy: :class:`FrontRecorder` checks and packs each row
(:mod:`controlplane.storage.rows`, plain data) and hands each full buffer to the child
(:mod:`controlplane.storage.writer_process`), which writes it while the run goes on.

Messages on the pipe (:mod:`controlplane.storage.pipe`): ``CONFIG`` (the database URL and
the recorder's settings, :meth:`EarlyWriter.configure`: the child makes the engine and a
:class:`~controlplane.storage.recorder.RunRecorder`), ``START`` (the run row's values: the
child brings the schema to head, inserts the row and replies with its id, or with the error that stopped the engine, the
schema or the insert, which :meth:`FrontRecorder.start_run` raises as the inline recorder
would have: a bad URL is the same ``ValueError``, a database that cannot be reached a
``StorageError`` naming it), then rows, flushes and the close, written by the recorder's own
code in the child (same transactions, order, retries and spills as inline).

This module imports no SQLAlchemy; the child imports :mod:`controlplane.storage.writer_process`.
"""

from __future__ import annotations

import gc
import os
import pickle
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from controlplane import timings
from controlplane.storage.columns import RUN_MODES, RUN_STATUSES
from controlplane.storage.errors import StorageError, database_error, mask_password
from controlplane.storage.held_signals import signals_held
from controlplane.storage.pipe import CLOSE, CONFIG, FLUSH, ROWS, START, last_words, pack_rows, receive, send, widen
from controlplane.storage.refused import RefusedRows
from controlplane.storage.request_verdicts import request_verdict
from controlplane.storage.rows import SPECS, derive_latencies
from controlplane.storage.shared_file import open_files, open_here

__all__ = ["ENV_SWITCH", "EarlyWriter", "FrontRecorder", "another_cpu_free", "early_writer_usable", "portable_error",
           "reachable_from_child", "recorder_settings", "start_for_command", "take_started", "writer_process_possible"]


def _log() -> Any:
    """The recorder's logger, made when something is logged (a replay logs nothing here, and
    ``logging`` is ~0.01 G instructions of its start)."""
    import logging

    return logging.getLogger("controlplane.storage.recorder")

#: Environment variable: ``0`` keeps every write in the replaying process.
ENV_SWITCH: Final = "CONTROLPLANE_WRITER_PROCESS"

#: A table's buffered rows that the replaying process hands to the writer (each hand-off is
#: one flush there), when ``batch_size`` is larger: the writer writes them while the run goes
#: on, on the other CPU, and what is left at the end, written while the run waits for it, is
#: a few hundred rows rather than up to a whole ``batch_size`` of each table (500 rather than
#: 2,000: the end's wait 13.7 -> 6.5 ms at 10k requests, the writer's instructions +2%;
#: docs/history/simulator.md, "Sixteenth session").
HANDOFF_ROWS: Final = 500


def _sqlite_in_memory_or_unclear(url: str) -> bool:
    """Whether ``url`` is SQLite without a plain file path (in memory, a ``file:`` URI), or not
    a URL this check reads: the child could not reach the same database, or the inline
    recorder had better report what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return True
    if scheme.split("+", 1)[0] != "sqlite":
        return False
    database = rest[1:].split("?", 1)[0] if rest.startswith("/") else ""
    return not database or database == ":memory:" or database.startswith("file:")


def writer_process_possible(loadavg: str = "/proc/loadavg") -> bool:
    """Whether to fork a writer process now: os.fork on Linux, two CPUs or more for this process,
    and ``CONTROLPLANE_WRITER_PROCESS`` not ``0``. Unset (or ``auto``), only when another CPU is
    free at this moment (:func:`another_cpu_free`): the writer overlaps the start-up only on a
    free core, and on a busy host it adds its own work (docs/history/simulator.md); ``1`` forks anyway."""
    switch = os.environ.get(ENV_SWITCH, "auto").strip().lower()
    if switch in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    if len(os.sched_getaffinity(0)) < 2:  # no core for the writer: it would only add its own cost
        return False
    return switch in ("1", "true", "yes", "on") or another_cpu_free(loadavg)


def another_cpu_free(loadavg: str = "/proc/loadavg", samples: int = 3) -> bool:
    """Whether fewer tasks than this process's CPUs are runnable now, this one included (the
    kernel's count in ``/proc/loadavg``; the least of ``samples`` reads 0.5 ms apart, so that a
    kernel thread's moment on a CPU does not count as a busy host); True when it cannot be read."""
    running = None
    try:
        for i in range(samples):
            if i:
                time.sleep(0.0005)
            with open(loadavg) as f:
                n = int(f.read().split()[3].split("/")[0])
            running = n if running is None else min(running, n)
    except (OSError, ValueError, IndexError):
        return True
    return running is None or running < len(os.sched_getaffinity(0))


def early_writer_usable(url: str) -> bool:
    """Whether a writer process forked now can write ``url``'s database, and gains from it
    (:func:`writer_process_possible`, not an in-memory SQLite database, and not a SQLite file
    this process has open: :meth:`EarlyWriter.can_write`)."""
    return writer_process_possible() and reachable_from_child(url) and not open_here(url, open_files())


def reachable_from_child(url: str) -> bool:
    """Whether a forked writer process writes the same database as this one (not in-memory SQLite)."""
    return not _sqlite_in_memory_or_unclear(url)


def recorder_settings(storage: Any) -> dict[str, Any]:
    """A run's recorder settings from its config's ``storage`` section, as a
    :class:`FrontRecorder` and :meth:`EarlyWriter.configure` take them (besides the URL)."""
    return {"batch_size": storage.batch_size, "max_pending_rows": storage.max_pending_rows}


_pending: EarlyWriter | None = None  # forked by start_for_command, not yet taken by the run


def start_for_command() -> None:
    """Fork the writer process now, at the start of a ``controlplane sim replay`` process
    (before the command's own imports); the command takes it with :func:`take_started`."""
    global _pending
    if _pending is None and writer_process_possible():
        _pending = EarlyWriter.fork()


def take_started() -> EarlyWriter | None:
    """The writer :func:`start_for_command` forked (once; None if none)."""
    global _pending
    writer, _pending = _pending, None
    return writer


def portable_error(exc: BaseException | None, url: str | None = None) -> BaseException:
    """``exc`` as the parent can unpickle it without importing the database side: our own
    and the standard library's exceptions as they are, others (the database driver's) as a
    one-line ``StorageError`` naming the database ``url`` and the driver's error
    (`controlplane.storage.errors.database_error`)."""
    if exc is None:
        return StorageError("the writer process could not open the database")
    module = type(exc).__module__
    if module == "builtins" or module.startswith("controlplane."):
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001 - not portable as it is
            pass
    return database_error(exc, url)


class EarlyWriter:
    """A forked child that imports the database side now and waits for a :class:`FrontRecorder`.

    Fork it before the heavy imports (no threads run yet); give it to the run
    (``sim.replay.replay(..., writer=...)``), or :meth:`discard` it if the run does not use it.
    """

    @classmethod
    def fork(cls) -> EarlyWriter | None:
        """A writer forked now, or None (logged) where the system refuses a process or a pipe:
        the run then writes from its own process."""
        try:
            return cls()
        except OSError as exc:
            _log().warning("storage: could not fork a writer process (%s); writing in this one", exc)
            return None

    def __init__(self) -> None:
        # The files open here now are open in the child too; see `can_write`.
        self.inherited_files = open_files()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        widen(to_child_w)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: none run yet here
                pid = os.fork()
        except OSError:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            raise
        if pid == 0:  # the child: serve, then leave without running the parent's exit handlers
            code = 0
            try:
                os.close(to_child_w)
                os.close(from_child_r)
                # The parent's objects are shared copy-on-write and the imports make only
                # long-lived ones: no collection walks them (a third of the imports' time).
                timings.mark("writer_forked")
                gc.freeze()
                gc.disable()
                from controlplane.storage.writer_process import serve_fresh

                gc.freeze()
                gc.enable()
                timings.mark("writer_imported")
                serve_fresh(to_child_r, from_child_w)
                timings.mark("writer_closed")
                # What the database side compiled from text (SQLAlchemy's dataclasses, named
                # tuples, annotations), for the next run's writer (a no-op when nothing was new).
                from controlplane import code_cache

                code_cache.save()
            except BaseException:  # noqa: BLE001 - reported on stderr; the parent sees the pipe close
                _log().exception("storage: the writer process failed")
                code = 1
            finally:
                timings.print_writer_report()
                os._exit(code)
        os.close(to_child_r)
        os.close(from_child_w)
        self.pid: int | None = pid
        self.to_child, self.from_child = to_child_w, from_child_r
        self.config: tuple[str, dict[str, Any], dict[str, Any]] | None = None  # what `configure` sent

    def can_write(self, url: str) -> bool:
        """Whether this writer can write ``url``'s database: not an in-memory SQLite database, and
        not a SQLite file this process had open when it forked the child (the child's rows would be
        lost without an error: :mod:`controlplane.storage.shared_file`)."""
        if not reachable_from_child(url):
            return False
        return not open_here(url, self.inherited_files)

    def configure(self, url: str, *, batch_size: int = 5000, engine_kwargs: dict[str, Any] | None = None,
                  **recorder_kwargs: Any) -> None:
        """Send the child its database and its recorder's settings (``CONFIG``): it makes the
        engine and the recorder while this process goes on (the schema check and the run row
        wait for the run's start). Once only: a :class:`FrontRecorder` made with the same
        settings later sends nothing; other settings are an error. ``OSError`` if the child is gone."""
        config = (url, dict(engine_kwargs or {}), {"batch_size": batch_size, **recorder_kwargs})
        if self.config is not None:
            if self.config != config:
                raise StorageError(f"the writer process was configured for {mask_password(self.config[0])} "
                                   f"with {self.config[2]}, not for {mask_password(url)} with {config[2]}")
            return
        send(self.to_child, (CONFIG, True, [], config), b"")
        self.config = config

    def discard(self) -> None:
        """End the child (it exits when its pipe closes) and reap it; idempotent."""
        pid, self.pid = self.pid, None
        for fd in (self.to_child, self.from_child):
            if fd >= 0:
                os.close(fd)
        self.to_child = self.from_child = -1
        if pid is not None:
            os.waitpid(pid, 0)


class FrontRecorder:
    """The replaying process's recorder in front of an :class:`EarlyWriter`: buffers checked
    rows (the :class:`~controlplane.storage.recorder.RunRecorder` interface the run uses) and
    sends each full buffer, flush and close to the child. Not thread-safe: for one replaying
    thread."""

    def __init__(self, writer: EarlyWriter, url: str, *, batch_size: int = 5000, handoff_rows: int = HANDOFF_ROWS,
                 engine_kwargs: dict[str, Any] | None = None, **recorder_kwargs: Any) -> None:
        """``engine_kwargs`` go to the child's ``make_engine``, ``recorder_kwargs`` (and
        ``batch_size``) to its ``RunRecorder``; only plain values cross the pipe. A table's
        buffer goes to the child at ``min(batch_size, handoff_rows)`` rows (`HANDOFF_ROWS`)."""
        if batch_size < 1 or handoff_rows < 1:
            raise ValueError(f"batch_size and handoff_rows must be >= 1, got {batch_size}, {handoff_rows}")
        self.writer = writer
        self.url = mask_password(url)
        self.batch_size = batch_size
        self._handoff = min(batch_size, handoff_rows)
        self.run_id: int | None = None
        self._starting = False  # `begin_run` sent the run row; its id not yet read (`run_started`)
        self.errors: list[Any] = []
        self.num_flush_failures = 0
        self.retries = 0
        self.written: dict[str, int] = {name: 0 for name in SPECS}
        self.refused = RefusedRows()  # (the child's `RunRecorder.refused`, as of its last reply)
        self._buffers: dict[str, list[tuple]] = {name: [] for name in SPECS}
        self._appenders: dict[tuple[str, tuple[str, ...] | None], Callable[[Any], None]] = {}
        self._run_updates: list[dict[str, Any]] = []
        self._closed = False
        self._deleted: BaseException | None = None  # its run deleted while being written (`last_words`)
        self._owed = 0  # replies to FLUSH and CLOSE not yet read (one a Ctrl-C left unread is read before the next)
        try:
            writer.configure(url, batch_size=batch_size, engine_kwargs=engine_kwargs, **recorder_kwargs)
        except OSError as exc:  # the child is gone
            self._gone()
            raise StorageError(f"the writer process of {self.url} exited early ({exc})") from exc

    # -- runs ---------------------------------------------------------------

    def start_run(self, *, mode: str, **values: Any) -> int:
        """Have the child insert the run row; its id, or the child's error raised here."""
        self.begin_run(mode=mode, **values)
        return self.run_started()

    def begin_run(self, *, mode: str, **values: Any) -> None:
        """Send the child the run row (``START``) and go on without its reply: the child checks
        the schema and inserts the row while this process builds the rest of the run.
        :meth:`run_started` waits for the id (the first row added waits for it too)."""
        if mode not in RUN_MODES:
            raise ValueError(f"run mode {mode!r} is not one of {sorted(RUN_MODES)}")
        if self.run_id is not None or self._starting:
            raise StorageError("FrontRecorder: one run per writer process")
        self._send(START, {"mode": mode, **values})
        self._starting = True

    def run_started(self) -> int:
        """The run row's id, once the child has inserted it (waiting for its reply to
        :meth:`begin_run` if it has not come yet), or the child's error raised here."""
        if self.run_id is not None:
            return self.run_id
        if not self._starting:
            self._check_open()
            raise StorageError("no run started: call start_run() before adding rows")
        self._starting = False
        with signals_held():  # (the reply read whole: `controlplane.storage.held_signals`)
            message = receive(self.writer.from_child)
        if message is None:
            self._gone()
            raise StorageError(f"the writer process of {self.url} exited before starting the run")
        (run_id, error), _ = message
        if error is not None:
            self._gone()
            raise error
        self.run_id = int(run_id)
        return self.run_id

    def finish_run(self, run_id: int, *, status: str, summary: dict[str, Any] | None, finished_at: datetime,
                   wall_s: float | None, sim_end_s: float | None) -> bool:
        """Flush everything and mark the run finished, in the child's one transaction."""
        self._check_open()
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {sorted(RUN_STATUSES)}")
        if finished_at.tzinfo is None:
            raise ValueError(f"finished_at {finished_at!r} is naive; pass a timezone-aware datetime")
        self._run_updates.append({"id": run_id, "status": status, "summary": summary, "finished_at": finished_at,
                                  "wall_s": wall_s, "sim_end_s": sim_end_s})
        return self.flush()

    # -- appends ------------------------------------------------------------

    def appender(self, table: str, attributes: Sequence[str] | None = None) -> Callable[[Any], None]:
        """Add one row of ``table`` given as values in ``SPECS[table].columns`` order, checked; with
        ``attributes``, given as an object whose attributes are those values (``RowSpec.packer``).
        One generated function a row (``RowSpec.compiled``): the checks, the append, the hand-off."""
        key = (table, None if attributes is None else tuple(attributes))
        add = self._appenders.get(key)
        if add is None:
            buffer = self._buffers[table]
            add = self._appenders[key] = SPECS[table].compiled(
                attributes,
                head="run_id = _recorder.run_id\nif run_id is None or _recorder._closed:\n    run_id = _recorder._run()",
                finish="_append({row})\nif len(_buffer) >= _size:\n    _recorder._post(_ROWS)",
                env={"_recorder": self, "_append": buffer.append, "_buffer": buffer, "_size": self._handoff,
                     "_ROWS": ROWS},
            )
        return add

    def add_values(self, table: str, values: tuple) -> None:
        self.appender(table)(values)

    def add_request(self, row: dict[str, Any]) -> None:
        """A request's final state; latency columns are derived when not given (as inline)."""
        spec, buffer = SPECS["request"], self._buffers["request"]
        buffer.append(spec.to_tuple(derive_latencies(spec.build(row, self._run()))))
        if len(buffer) >= self._handoff:
            self._post(ROWS)

    def add_request_verdict(self, request_id: str, verdict: str, reason: str | None = None) -> None:
        """A guardian verdict after the request's row (as inline: sent with the run updates)."""
        self._run_updates.append(request_verdict(self._run(), request_id, verdict, reason))

    def add_worker_event(self, row: dict[str, Any]) -> None:
        self._add("worker_event", row)

    def add_decision(self, row: dict[str, Any]) -> None:
        self._add("decision", row)

    def add_metric(self, row: dict[str, Any]) -> None:
        self._add("metric_sample", row)

    def add_iteration(self, row: dict[str, Any]) -> None:
        self._add("iteration", row)

    def _add(self, table: str, row: dict[str, Any]) -> None:
        spec, buffer = SPECS[table], self._buffers[table]
        buffer.append(spec.to_tuple(spec.build(row, self._run())))
        if len(buffer) >= self._handoff:
            self._post(ROWS)

    # -- flushing and closing -------------------------------------------------

    @property
    def pending(self) -> int:
        """Rows (and run updates) not yet sent to the writer process."""
        return sum(len(b) for b in self._buffers.values()) + len(self._run_updates)

    def flush(self) -> bool:
        """Send what is buffered; wait until the child has written everything sent so far."""
        self._check_open()
        self._post(FLUSH)
        ok, _ = self._reply()
        return bool(ok)

    def close(self, *, spill_dir: str | Path | None = None) -> None:
        """Have the child close its recorder (writing or spilling what is left); raise its ``StorageError``."""
        if self._closed:
            return
        self._post(CLOSE, str(spill_dir) if spill_dir is not None else None)
        try:
            failure, fault = self._reply()
        finally:
            self._gone()
        if failure is not None:
            message, path = failure
            raise StorageError(message, spill_path=Path(path) if path is not None else None)
        if fault is not None:
            raise StorageError(f"the writer process failed: {fault}")

    def _post(self, kind: int, arg: Any = None) -> None:
        if self._starting:  # the child's next reply is the run's id: read it first
            self.run_started()
        rows = {name: r for name, r in self._buffers.items() if r}
        updates, self._run_updates = self._run_updates, []
        marshalled, data = pack_rows(rows) if rows else (True, b"")
        for r in rows.values():
            r.clear()  # in place: the appenders hold these lists
        self._send(kind, arg, data, marshalled=marshalled, updates=updates)

    def _send(self, kind: int, arg: Any, data: bytes = b"", *, marshalled: bool = True,
              updates: list[dict[str, Any]] | None = None) -> None:
        try:
            with signals_held():  # (sent whole, and counted as owing a reply)
                send(self.writer.to_child, (kind, marshalled, updates or [], arg), data)
                self._owed += kind in (FLUSH, CLOSE)
        except OSError as exc:  # the child is gone: what it held is lost with it, say so
            self._deleted = last_words(self.writer.from_child)  # (its run deleted: it said so, then ended)
            self._gone()
            if self._deleted is not None:
                raise self._deleted from None
            raise StorageError(f"the writer process of {self.url} exited early ({exc}); "
                               "rows sent to it may be missing") from exc

    def _reply(self) -> tuple[Any, Any]:
        """The reply to the last FLUSH or CLOSE sent, after any earlier one a Ctrl-C left unread (its state kept)."""
        while True:
            with signals_held():
                message = receive(self.writer.from_child)
                self._owed -= message is not None
            if message is None:
                self._gone()
                raise StorageError("the writer process exited without replying; rows sent to it may be missing")
            (result, state), _ = message
            if state.get("deleted") is not None:  # its run deleted while being written: the child has ended
                self._deleted = state["deleted"]
                self._gone()
                raise state["deleted"]
            self.errors, self.num_flush_failures = state["errors"], state["num_flush_failures"]
            self.retries, self.written, self.refused = state["retries"], state["written"], state["refused"]
            if self._owed <= 0:
                return result, state["fault"]

    def abandon(self) -> None:
        """End the writer process before the run started (the run's set-up failed): after its
        reply to :meth:`begin_run`, if that was sent (the row is in; the child then exits quietly)."""
        if self._starting:
            try:
                self.run_started()
            except Exception:  # noqa: BLE001 - the set-up's own error is the one raised
                pass
        self._gone()

    def _gone(self) -> None:
        self._closed = True
        self.writer.discard()

    def _run(self) -> int:
        if self._closed:
            self._check_open()
        return self.run_id if self.run_id is not None else self.run_started()

    def _check_open(self) -> None:
        if self._deleted is not None:  # (the run's end, after the error stopped it: the same error)
            raise self._deleted
        if self._closed:
            raise StorageError("recorder is closed")
