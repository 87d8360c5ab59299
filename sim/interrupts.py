"""Ctrl-C (or SIGTERM) during a simulated replay: a first one stops the run cleanly at its next tick, a second at
once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.driver import SimDriver

__all__ = ["CtrlC", "hold_until_exit", "stop_on_ctrl_c", "stopped_at"]

#: The signals that stop a replay: Ctrl-C, and what `timeout`, `kill`, a container runtime or a batch scheduler send.
STOPPING = (signal.SIGINT, signal.SIGTERM)


class CtrlC:
    """What a signal does to a replay (`stop_on_ctrl_c`): while it runs (`run`), a first one asks the driver to stop
    at its next tick, a second raises ``KeyboardInterrupt`` at once, mid-event, where it lands in the event loop.
    Once the loop has ended on a stop (`SimDriver.stop_requested`, or `stopping` set: a mid-event interrupt), the
    run's end (its summary, `ControlPlane.finish`) and close (its rows written, its end marked) run with one further
    signal dropped and the next raising at once: a second Ctrl-C
    landing in the write cut it in two (a SQLite statement left holding the database's lock, the writer process's
    pipe read out of step), and the run was left ``running`` (``crashed``). A signal after a loop that ended on
    its own goes to the handler Python had (a ``KeyboardInterrupt``; SIGTERM ends the process)."""

    def __init__(self, driver: SimDriver, handlers: dict[int, Any]) -> None:
        self.driver, self.handlers = driver, handlers
        self.looping = False
        self.stopping = False  # (the close of a run a mid-event interrupt stopped)
        self.dropped: int | None = None  # the signal dropped during the close

    def run(self, trace: Any) -> dict[str, Any]:
        """``driver.run(trace)``, its loop marked as running for the handler."""
        self.looping = True
        try:
            return self.driver.run(trace)
        finally:
            self.looping = False

    def on_signal(self, signum: int, frame: Any) -> None:
        driver = self.driver
        if self.looping and not driver.stop_requested:
            driver.stop_requested = signum  # (truthy: the signal's number, for `stopped_at`)
        elif self.looping and _in_event_loop(frame):  # (not in the run's end, `core.finish`: its summary kept)
            raise KeyboardInterrupt
        elif driver.stop_requested or self.stopping:  # the stopped run's end and close
            if self.dropped is not None:
                raise KeyboardInterrupt  # (the user insists)
            self.dropped = signum
        else:  # the run ended on its own: as before the replay
            signal.signal(signum, self.handlers[signum])
            signal.raise_signal(signum)


def _in_event_loop(frame: Any) -> bool:
    """Whether ``frame`` runs inside the simulation's event loop (`sim.driver.run_until`, SimPy's own ``run``),
    where `SimDriver.run` catches a ``KeyboardInterrupt`` and stores the requests in the system as in flight."""
    import simpy

    from sim.driver import run_until

    loops = (run_until.__code__, simpy.Environment.run.__code__)
    while frame is not None:
        if frame.f_code in loops:
            return True
        frame = frame.f_back
    return False


@contextmanager
def stop_on_ctrl_c(driver: SimDriver) -> Iterator[CtrlC]:
    """While the block runs the driver (`CtrlC.run`) and closes its run, a first Ctrl-C (SIGINT), or SIGTERM, asks
    it to stop at its next tick (`SimDriver.stop_requested`): the run ends as at ``--until``, its requests in flight
    recorded as such and its summary whole, and the replay raises `ReplayInterrupted` with that summary. A
    second Ctrl-C interrupts at once, mid-event (`SimDriver.run` still stores the requests in the system as in
    flight, and `sim.replay` closes the run with their summary). During the close of a stopped run one further
    signal is dropped (`CtrlC`). Only in the main thread, and for each signal only where it has Python's own
    handler (SIGINT's KeyboardInterrupt, SIGTERM's default): a caller's is left alone."""
    ours = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    ctrl_c = CtrlC(driver, ours)
    if threading.current_thread() is not threading.main_thread():
        yield ctrl_c
        return
    taken = [sig for sig in STOPPING if signal.getsignal(sig) is ours[sig]]  # (a caller's handler is left alone)
    for sig in taken:
        signal.signal(sig, ctrl_c.on_signal)
    try:
        yield ctrl_c
    finally:
        for sig in taken:
            signal.signal(sig, ours[sig])


def hold_until_exit() -> None:
    """For a command exiting after a Ctrl-C (``sim replay``, ``sim sweep``/``search`` as
    ``sim.sweep.interrupt.hold_interrupts_until_exit``): drop one further Ctrl-C from now on (the next raises at
    once), so that what it prints and its cleanup are not cut into a traceback. Nothing changes outside the main
    thread or under a handler other than Python's own."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        return
    dropped: list[int] = []

    def drop(signum: int, frame: Any) -> None:
        if dropped:
            raise KeyboardInterrupt
        dropped.append(signum)

    signal.signal(signal.SIGINT, drop)


def stopped_at(driver: SimDriver, now_s: float) -> dict[str, Any]:
    """What a run's summary says of where and why it stopped: ``interrupted_at_s`` (the simulated second) and
    ``interrupted_by``, the signal's name (``SIGINT``: Ctrl-C; ``SIGTERM``), where a signal stopped it."""
    out: dict[str, Any] = {"interrupted_at_s": round(now_s, 6)}
    how = driver.stop_requested
    if isinstance(how, int) and not isinstance(how, bool):
        out["interrupted_by"] = signal.Signals(how).name
    return out
