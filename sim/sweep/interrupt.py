"""Ctrl-C held back while a sweep's driver writes a run, so that the write is never cut in two.

A ``KeyboardInterrupt`` raised inside SQLite's ``executemany`` leaves the interrupted statement
alive (its cursor is held by the traceback) with the database's write lock: every later write of
the process then waits and fails with ``database is locked``, so the sweep could be marked
neither ``interrupted`` nor anything else, and the rows of the run being written were spilled to
a file. Writing one run takes a second or so; Ctrl-C then takes effect as soon as it is written.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["interrupt_deferred"]


@contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Run the block with Ctrl-C (SIGINT) held: raise ``KeyboardInterrupt`` when it ends if one
    came meanwhile. A second Ctrl-C during the block raises at once (the user insists). Outside
    the main thread, or where SIGINT has a handler other than Python's default, nothing changes."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: object) -> None:
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
