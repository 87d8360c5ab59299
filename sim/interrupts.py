"""Ctrl-C (or SIGTERM) during a simulated replay: a first one stops the run cleanly at its next tick, a second at
once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from controlplane.sigterm import (TermSeen, handlers_kept, noted, sigterm_as_ctrl_c, sigterm_cancels, sigterm_is_taken,
                                  sigterm_stops)

if TYPE_CHECKING:
    from sim.driver import SimDriver

__all__ = ["CtrlC", "TermSeen", "ctrl_c_handled_by", "ctrl_c_signals", "dropping_one", "exit_status",
           "handlers_kept", "hold_until_exit", "noted", "sigterm_as_ctrl_c", "sigterm_cancels", "sigterm_stops",
           "stop_on_ctrl_c", "stopped_at", "stopping_signals"]


class CtrlC:
    """What a signal does to a replay (`stop_on_ctrl_c`): while it runs (`run`), a first one asks the driver to stop
    at its next tick, a second raises ``KeyboardInterrupt`` at once, mid-event, where it lands in the event loop.
    Once the loop has ended on a stop (`SimDriver.stop_requested`, or `stopping` set: a mid-event interrupt), the
    run's end (its summary, `ControlPlane.finish`) and close (its rows written, its end marked) run with one further
    signal dropped and the next raising at once: a second Ctrl-C
    landing in the write cut it in two (a SQLite statement left holding the database's lock, the writer process's
    pipe read out of step), and the run was left ``running`` (``crashed``). A signal after a loop that ended on
    its own goes to the handler Python had (a ``KeyboardInterrupt``; SIGTERM ends the process, but in a
    `sigterm_as_ctrl_c` block, where it raises ``KeyboardInterrupt`` too)."""

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
        noted(signum)
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
    handler (SIGINT's KeyboardInterrupt, SIGTERM's default, or `sigterm_as_ctrl_c`'s): a caller's is left alone."""
    signals = stopping_signals()  # (a caller's handler is left alone)
    ctrl_c = CtrlC(driver, {sig: signal.getsignal(sig) for sig in signals})
    for sig in signals:
        signal.signal(sig, ctrl_c.on_signal)
    try:
        yield ctrl_c
    finally:
        for sig, previous in ctrl_c.handlers.items():
            signal.signal(sig, previous)


def exit_status(exc: BaseException) -> int:
    """The exit status of a command a signal stopped: 143 (128 + SIGTERM, as a process SIGTERM ended) where
    SIGTERM did (the exception's ``interrupted_by``, `sigterm_as_ctrl_c`, or its run's summary's), else 130 (Ctrl-C)."""
    by = getattr(exc, "interrupted_by", None) or (getattr(exc, "summary", None) or {}).get("interrupted_by")
    return 128 + signal.SIGTERM if by == "SIGTERM" else 128 + signal.SIGINT


def ctrl_c_signals() -> list[int]:
    """The signals that stop this process as Ctrl-C does, under Python's own handling: SIGINT with its
    ``KeyboardInterrupt``, and SIGTERM in a `sigterm_as_ctrl_c` block; none outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return []
    return ([signal.SIGINT] if signal.getsignal(signal.SIGINT) is signal.default_int_handler else []) + (
        [signal.SIGTERM] if sigterm_is_taken() else [])


def stopping_signals() -> list[int]:
    """The signals that stop a replay (`stop_on_ctrl_c`), and a command as it exits after one (`hold_until_exit`):
    the `ctrl_c_signals`, and SIGTERM (what `timeout`, `kill`, a container runtime or a batch scheduler send) where
    it has its default handler."""
    signals = ctrl_c_signals()
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signals.append(signal.SIGTERM)
    return signals


@contextmanager
def ctrl_c_handled_by(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Within it, the `ctrl_c_signals` go to ``handler`` (which calls `noted`); their handlers are put back after."""
    taken = {sig: signal.signal(sig, handler) for sig in ctrl_c_signals()}
    try:
        yield
    finally:
        for sig, previous in taken.items():
            signal.signal(sig, previous)


def dropping_one() -> Callable[[int, Any], None]:
    """A handler that drops the first signal and raises ``KeyboardInterrupt`` on the next (the user insists)."""
    dropped: list[int] = []

    def drop(signum: int, frame: Any) -> None:
        noted(signum)
        if dropped:
            raise KeyboardInterrupt
        dropped.append(signum)

    return drop


def hold_until_exit() -> None:
    """For a command exiting after a Ctrl-C or SIGTERM (``sim replay``, ``sim sweep``/``search`` as
    ``sim.sweep.interrupt.hold_interrupts_until_exit``): drop one further Ctrl-C or SIGTERM from now on (the
    next raises ``KeyboardInterrupt`` at once), so that what it prints and its cleanup are not cut into a traceback
    nor ended by SIGTERM. Nothing changes outside the main thread, nor for a signal under a handler of a caller's."""
    drop = dropping_one()
    for sig in stopping_signals():
        signal.signal(sig, drop)


def stopped_at(driver: SimDriver, now_s: float) -> dict[str, Any]:
    """What a run's summary says of where and why it stopped: ``interrupted_at_s`` (the simulated second) and
    ``interrupted_by``, the signal's name (``SIGINT``: Ctrl-C; ``SIGTERM``), where a signal stopped it."""
    out: dict[str, Any] = {"interrupted_at_s": round(now_s, 6)}
    how = driver.stop_requested
    if isinstance(how, int) and not isinstance(how, bool):
        out["interrupted_by"] = signal.Signals(how).name
    return out
