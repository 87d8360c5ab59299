"""Ctrl-C (or SIGTERM) during a simulated replay: a first one stops the run cleanly at its next tick, a second at
once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sim.driver import SimDriver

__all__ = ["stop_on_ctrl_c", "stopped_at"]

#: The signals that stop a replay: Ctrl-C, and what `timeout`, `kill`, a container runtime or a batch scheduler send.
STOPPING = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_ctrl_c(driver: SimDriver) -> Iterator[None]:
    """While the driver runs, a first Ctrl-C (SIGINT), or SIGTERM, asks it to stop at its next tick
    (`SimDriver.stop_requested`): the run ends as at ``--until``, its requests in flight recorded
    as such and its summary whole, and the replay raises `ReplayInterrupted` with that summary. A
    second Ctrl-C interrupts at once, mid-event (`SimDriver.run` still stores the requests in the system as in
    flight, and `sim.replay` closes the run with their summary). Only in the main thread, and for each signal only
    where it has Python's own handler (SIGINT's KeyboardInterrupt, SIGTERM's default): a caller's is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    taken = [sig for sig in STOPPING if signal.getsignal(sig) is ours[sig]]  # (a caller's handler is left alone)

    def on_signal(signum: int, frame: Any) -> None:
        if driver.stop_requested:
            raise KeyboardInterrupt
        driver.stop_requested = signum  # (truthy: the signal's number, for `stopped_at`)

    for sig in taken:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig in taken:
            signal.signal(sig, ours[sig])


def stopped_at(driver: SimDriver, now_s: float) -> dict[str, Any]:
    """What a run's summary says of where and why it stopped: ``interrupted_at_s`` (the simulated second) and
    ``interrupted_by``, the signal's name (``SIGINT``: Ctrl-C; ``SIGTERM``), where a signal stopped it."""
    out: dict[str, Any] = {"interrupted_at_s": round(now_s, 6)}
    how = driver.stop_requested
    if isinstance(how, int) and not isinstance(how, bool):
        out["interrupted_by"] = signal.Signals(how).name
    return out
