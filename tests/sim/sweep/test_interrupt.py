"""`interrupt_deferred`: Ctrl-C (a real SIGINT) during the block is raised when it ends; a second
one raises at once; outside the main thread nothing changes."""

from __future__ import annotations

import signal
import threading

import pytest

from sim.sweep.interrupt import interrupt_deferred


def test_ctrl_c_during_the_block_is_raised_when_it_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_deferred():
            signal.raise_signal(signal.SIGINT)
            done.append("after the signal")
    assert done == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_second_ctrl_c_raises_at_once():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_deferred():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            done.append("not reached")
    assert done == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_block_without_ctrl_c_and_one_that_raises_are_left_alone():
    with interrupt_deferred():
        pass
    with pytest.raises(ValueError):
        with interrupt_deferred():
            raise ValueError("x")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_the_handler_is_not_touched():
    seen = []

    def body() -> None:
        with interrupt_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [signal.default_int_handler]
