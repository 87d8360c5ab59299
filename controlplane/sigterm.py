"""SIGTERM (`timeout`, `kill`, a container runtime, a batch scheduler) taken as Ctrl-C while a block runs: a sweep's
or a search's driver (`sim.sweep`) and a live replay (`controlplane.live.trace_replay`) stop on it as on Ctrl-C.
Standard library only; `sim.interrupts` (a replay's Ctrl-C) builds on it."""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["TermSeen", "handlers_kept", "noted", "sigterm_as_ctrl_c", "sigterm_cancels", "sigterm_is_taken", "sigterm_stops"]


class TermSeen:
    """What `sigterm_as_ctrl_c` yields: ``received`` once a SIGTERM came; ``taken``: whether the block took SIGTERM
    (not outside the main thread, nor from a handler of the caller's)."""

    def __init__(self, taken: bool = False) -> None:
        self.taken, self.received = taken, False

    @property
    def name(self) -> str:
        """The signal that stopped the block, if one did: ``SIGTERM``, else ``SIGINT`` (Ctrl-C)."""
        return "SIGTERM" if self.received else "SIGINT"


_seen: TermSeen | None = None  # the `sigterm_as_ctrl_c` block running now, if one took SIGTERM


def _sigterm_interrupts(signum: int, frame: Any) -> None:
    """SIGTERM's handler in a `sigterm_as_ctrl_c` block: Python's Ctrl-C (``signal.default_int_handler``)."""
    noted(signum)
    raise KeyboardInterrupt


def noted(signum: int) -> None:
    """Tell the `sigterm_as_ctrl_c` block running now that ``signum`` came: each handler that takes its SIGTERM
    (a hold, a drop, a replay's stop) calls it."""
    if signum == signal.SIGTERM and _seen is not None:
        _seen.received = True


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[TermSeen]:
    """While the block runs, SIGTERM (`timeout`, `kill`, a container runtime, a batch scheduler) is handled as
    Ctrl-C: ``KeyboardInterrupt``, and it is one of the `ctrl_c_signals` that what holds or drops a Ctrl-C takes
    (a run being written, a stopped sweep's cleanup: `sim.sweep.interrupt`; a replay's stop: `stop_on_ctrl_c`).
    So a sweep's or a search's driver, and a live replay (whose event loop cancels its task on it:
    `controlplane.live.trace_replay`), stop on SIGTERM cleanly, as on Ctrl-C: it ended them at once, their
    run or sweep left ``running`` (then ``crashed``). SIGTERM is taken as Ctrl-C even where SIGINT is ignored
    (a script's background job). The yielded `TermSeen` says whether a SIGTERM came, as does the
    ``interrupted_by`` given to a ``KeyboardInterrupt`` that leaves the block (``SIGTERM``, else ``SIGINT``), for
    `exit_status`: the command then exits 143. Only in the main thread, and where SIGTERM has its default
    handler (a block inside another shares its `TermSeen`)."""
    global _seen
    if _seen is not None:
        yield _seen
        return
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield TermSeen()
        return
    seen = _seen = TermSeen(taken=True)
    signal.signal(signal.SIGTERM, _sigterm_interrupts)
    try:
        yield seen
    except KeyboardInterrupt as exc:
        exc.interrupted_by = seen.name  # type: ignore[attr-defined]  (for `exit_status`)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _seen = None


def sigterm_cancels(task: Any, seen: TermSeen) -> None:
    """In a `sigterm_as_ctrl_c` block whose asyncio loop runs ``task`` (a live replay's): SIGTERM does what
    ``asyncio.run``'s Ctrl-C does, the first cancelling ``task`` (which closes its run as interrupted), a further
    one raising ``KeyboardInterrupt`` at once. (Raised from the signal's handler, the first would land in whatever
    callback runs; and asyncio takes no Ctrl-C where SIGINT is ignored.) Call it from the loop; the loop's close
    puts SIGTERM's default back. Nothing changes where the block did not take SIGTERM."""
    import asyncio

    if not seen.taken:
        return

    def on_sigterm() -> None:
        if seen.received:
            raise KeyboardInterrupt
        seen.received = True
        task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)


def sigterm_stops(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` run under `sigterm_as_ctrl_c`: the ``KeyboardInterrupt`` it raises (``SweepInterrupted``, say)
    says which signal stopped it in ``interrupted_by``."""

    @functools.wraps(func)
    def stopped_by_sigterm_too(*args: Any, **kwargs: Any) -> Any:
        with sigterm_as_ctrl_c():
            return func(*args, **kwargs)

    return stopped_by_sigterm_too


def sigterm_is_taken() -> bool:
    """Whether a `sigterm_as_ctrl_c` block has SIGTERM now (its handler raises ``KeyboardInterrupt``)."""
    return signal.getsignal(signal.SIGTERM) is _sigterm_interrupts


@contextmanager
def handlers_kept(*signals: int) -> Iterator[None]:
    """Put the handlers of ``signals`` back after the block: ``ray.init`` replaces SIGTERM's with one that exits at
    once (a sweep's `sim.sweep.backends.RayBackend`; the daemon's Ray pool, whose drain it would cut short). Only in
    the main thread (where handlers are set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {sig: signal.getsignal(sig) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:
                signal.signal(sig, handler)
