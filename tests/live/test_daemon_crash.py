"""A daemon killed with SIGKILL: the next start on the same database marks its run ``crashed``,
and the request rows it wrote before the kill are still there."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from controlplane.storage import get_run, iter_rows, list_runs, make_engine
from tests.live.daemon_process import DaemonProcess

MODEL = "tiny-llama"


def _daemon(tmp: Path, db_url: str, name: str) -> DaemonProcess:
    return DaemonProcess(tmp, ["--pool", "thread", "--workers", "1", "--db", db_url, "--drain-timeout", "30"],
                         name=name)


def _request_ids(engine, run_id: int) -> set[str]:
    return {r["request_id"] for r in iter_rows(engine, run_id, "requests")}


def test_a_sigkilled_daemons_run_is_marked_crashed_at_the_next_start(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'crash.db'}"
    first = _daemon(tmp_path, db_url, "first")
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

        second = _daemon(tmp_path, db_url, "second")
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
