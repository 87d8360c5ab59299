"""SIGTERM taken as Ctrl-C (`sim.interrupts.sigterm_as_ctrl_c`): what stops a sweep's driver or a live replay
cleanly on Ctrl-C does on SIGTERM too; it ended them at once (`kill`, `timeout`, a container runtime)."""

from __future__ import annotations

import os
import signal

import pytest

from sim.interrupts import exit_status, hold_until_exit, sigterm_as_ctrl_c, sigterm_stops
from sim.sweep.interrupt import interrupt_deferred, interrupts_held_while_stopping


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_in_the_block_raises_keyboard_interrupt_saying_so():
    with pytest.raises(KeyboardInterrupt) as raised:
        with sigterm_as_ctrl_c() as seen:
            _sigterm()
    assert seen.received and raised.value.interrupted_by == "SIGTERM" and exit_status(raised.value) == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # (given back)


def test_ctrl_c_in_the_block_says_sigint():
    with pytest.raises(KeyboardInterrupt) as raised:
        with sigterm_as_ctrl_c():
            signal.raise_signal(signal.SIGINT)
    assert raised.value.interrupted_by == "SIGINT" and exit_status(raised.value) == 130


def test_sigterm_is_held_while_a_run_is_written_even_where_sigint_is_ignored():
    """A script's background job ignores SIGINT: the holds, which took only SIGINT's KeyboardInterrupt, held
    nothing, and a SIGTERM landing in a run's write left the database locked (`database is locked`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (tests/conftest.py puts the handlers back after the test)
    written = []
    with pytest.raises(KeyboardInterrupt) as raised:
        with sigterm_as_ctrl_c():
            with interrupt_deferred():
                _sigterm()
                written.append("the whole run")
    assert written == ["the whole run"] and raised.value.interrupted_by == "SIGTERM"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # (left ignored)


def test_a_further_sigterm_while_a_stopped_sweep_cleans_up_is_dropped():
    @sigterm_stops
    def sweep() -> None:
        try:
            _sigterm()
        finally:
            with interrupts_held_while_stopping():
                _sigterm()  # (the same signal again: the cleanup goes on)
                cleaned.append(True)

    cleaned: list[bool] = []
    with pytest.raises(KeyboardInterrupt) as raised:
        sweep()
    assert cleaned == [True] and raised.value.interrupted_by == "SIGTERM"


def test_a_caller_s_sigterm_handler_is_left_alone():
    calls = []
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    with sigterm_as_ctrl_c() as seen:
        _sigterm()
    assert calls == [signal.SIGTERM] and not seen.taken and not seen.received


def test_after_an_interrupt_a_further_sigterm_is_dropped_until_the_exit():
    hold_until_exit()
    _sigterm()  # (dropped: the command prints what was stored)
    with pytest.raises(KeyboardInterrupt):
        _sigterm()


def test_exit_status_reads_a_replay_summary_too():
    from controlplane.errors import ReplayInterrupted

    assert exit_status(ReplayInterrupted(1, 3, summary={"interrupted_by": "SIGTERM"})) == 143
    assert exit_status(ReplayInterrupted(1, 3)) == 130 and exit_status(KeyboardInterrupt()) == 130
