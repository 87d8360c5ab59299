"""A daemon killed with SIGKILL: the next start on the same database marks its run ``crashed``,
the request rows it wrote before the kill are still there, and the requests it had accepted
without a row are listed, answered or lost (never answered), from the run's journal."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import httpx

from controlplane.storage import get_run, iter_rows, list_runs, make_engine
from tests.live.daemon_process import DaemonProcess

MODEL = "tiny-llama"


def _daemon(tmp: Path, db_url: str, name: str) -> DaemonProcess:
    return DaemonProcess(tmp, ["--pool", "thread", "--workers", "1", "--db", db_url, "--drain-timeout", "30"],
                         name=name, env={"CONTROLPLANE_JOURNAL_DIR": str(tmp / "journal")})


def _journal_lines(tmp: Path) -> list[str]:
    """The accepted request ids of the journals (not their answer lines)."""
    from controlplane.storage.journal import read_journal

    return [rid for f in (tmp / "journal").glob("run-*.log") for rid in read_journal(f)]


def _send_in_background(base: str, n: int) -> list[threading.Thread]:
    """Long requests the daemon will still be generating when it is killed (their answers never come)."""
    def send(i: int) -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{base}/v1/completions", timeout=120,
                       json={"model": MODEL, "prompt": [9, i, 9], "max_tokens": 2000, "ignore_eos": True})

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


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
        assert f"run {run_id} recorded in sqlite:///" in first.log_path.read_text()  # (said once recorded)
        deadline = time.monotonic() + 30  # the recorder writes from its own thread, about every second
        while not answered <= _request_ids(engine, run_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answered <= _request_ids(engine, run_id)

        _send_in_background(first.base, 2)
        deadline = time.monotonic() + 30
        while len(_journal_lines(tmp_path)) < len(answered) + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        accepted = _journal_lines(tmp_path)
        assert set(accepted) >= answered and len(accepted) == len(answered) + 2
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
        # Nothing silently missing: every accepted request has a row or is listed as lost.
        recorded = _request_ids(engine, run_id)
        lost = old["summary"]["lost_request_ids"]
        assert old["summary"]["requests_accepted"] == len(accepted)
        assert old["summary"]["requests_lost"] == len(lost) >= 2  # the two killed mid-generation
        answered_unrecorded = set(old["summary"]["answered_unrecorded_ids"])
        assert set(lost) | answered_unrecorded | recorded == set(accepted) and not set(lost) & recorded
        assert not answered & set(lost)  # answered requests are never listed as safe to retry
        assert not list((tmp_path / "journal").glob(f"run-{run_id}-*.log"))  # consumed into the summary
        new = list_runs(engine, limit=1)[0]
        assert new["id"] != run_id and new["status"] == "running"  # the live one is left alone
        assert "marked crashed" in second.log_path.read_text()

        assert second.stop() == 0
        assert get_run(engine, new["id"])["status"] == "finished"
        assert not list((tmp_path / "journal").glob("run-*.log"))  # a clean close removes the journal
        assert get_run(engine, run_id)["status"] == "crashed"
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop(signal.SIGKILL)
        if engine is not None:
            engine.dispose()
