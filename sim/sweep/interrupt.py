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

SIGTERM does the same as Ctrl-C in a sweep's or a search's driver (`sim.interrupts.sigterm_as_ctrl_c`), even
where SIGINT is ignored (a script's background job); the command then exits 143, not 130.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sim.interrupts import ctrl_c_handled_by, dropping_one, noted
from sim.interrupts import hold_until_exit as hold_interrupts_until_exit  # (one rule for every command)

__all__ = ["hold_interrupts_until_exit", "interrupt_deferred", "interrupts_held_while_stopping"]


@contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Run the block with Ctrl-C (SIGINT, and SIGTERM in a `sim.interrupts.sigterm_as_ctrl_c` block) held: raise
    ``KeyboardInterrupt`` when it ends if one came meanwhile. A second one during the block raises at once (the
    user insists). Outside the main thread, or where SIGINT has a handler other than Python's default (and SIGTERM
    is not taken as Ctrl-C), nothing changes."""
    caught: list[int] = []

    def hold(signum: int, frame: object) -> None:
        noted(signum)
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)

    with ctrl_c_handled_by(hold):
        yield
    if caught:
        raise KeyboardInterrupt


@contextmanager
def interrupts_held_while_stopping() -> Iterator[None]:
    """Run a stopped sweep's cleanup with a further Ctrl-C (or SIGTERM, as `interrupt_deferred`) dropped (a second
    one raises at once); the handlers are put back when it ends. Outside the main thread, or where SIGINT has a
    handler other than Python's default, nothing changes."""
    with ctrl_c_handled_by(dropping_one()):
        yield
