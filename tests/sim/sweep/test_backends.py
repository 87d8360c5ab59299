"""Sweep backends: the process pool's abort (Ctrl-C, an error) stops runs in flight rather than
waiting for them to end and dropping their results; its workers exit when the driver is killed."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

import pytest

from sim.sweep import load_spec
from sim.sweep.backends import PoolBackend, _pool_run, make_backend
from sim.sweep.run import load_traces, make_tasks


def test_pool_abort_stops_runs_in_flight():
    # Runs of ~44,000 requests each: many seconds apiece, so close() would have waited for them.
    loaded = load_spec(data={"trace": {"repeat": 5}, "space": {"cluster.models.0.replicas": [1, 2]}})
    tasks = make_tasks(loaded, loaded.points(), None)
    back = PoolBackend(workers=2)
    pool = back._pool(load_traces(loaded, {0}))
    futures = [pool.submit(_pool_run, t) for t in tasks]
    processes = list(pool._processes.values())
    assert processes
    back.abort()
    assert back._executor is None
    assert not any(p.is_alive() for p in processes)
    assert all(f.cancelled() or isinstance(f.exception(), BrokenProcessPool) for f in futures)


def test_a_ray_address_with_no_cluster_says_what_to_do(tmp_path):
    """Ray's own error told the user to set an `--address` flag this command does not have."""
    import os
    import subprocess
    import sys

    spec = tmp_path / "s.yaml"
    spec.write_text("trace: {limit: 5}\nseeds: [0]\nspace:\n  cluster.models.0.replicas: [1]\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(tmp_path)}  # (not a cluster another test left running)
    done = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim", "sweep", str(spec), "--ray-address", "auto",
                           "--db", f"sqlite:///{tmp_path / 'r.db'}"], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "error: no Ray cluster found at --ray-address auto (start one with `ray start --head`" in done.stderr


_DRIVER = """
import os, sys, time
from sim.sweep.backends import PoolBackend
back = PoolBackend(workers=1)
worker = back._pool({"seed=0": []}).submit(os.getpid).result()
print(worker, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # (exited, not yet reaped)
    except FileNotFoundError:
        return True


def test_pool_workers_and_their_forkserver_exit_when_the_driver_is_killed():
    """A driver killed with SIGKILL left its idle workers (and the forkserver) waiting for tasks for good."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import pytest

    if not os.path.isdir("/proc/self"):
        pytest.skip("reads /proc")
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    worker = forkserver = None
    try:
        worker = int(driver.stdout.readline())
        with open(f"/proc/{worker}/stat") as f:
            forkserver = int(f.read().rsplit(")", 1)[1].split()[1])
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 20
        while not (_gone(worker) and _gone(forkserver)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _gone(worker) and _gone(forkserver)
    finally:
        for pid in (driver.pid, worker, forkserver):  # (what the test started, whatever it found)
            if pid and not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def _two_sweeps_on(back, tmp_path):
    """Sweep A (the first 5 requests of the bundled trace), then B (its first 8) on one backend."""
    from sim.sweep import run_sweep

    db = f"sqlite:///{tmp_path / 'two.db'}"
    spec = {"seeds": [0], "record": "summary", "space": {"cluster.models.0.replicas": [1]}}
    a = run_sweep(load_spec(data={**spec, "name": "A", "trace": {"limit": 5}}), db, backend=back, fresh=True)
    b = run_sweep(load_spec(data={**spec, "name": "B", "trace": {"limit": 8}}), db, backend=back, fresh=True)
    from controlplane.storage import get_run, make_engine

    engine = make_engine(db)
    try:
        return [get_run(engine, r.run_ids[k])["summary"]["num_requests"] for r in (a, b) for k in r.run_ids]
    finally:
        engine.dispose()


def test_a_pool_reused_for_a_second_sweep_replays_the_second_sweeps_trace(tmp_path):
    """Both sweeps' traces are shipped as `seed=0`: the reused pool kept its workers, with A's trace,
    and B's run replayed A's 5 requests under B's name."""
    back = PoolBackend(workers=1)
    try:
        assert _two_sweeps_on(back, tmp_path) == [5, 8]
    finally:
        back.close()


def test_ray_reused_for_a_second_sweep_replays_the_second_sweeps_trace(tmp_path, monkeypatch):
    """The same with a real local Ray cluster (its object store kept A's trace under `seed=0`)."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    back = make_backend("ray", workers=1)
    try:
        assert _two_sweeps_on(back, tmp_path) == [5, 8]
    finally:
        back.close()


_STOPPED = """
from sim.sweep import load_spec
from sim.sweep.backends import PoolBackend
from sim.sweep.run import load_traces, make_tasks
loaded = load_spec(data={"trace": {"limit": 30}, "seeds": [0], "record": "summary",
                         "space": {"cluster.models.0.replicas": list(range(1, 25))}})
back = PoolBackend(workers=2)
runs = back.run(make_tasks(loaded, loaded.points(), None), load_traces(loaded, {0}))
next(runs)  # the first outcome: the other runs queued, most not handed to a worker yet
workers = list(back._executor._processes.values())
runs.close()  # Ctrl-C in the driver: the runs not started are dropped ...
for worker in workers:  # ... while the same Ctrl-C, sent to the whole process group, ends the workers
    worker.kill()
    worker.join()
back.abort()
print("stopped", flush=True)
"""


def test_a_pool_stopped_before_its_runs_ended_prints_no_traceback(tmp_path):
    """Ctrl-C on `sim search --backend pool` printed `Exception in thread ... InvalidStateError: CANCELLED`: the
    runs not started were cancelled from the driver, then the executor's thread, finding its workers ended
    (the terminal's Ctrl-C reaches them too), failed to set those futures' error."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _STOPPED], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.split() == ["stopped"], done.stderr
    assert "Traceback" not in done.stderr and "InvalidStateError" not in done.stderr, done.stderr


def test_a_ray_address_with_nothing_listening_is_refused_before_the_sweep_row(tmp_path):
    """`ray.init` at an address with nothing listening retried for minutes (only Ray's C++ warnings), and the
    sweep then stored a `failed 0/N` row; a short TCP connection try refuses it first, touching no database."""
    import socket
    import time

    from sim.sweep import run_sweep

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loaded = load_spec(data={"trace": {"limit": 5}, "seeds": [0], "space": {"cluster.models.0.replicas": [1]}})
    db = tmp_path / "r.db"
    t0 = time.monotonic()
    for backend in ("auto", "ray"):
        with pytest.raises(ConnectionError, match=rf"no Ray cluster found at --ray-address 127.0.0.1:{port} "
                                                  r"\(start one with `ray start --head`.*: nothing answers at"):
            run_sweep(loaded, f"sqlite:///{db}", backend=backend, ray_address=f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 20 and not db.exists()


def test_ray_keeps_the_drivers_sigterm_handler(monkeypatch):
    """`ray.init` put in its own SIGTERM handler, which exits at once: SIGTERM then left the sweep `failed` (a
    SystemExit), not `interrupted` as Ctrl-C does (`sim.interrupts.sigterm_as_ctrl_c`)."""
    import signal

    from sim.interrupts import sigterm_as_ctrl_c

    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with sigterm_as_ctrl_c():
        ours = signal.getsignal(signal.SIGTERM)
        back = make_backend("ray", workers=1)
        try:
            assert signal.getsignal(signal.SIGTERM) is ours
        finally:
            back.close()
