"""Ctrl-C held back while a sweep's driver writes a run, so that the write is never cut in two.

A ``KeyboardInterrupt`` raised inside SQLite's ``executemany`` leaves the interrupted statement
alive (its cursor is held by the traceback) with the database's write lock: every later write of
the process then waits and fails with ``database is locked``, so the sweep could be marked
neither ``interrupted`` nor anything else, and the rows of the run being written were spilled to
a file. Writing one run takes a second or so; Ctrl-C then takes effect as soon as it is written.

Once Ctrl-C has stopped a sweep or a search, its cleanup (workers stopped, the sweep row marked,
the database let go) and the command's exit run with a further Ctrl-C dropped
(`interrupts_held_while_stopping`, `hold_interrupts_until_exit`): one Ctrl-C reaches the driver
twice from a terminal's process group and a script's own signal, and landing in that cleanup it
printed a traceback from inside it (a connection being closed) and replaced the message on what
was stored. A second further Ctrl-C still stops at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sim.interrupts import hold_until_exit as hold_interrupts_until_exit  # (one rule for every command)

__all__ = ["hold_interrupts_until_exit", "interrupt_deferred", "interrupts_held_while_stopping"]


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


def _default_handler_in_main_thread() -> bool:
    return (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)


def _drop_one() -> object:
    """A SIGINT handler that drops the first Ctrl-C and raises ``KeyboardInterrupt`` on the next."""
    dropped: list[int] = []

    def drop(signum: int, frame: object) -> None:
        if dropped:
            raise KeyboardInterrupt
        dropped.append(signum)

    return drop


@contextmanager
def interrupts_held_while_stopping() -> Iterator[None]:
    """Run a stopped sweep's cleanup with a further Ctrl-C dropped (a second one raises at once);
    the handler is put back when it ends. Outside the main thread, or where SIGINT has a handler
    other than Python's default, nothing changes."""
    if not _default_handler_in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _drop_one())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
