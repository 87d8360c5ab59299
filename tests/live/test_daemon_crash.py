"""A daemon killed with SIGKILL: the next start on the same database marks its run ``crashed``,
and the request rows it wrote before the kill are still there."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from controlplane.storage import get_run, iter_rows, list_runs, make_engine

MODEL = "tiny-llama"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Daemon:
    def __init__(self, tmp: Path, db_url: str, name: str) -> None:
        self.base = f"http://127.0.0.1:{(port := _free_port())}"
        self.log_path = tmp / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("CONTROLPLANE_PLUGINS", "CONTROLPLANE_LOAD_PLUGINS")}
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli.live", "--port", str(port), "--pool", "thread",
             "--workers", "1", "--db", db_url, "--drain-timeout", "30"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
        )

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the daemon was not ready after {timeout_s:.0f}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def _request_ids(engine, run_id: int) -> set[str]:
    return {r["request_id"] for r in iter_rows(engine, run_id, "requests")}


def test_a_sigkilled_daemons_run_is_marked_crashed_at_the_next_start(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'crash.db'}"
    first = _Daemon(tmp_path, db_url, "first")
    second = None
    engine = None
    try:
        first.wait_ready()
        answered: set[str] = set()
        for i in range(3):
            r = httpx.post(f"{first.base}/v1/completions", timeout=60,
                           json={"model": MODEL, "prompt": [5 + i, 6, 7], "max_tokens": 2, "temperature": 0})
            assert r.status_code == 200, r.text
            answered.update(r.headers["x-request-id"].split(","))
        engine = make_engine(db_url)
        run_id = list_runs(engine, limit=1)[0]["id"]
        assert get_run(engine, run_id)["config"]["process"]["pid"] == first.proc.pid
        deadline = time.monotonic() + 30  # the recorder writes from its own thread, about every second
        while not answered <= _request_ids(engine, run_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answered <= _request_ids(engine, run_id)

        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)
        assert get_run(engine, run_id)["status"] == "running"  # nobody closed it

        second = _Daemon(tmp_path, db_url, "second")
        second.wait_ready()
        old = get_run(engine, run_id)
        assert old["status"] == "crashed"
        assert old["finished_at"] is not None
        assert old["summary"]["crashed"] is True
        assert old["summary"]["requests_recorded"] == len(_request_ids(engine, run_id)) >= len(answered)
        assert answered <= _request_ids(engine, run_id)
        new = list_runs(engine, limit=1)[0]
        assert new["id"] != run_id and new["status"] == "running"  # the live one is left alone
        assert "marked crashed" in second.log_path.read_text()

        assert second.stop() == 0
        assert get_run(engine, new["id"])["status"] == "finished"
        assert get_run(engine, run_id)["status"] == "crashed"
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop(signal.SIGKILL)
        if engine is not None:
            engine.dispose()
