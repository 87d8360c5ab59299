"""Ctrl-C (SIGINT) and SIGTERM held while one message crosses the writer process's pipe.

A ``KeyboardInterrupt`` raised in the middle of :func:`controlplane.storage.pipe.send` or
:func:`~controlplane.storage.pipe.receive` cuts a message in two: the rest of the pipe is then read
out of step (a flush's reply taken for the close's: ``TypeError: cannot unpack non-iterable bool
object``), or the writer process reads garbage. :func:`signals_held` lets the message cross whole,
then gives each signal that came meanwhile to the handler that was there before (Python's own
raises ``KeyboardInterrupt``; a replay's stops it at its next tick, `sim.interrupts`). Standard
library only: the replaying process imports it without the database side.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["signals_held"]

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held() -> Iterator[None]:
    """Run the block with SIGINT and SIGTERM held where their handlers are Python functions (Python's
    ``KeyboardInterrupt``, a program's own): when it ends, each that came is given to that handler, in
    order. Outside the main thread, or for a signal whose handler is the system's (``SIG_DFL``, ``SIG_IGN``),
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in HELD}
    taken = [sig for sig, handler in previous.items() if callable(handler)]
    for sig in taken:
        signal.signal(sig, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        for sig in taken:
            signal.signal(sig, previous[sig])
        for signum in came:  # (Python's own handler raises KeyboardInterrupt here, after the message)
            previous[signum](signum, None)  # type: ignore[operator]
