"""A run recorder whose database writes happen in a forked writer process.

A replay spends about a sixth of its event loop inside SQLite (binding values and storing
rows: ~5 µs a row, three to five rows a request). Those writes cannot overlap the simulation
in a thread: the sqlite3 driver holds the GIL while it binds values, and gives it back only for
each statement step. :class:`ProcessRecorder` therefore hands each full buffer to a child
process, forked at the first automatic flush (runs too short to fill one buffer never fork),
which writes it with the unchanged :class:`~controlplane.storage.recorder.RunRecorder` code
while the simulation goes on: same chunks, same transactions, same order, same retries,
spills and writer marks, since the child is the recorder (a copy of it, forked), doing in
the same order what it would have done inline.

The parent sends each buffer as one message on a pipe (rows as ``marshal`` bytes: under 1 µs a
row, against ~5 µs to store it). :meth:`flush` (and :meth:`finish_run`, which flushes) waits
for the child to have written everything sent so far and returns its result;
:meth:`close` waits for the child's close and raises the same ``StorageError`` (message and
``spill_path``) that an inline close would have raised. Failures the child noted
(``errors``, ``num_flush_failures``, ``retries``) and the rows it wrote (``written``) are
copied back at each of those waits; between them the parent's ``pending`` counts only
what it has not sent yet. If the parent dies without closing, the child sees the pipe close
and closes the recorder itself: its rows are written, or spilled where an inline close would
spill them.

Only where a child can reach the same database (not an in-memory SQLite database, which
would be the child's own copy), only on Linux (``os.fork``) and only with a second CPU to run
it on (the writer adds ~1 µs a row of its own: marshal, pipe, copy-on-write pages);
``CONTROLPLANE_WRITER_PROCESS=0`` turns it off. See :func:`writer_process_usable`.
"""

from __future__ import annotations

import gc
import logging
import marshal
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine

from controlplane.storage.db import sqlite_path
from controlplane.storage.errors import StorageError
from controlplane.storage.recorder import RunRecorder
from controlplane.storage.rows import SPECS

__all__ = ["ENV_SWITCH", "ProcessRecorder", "writer_process_usable"]

log = logging.getLogger("controlplane.storage.recorder")

#: Environment variable: ``0`` keeps every write in the replaying process.
ENV_SWITCH: Final = "CONTROLPLANE_WRITER_PROCESS"

_ROWS: Final = 0  # write these rows (one automatic flush)
_FLUSH: Final = 1  # write these rows and everything before, then reply
_CLOSE: Final = 2  # close the recorder, reply, exit
_HEADER: Final = struct.Struct("!QQ")  # lengths of the pickled control part and of the rows
_INBOX: Final = 4  # messages read ahead by the writer process


def writer_process_usable(engine: Engine) -> bool:
    """Whether a forked child can write to ``engine``'s database, and gains from it: os.fork on
    Linux, two CPUs or more for this process, not an in-memory SQLite database, and not turned
    off with ``CONTROLPLANE_WRITER_PROCESS=0``."""
    if os.environ.get(ENV_SWITCH, "1").strip() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    if len(os.sched_getaffinity(0)) < 2:  # no core for the writer: it would only add its own cost
        return False
    return engine.url.get_backend_name() != "sqlite" or sqlite_path(engine) is not None


def _send(fd: int, control: Any, rows: bytes = b"") -> None:
    """One message: a small pickled control part, then the rows' bytes as they are."""
    data = pickle.dumps(control, protocol=pickle.HIGHEST_PROTOCOL)
    for part in (_HEADER.pack(len(data), len(rows)), data, rows):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def _widen(fd: int) -> None:
    """Give a pipe the largest buffer Linux allows an unprivileged process (1 MiB by default):
    a buffer of rows then crosses in a few writes, not one per 64 KiB."""
    try:
        import fcntl

        with open("/proc/sys/fs/pipe-max-size") as f:
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), int(f.read()))
    except (OSError, ValueError):
        pass  # the default buffer works, in more steps


def _read_exactly(fd: int, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        part = os.read(fd, min(left, 1 << 20))
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _receive(fd: int) -> tuple[Any, bytes] | None:
    """The next message (control part, rows' bytes), or None when the other side has closed the pipe."""
    head = _read_exactly(fd, _HEADER.size)
    if head is None:
        return None
    n_control, n_rows = _HEADER.unpack(head)
    data = _read_exactly(fd, n_control)
    rows = _read_exactly(fd, n_rows) if n_rows else b""
    return None if data is None or rows is None else (pickle.loads(data), rows)


def _read_into(fd: int, inbox: queue.Queue[Any]) -> None:
    while True:
        message = _receive(fd)
        inbox.put(message)
        if message is None or message[0][0] == _CLOSE:
            return


def _pack_rows(rows: dict[str, list[tuple]]) -> tuple[bool, bytes]:
    """(marshalled, bytes): marshal for plain values (what ``RowSpec.pack`` makes), else pickle."""
    try:
        return True, marshal.dumps(rows)
    except ValueError:  # a value marshal cannot hold: pickle keeps its type
        return False, pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack_rows(marshalled: bool, data: bytes) -> dict[str, list[tuple]]:
    return marshal.loads(data) if marshalled else pickle.loads(data)


class ProcessRecorder(RunRecorder):
    """A :class:`RunRecorder` whose flushes run in a forked child; see the module docstring.

    For one replaying thread: not for ``background=True`` (the daemon has its writer thread).
    """

    def __init__(self, engine: Engine, **kwargs: Any) -> None:
        if kwargs.get("background"):
            raise ValueError("ProcessRecorder writes in a child process; background=True is the thread writer")
        super().__init__(engine, **kwargs)
        self._child: int | None = None  # the writer's pid while it runs
        self._to_child = -1
        self._from_child = -1
        self._fault: str | None = None  # the child's last unexpected error (not a database failure)

    # -- the replaying process ------------------------------------------------

    def start_run(self, **kwargs: Any) -> int:
        if self._child is not None:
            raise StorageError("ProcessRecorder: start_run after its writer process started")
        return super().start_run(**kwargs)

    def replay_spill(self, path: str | Path) -> int:
        if self._child is not None:
            raise StorageError("ProcessRecorder: replay_spill after its writer process started")
        return super().replay_spill(path)

    def _flush_due(self) -> None:
        if self._child is None and not self._fork():
            super().flush()  # no child (fork failed): write here, as a RunRecorder does
            return
        self._post(_ROWS)

    def flush(self) -> bool:
        if self._child is None:
            return super().flush()
        self._post(_FLUSH)
        ok, _ = self._reply()
        return bool(ok)

    def close(self, *, spill_dir: str | Path | None = None) -> None:
        if self._child is None:
            super().close(spill_dir=spill_dir)
            return
        self._post(_CLOSE, str(spill_dir) if spill_dir is not None else None)
        failure, fault = None, None
        try:
            failure, fault = self._reply()
        finally:
            self._reap()
            self._closed = True
        if failure is not None:
            message, path = failure
            raise StorageError(message, spill_path=Path(path) if path is not None else None)
        if fault is not None:
            raise StorageError(f"the writer process failed: {fault}")

    def _take_rows(self) -> tuple[dict[str, list[tuple]], list[dict[str, Any]]]:
        with self._lock:
            rows, updates = self._buffers, self._run_updates
            self._buffers = {name: [] for name in SPECS}
            self._run_updates = []
        return {name: r for name, r in rows.items() if r}, updates

    def _post(self, kind: int, arg: Any = None) -> None:
        rows, updates = self._take_rows()
        try:
            marshalled, data = _pack_rows(rows) if rows else (True, b"")
            _send(self._to_child, (kind, marshalled, updates, arg), data)
        except OSError as exc:  # the child is gone: what it held is lost with it, say so
            self._reap()
            self._closed = True
            raise StorageError(f"the writer process of {self.engine.url.render_as_string(hide_password=True)} "
                               f"exited early ({exc}); rows sent to it may be missing") from exc

    def _reply(self) -> tuple[Any, Any]:
        message = _receive(self._from_child)
        if message is None:
            self._reap()
            self._closed = True
            raise StorageError("the writer process exited without replying; rows sent to it may be missing")
        (result, state), _ = message
        self.errors = state["errors"]
        self.num_flush_failures = state["num_flush_failures"]
        self.retries = state["retries"]
        self.written = state["written"]
        return result, state["fault"]

    def _reap(self) -> None:
        pid, self._child = self._child, None
        for fd in (self._to_child, self._from_child):
            if fd >= 0:
                os.close(fd)
        self._to_child = self._from_child = -1
        if pid is not None:
            os.waitpid(pid, 0)

    def _fork(self) -> bool:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        _widen(to_child_w)
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of fork() in a process with threads (numpy's BLAS pool): the
                # child runs only this recorder, SQLite and the pipe, none of which those hold.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError as exc:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            log.warning("storage: could not fork a writer process (%s); writing in this one", exc)
            return False
        if pid == 0:  # the child: serve, then leave without running the parent's exit handlers
            code = 0
            try:
                os.close(to_child_w)
                os.close(from_child_r)
                self._serve(to_child_r, from_child_w)
            except BaseException:  # noqa: BLE001 - reported on stderr; the parent sees the pipe close
                log.exception("storage: the writer process failed")
                code = 1
            finally:
                os._exit(code)
        os.close(to_child_r)
        os.close(from_child_w)
        self._child, self._to_child, self._from_child = pid, to_child_w, from_child_r
        return True

    # -- the writer process -----------------------------------------------------

    def _serve(self, rfd: int, wfd: int) -> None:
        """Write what the parent sends, in order, with the inline recorder's own flush and close."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes us
        gc.freeze()  # the parent's objects, shared copy-on-write: the collector need not walk them
        self.engine.dispose(close=False)  # the parent's pooled connections stay the parent's
        self._buffers = {name: [] for name in SPECS}  # forked with the parent's: it sends them
        self._run_updates = []
        # A thread reads the pipe while this one writes to the database, so the parent's sends
        # do not wait for a write; a few messages at most, then the pipe holds the parent back.
        inbox: queue.Queue[Any] = queue.Queue(maxsize=_INBOX)
        threading.Thread(target=_read_into, args=(rfd, inbox), name="cp-writer-inbox", daemon=True).start()
        while True:
            message = inbox.get()
            if message is None:  # the parent is gone without closing: close for it
                self._close_here(None)
                return
            (kind, marshalled, updates, arg), data = message
            with self._lock:
                if data:
                    for name, table_rows in _unpack_rows(marshalled, data).items():
                        self._buffers[name].extend(table_rows)
                self._run_updates.extend(updates)
            if kind == _ROWS:
                try:
                    RunRecorder.flush(self)
                except Exception as exc:  # as the thread writer: rows stay pending, close reports them
                    log.exception("storage: flush in the writer process failed")
                    self._fault = f"{type(exc).__name__}: {exc}"
            elif kind == _FLUSH:
                try:
                    ok = RunRecorder.flush(self)
                except Exception as exc:
                    log.exception("storage: flush in the writer process failed")
                    self._fault, ok = f"{type(exc).__name__}: {exc}", False
                _send(wfd, (ok, self._state()))
            else:
                _send(wfd, (self._close_here(arg), self._state()))
                return

    def _close_here(self, spill_dir: str | None) -> tuple[str, str | None] | None:
        try:
            RunRecorder.close(self, spill_dir=spill_dir)
        except StorageError as exc:
            return str(exc), str(exc.spill_path) if exc.spill_path is not None else None
        except Exception as exc:
            log.exception("storage: close in the writer process failed")
            self._fault = f"{type(exc).__name__}: {exc}"
        return None

    def _state(self) -> dict[str, Any]:
        return {"errors": self.errors, "num_flush_failures": self.num_flush_failures, "retries": self.retries,
                "written": self.written, "fault": self._fault}
