"""A real `controlplane sim sweep` process signalled mid-sweep, as `kill`, `timeout` or a container runtime does."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time


def _stored(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM run WHERE status = 'finished'").fetchone()[0]
    except sqlite3.Error:
        return 0  # not made yet


def test_sigterm_stops_a_sweep_as_ctrl_c_does(tmp_path):
    """SIGTERM did what SIGKILL does: exit 143 without a word, the sweep left `running` (then `crashed`), and a
    resource_tracker warning of leaked semaphores. It now stops it as Ctrl-C does, even where SIGINT is ignored
    (a script's background job): the sweep stored `interrupted`, one line saying so, exit 143."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("record: summary\nspace:\n  cluster.models.0.replicas: [2, 3, 4, 5, 6, 7, 8, 9]\n")  # (~1 s a run)
    db = tmp_path / "runs.db"
    sweep = [sys.executable, "-m", "controlplane.cli", "sim", "sweep", str(spec), "--db", f"sqlite:///{db}",
             "--backend", "pool", "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(sweep, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not _stored(db):  # a run is stored, more to come
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    stored = _stored(db)
    assert 1 <= stored < 8, err
    assert (f"interrupted by SIGTERM: sweep 1 is stored with status 'interrupted', {stored} of its 8 runs finished; "
            "run the same command again to resume it") in " ".join(err.split()), err
    assert "Traceback" not in err and "resource_tracker" not in err, err
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT status FROM sweep WHERE id = 1").fetchone()[0] == "interrupted"


def test_a_pool_worker_killed_mid_sweep_is_survived(tmp_path):
    """`kill -9` of one of `--backend pool --workers 2`'s worker processes ended the sweep with a traceback ending in
    `BrokenProcessPool`, `runs sweeps` showing it failed 3/9. The run it ran now runs again on a new pool, one line
    saying so, and the sweep finishes."""
    import psutil

    spec = tmp_path / "spec.yaml"
    spec.write_text("record: summary\nspace:\n  cluster.models.0.replicas: [2, 3, 4, 5, 6, 7, 8, 9]\n")  # (~1 s a run)
    db = tmp_path / "runs.db"
    sweep = [sys.executable, "-m", "controlplane.cli", "sim", "sweep", str(spec), "--db", f"sqlite:///{db}",
             "--backend", "pool", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(sweep, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not _stored(db):  # a run is stored, more to come
        time.sleep(0.02)
    forkserver = next(p for p in psutil.Process(proc.pid).children() if "forkserver" in " ".join(p.cmdline()))
    forkserver.children()[0].kill()  # (a worker: SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenProcessPool" not in err, err
    assert err.count("was killed by SIGKILL while running run '") == 1, err
    assert "ran sweep 1: 8 runs now on pool" in out, out
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT status, num_runs FROM sweep WHERE id = 1").fetchone() == ("finished", 8)
    assert _stored(db) == 8
