"""Ctrl-C during a simulated replay: a first one stops the run cleanly at its next tick, a second at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sim.driver import SimDriver

__all__ = ["stop_on_ctrl_c"]


@contextmanager
def stop_on_ctrl_c(driver: SimDriver) -> Iterator[None]:
    """While the driver runs, a first Ctrl-C (SIGINT) asks it to stop at its next tick
    (`SimDriver.stop_requested`): the run ends as at ``--until``, its requests in flight recorded
    as such and its summary whole, and the replay raises `ReplayInterrupted` with that summary. A
    second Ctrl-C interrupts at once, mid-event (`SimDriver.run` still stores the requests in the system as in
    flight, and `sim.replay` closes the run with their summary). Only in
    the main thread and where SIGINT has Python's own handler (a caller's handler is left alone)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if driver.stop_requested:
            raise KeyboardInterrupt
        driver.stop_requested = True

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
