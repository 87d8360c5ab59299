"""Sweep backends: the process pool's abort (Ctrl-C, an error) stops runs in flight rather than
waiting for them to end and dropping their results."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

from sim.sweep import load_spec
from sim.sweep.backends import PoolBackend, _pool_run
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
