"""`python -m controlplane.cli.live` in a subprocess on a free port, for the tests that need the
daemon for real (its own process, signals, a database shared across starts)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(client, timeout_s: float = 120) -> None:
    """Poll an in-process daemon's ``/readyz`` (a ``TestClient``) until its workers are ready."""
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the in-process daemon never became ready"
        time.sleep(0.05)


def posts_recorded_in(db: str, tmp_path: Path, path: str, *bodies: dict) -> tuple[list, int]:
    """POST ``bodies`` to ``path`` of an in-process daemon (one tiny worker on the thread pool) recording into
    ``db``, one after the other: (the responses, the run's id), the run closed."""
    from fastapi.testclient import TestClient

    from controlplane.live.daemon import Daemon, DaemonOptions
    from controlplane.live.daemon_config import daemon_config

    cfg, _ = daemon_config(None, db=db, workers=1, model_name="tiny")
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, journal_dir=tmp_path / "journal"))
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        answers = [client.post(path, json=body) for body in bodies]
        return answers, daemon.driver.run_id


def tiny_live_config(db: str):
    """A run config of one tiny-llama worker (64-token context) recording into ``db``."""
    from controlplane.testing import make_config

    return make_config(storage={"url": db}, cluster={"models": [
        {"name": "tiny", "replicas": 1, "worker": {"preset": "tiny-llama", "max_seq_len": 64}}]})


def refused_then_served(db: str, refused: dict, served: dict) -> tuple:
    """A `LiveDriver` (one tiny worker on the thread pool) recording into ``db``: ``submit(**refused)`` must raise
    `InvalidRequest`, then ``generate(**served)`` (request id ``served``) runs: (the error, the result, the run's id)."""
    import asyncio

    import pytest

    from controlplane.live.driver import LiveDriver
    from controlplane.live.http_errors import InvalidRequest
    from controlplane.live.pool_thread import LocalThreadPool

    cfg = tiny_live_config(db)

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            with pytest.raises(InvalidRequest) as error:
                await driver.submit([5] * 4, **{"max_tokens": 2, **refused})
            result = await driver.generate([5] * 4, **{"max_tokens": 2, "request_id": "served", **served})
        finally:
            await driver.close()
        return error.value, result, driver.run_id

    return asyncio.run(main())


class DaemonProcess:
    """The daemon started with ``args`` (port added), its output in ``<tmp>/<name>.log``."""

    def __init__(self, tmp: Path, args: Sequence[str], *, name: str = "daemon",
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}.log"
        full_env = {k: v for k, v in os.environ.items() if k not in ("CONTROLPLANE_PLUGINS", "CONTROLPLANE_LOAD_PLUGINS")}
        full_env.update(env or {})
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed by stop / close)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli.live", "--port", str(self.port), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=tmp,
        )

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the daemon was not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        """Send ``sig`` and wait for the exit (killed after ``timeout_s``); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def close(self) -> None:
        self.stop(signal.SIGKILL, timeout_s=10)
