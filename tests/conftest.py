"""Suite-wide settings: fitted latency models are cached in a directory of this test session,
not in the user's cache (so the suite neither reads nor leaves entries there); the directory is
removed when the session ends. Each test runs with Python's default SIGINT and SIGTERM handlers and gives
back what it found (`ray.init` leaves its own SIGTERM handler in the test process; the replay's SIGTERM test
sends a real one): the Ctrl-C tests raise a real SIGINT, a run started with SIGINT ignored (a background
job of a non-interactive shell, `nohup`) inherits SIG_IGN that the replay rightly leaves alone, and a
command stopped by Ctrl-C keeps dropping a further one until its process exits
(`sim.sweep.interrupt.hold_interrupts_until_exit`), which in a test process would outlive the test
(a later replay's Ctrl-C test then saw no interrupt)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading

import pytest

_MADE: list[str] = []


def pytest_configure(config):
    if "CONTROLPLANE_CACHE_DIR" not in os.environ:
        os.environ["CONTROLPLANE_CACHE_DIR"] = path = tempfile.mkdtemp(prefix="cp-fit-cache-")
        _MADE.append(path)


def pytest_unconfigure(config):
    for path in _MADE:
        if os.environ.get("CONTROLPLANE_CACHE_DIR") == path:
            del os.environ["CONTROLPLANE_CACHE_DIR"]
        shutil.rmtree(path, ignore_errors=True)
    _MADE.clear()


@pytest.fixture(autouse=True)
def default_sigint_handler():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    before_term = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (Ray's driver leaves a handler of its own)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        signal.signal(signal.SIGTERM, before_term)


@pytest.fixture(autouse=True)
def no_handlers_on_closed_streams(monkeypatch):
    """Leave out the logging handlers an earlier test left on a stream since closed (a CliRunner's, a test's own
    StringIO): each record they get prints '--- Logging error ---' to the stderr a later test reads (two full-suite
    failures in two sessions, each passing alone)."""
    import logging

    loggers = [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values()
                                      if isinstance(x, logging.Logger))]
    for logger in loggers:
        live = [h for h in logger.handlers if not getattr(getattr(h, "stream", None), "closed", False)]
        if len(live) != len(logger.handlers):
            monkeypatch.setattr(logger, "handlers", live)
    yield
