"""The sweep's Ctrl-C tests raise a real SIGINT and expect Python's default handler: a test run started with
SIGINT ignored (a background job of a non-interactive shell, `nohup`) inherits SIG_IGN, which
`interrupt_deferred` rightly leaves alone. Each test here runs with the default handler, then gets back
whatever the run had."""

from __future__ import annotations

import signal
import threading

import pytest


@pytest.fixture(autouse=True)
def default_sigint_handler():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
