"""The Ray pool keeps the daemon's signal handlers: ``ray.init`` installs a SIGTERM handler that
exits at once (``sys.exit(15)``), which cut the daemon's drain short (exit code 15, a traceback,
requests in flight lost). A stand-in for Ray does what ``ray.init`` does to the handlers."""

from __future__ import annotations

import signal
import sys
import types

from controlplane.live.pool_ray import RayWorkerPool


def fake_ray(monkeypatch) -> types.SimpleNamespace:
    state = types.SimpleNamespace(initialized=False)

    def init(**kwargs):
        state.initialized = True
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init does

    ray = types.SimpleNamespace(is_initialized=lambda: state.initialized, init=init, remote=lambda cls: cls)
    monkeypatch.setitem(sys.modules, "ray", ray)
    return ray


def test_starting_ray_keeps_the_daemon_s_sigterm_and_sigint_handlers(monkeypatch):
    fake_ray(monkeypatch)

    def drain(signum, frame):  # the daemon's handler: drain, then exit
        pass

    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        signal.signal(signal.SIGTERM, drain)
        signal.signal(signal.SIGINT, drain)
        RayWorkerPool()._ensure_ray()
        assert signal.getsignal(signal.SIGTERM) is drain
        assert signal.getsignal(signal.SIGINT) is drain
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)
