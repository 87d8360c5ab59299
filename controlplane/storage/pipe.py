"""The writer process's pipe protocol: length-prefixed messages of a pickled control part
and rows as ``marshal`` bytes. Plain standard library (no SQLAlchemy), so the replaying
process can speak it without importing the database side."""

from __future__ import annotations

import marshal
import os
import pickle
import struct
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # the writer process's inbox; the replaying process needs no queue
    import queue

ROWS: Final = 0  # write these rows (one automatic flush)
FLUSH: Final = 1  # write these rows and everything before, then reply
CLOSE: Final = 2  # close the recorder, reply, exit
HEADER: Final = struct.Struct("!QQ")  # lengths of the pickled control part and of the rows
CONFIG: Final = 3  # (a writer started early) the database and the recorder's settings
START: Final = 4  # (a writer started early) start the run, reply with its id or the error
INBOX: Final = 4  # messages read ahead by the writer process


def send(fd: int, control: Any, rows: bytes = b"") -> None:
    """One message: a small pickled control part, then the rows' bytes as they are."""
    data = pickle.dumps(control, protocol=pickle.HIGHEST_PROTOCOL)
    for part in (HEADER.pack(len(data), len(rows)), data, rows):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def widen(fd: int) -> None:
    """Give a pipe the largest buffer Linux allows an unprivileged process (1 MiB by default):
    a buffer of rows then crosses in a few writes, not one per 64 KiB."""
    try:
        import fcntl

        with open("/proc/sys/fs/pipe-max-size") as f:
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), int(f.read()))
    except (OSError, ValueError):
        pass  # the default buffer works, in more steps


def read_exactly(fd: int, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        part = os.read(fd, min(left, 1 << 20))
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def receive(fd: int) -> tuple[Any, bytes] | None:
    """The next message (control part, rows' bytes), or None when the other side has closed the pipe."""
    head = read_exactly(fd, HEADER.size)
    if head is None:
        return None
    n_control, n_rows = HEADER.unpack(head)
    data = read_exactly(fd, n_control)
    rows = read_exactly(fd, n_rows) if n_rows else b""
    return None if data is None or rows is None else (pickle.loads(data), rows)


def last_words(fd: int) -> BaseException | None:
    """What a writer process that ended by itself (the parent's send to it failed) said last: its run deleted
    while being written (the ``deleted`` of its state, `controlplane.storage.deleted_runs`), else None."""
    try:
        message = receive(fd)
    except OSError:
        return None
    state = message[0][1] if message is not None else None
    return state.get("deleted") if isinstance(state, dict) else None


def read_into(fd: int, inbox: queue.Queue[Any]) -> None:
    while True:
        message = receive(fd)
        inbox.put(message)
        if message is None or message[0][0] == CLOSE:
            return


def pack_rows(rows: dict[str, list[tuple]]) -> tuple[bool, bytes]:
    """(marshalled, bytes): marshal for plain values (what ``RowSpec.pack`` makes), else pickle."""
    try:
        return True, marshal.dumps(rows)
    except ValueError:  # a value marshal cannot hold: pickle keeps its type
        return False, pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_rows(marshalled: bool, data: bytes) -> dict[str, list[tuple]]:
    return marshal.loads(data) if marshalled else pickle.loads(data)


