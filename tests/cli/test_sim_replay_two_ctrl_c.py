"""Two Ctrl-C a few milliseconds apart at a running `controlplane sim replay --json` (real signals at the process,
or at its process group as a terminal sends them): each try exits 130 with no traceback, prints the run's summary
as one JSON line, and stores the run `interrupted` with that summary (`sim/interrupts.py`). The second signal
used to land in the stopped run's end or close: a `TypeError` from the writer process's pipe read out of step,
a SQLite run locking its own database for a minute (then spilled, `crashed`), or nothing on stdout."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("no_controlplane_env")

# (offset after the run's database appears, gap between the signals, to the process group, writer process)
TRIES = [(0.45, 0.005, False, "1"), (0.6, 0.005, True, "0"), (0.5, 0.002, False, "0"), (0.55, 0.01, True, "1"),
         (0.7, 0.005, False, "1"), (0.4, 0.02, False, "0")]


def _two_ctrl_c(tmp_path: Path, n: int, offset: float, gap: float, group: bool, writer: str) -> tuple[int, str, str, Path]:
    db = tmp_path / f"r{n}.db"
    env = {**os.environ, "CONTROLPLANE_WRITER_PROCESS": writer, "CI": "true"}
    cmd = [sys.executable, "-m", "controlplane.cli", "sim", "replay", "--db", f"sqlite:///{db}", "--json",
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not db.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(offset)
    for i in range(2):
        if i:
            time.sleep(gap)
        os.killpg(proc.pid, signal.SIGINT) if group else os.kill(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # (it hung on its own database's lock, or on its writer process's pipe)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the replay still ran 60 s after two Ctrl-C: {err[-3000:]}")
    return proc.returncode, out, err, db


def test_two_ctrl_c_a_few_ms_apart_close_the_run_as_interrupted_with_its_summary_printed(tmp_path):
    interrupted = 0
    for n, (offset, gap, group, writer) in enumerate(TRIES):
        rc, out, err, db = _two_ctrl_c(tmp_path, n, offset, gap, group, writer)
        what = f"try {n} (offset {offset}, gap {gap}, group {group}, writer {writer}): rc {rc}\n{err[-3000:]}"
        if rc == 0 or "after 0 requests arrived" in err or "before the run started" in err:
            continue  # (the run ended before the signals, or they came before its loop: nothing to check here)
        assert rc == 130, what
        interrupted += 1
        assert "Traceback" not in err and "database is locked" not in err, what
        assert out.count("\n") == 1, what
        printed = json.loads(out)
        with sqlite3.connect(db) as conn:
            status, stored = conn.execute("SELECT status, summary FROM run WHERE id = ?",
                                          (printed["run_id"],)).fetchone()
        stored = json.loads(stored)
        assert status == "interrupted" == printed.pop("status"), what  # (the JSON says how the run ended)
        assert stored == printed, what  # (the whole summary: a tick's stop, or mid-event with its error)
        if stored.get("interrupted_mid_event"):
            assert stored["error"].startswith("KeyboardInterrupt"), what
        assert stored["interrupted_at_s"] >= 0 and stored["num_requests"] > 0, what
        assert f"run {printed['run_id']} is stored with status 'interrupted'" in err, what
    assert interrupted >= len(TRIES) // 2  # (the signals came while the runs ran: the test checked something)
