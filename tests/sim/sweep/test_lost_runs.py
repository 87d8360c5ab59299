"""A sweep's worker process killed under a run (SIGKILL, the OOM killer): the pool backend aborted the whole sweep
with a traceback ending in `BrokenProcessPool`, the runs not done never ran. The run is now run again once on a
new pool, then stored as failed if its worker dies again, and the sweep goes on (`sim.sweep.lost_runs`)."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from pathlib import Path

import pytest

from sim.sweep import load_spec
from sim.sweep.backends import PoolBackend, make_backend
from sim.sweep.lost_runs import ended
from sim.sweep.run import load_traces, make_tasks


class _KillsItsWorker(str):
    """A trace id whose lookup in a worker (`_pool_run`) kills that worker with SIGKILL: once (then ``marker``
    exists), or every time (no ``marker``)."""

    driver: int
    marker: str | None

    def __hash__(self) -> int:
        if os.getpid() != self.driver and not (self.marker and Path(self.marker).exists()):
            if self.marker:
                Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


def _killing(task, marker: Path | None):
    trace_id = _KillsItsWorker(task.trace_id)
    trace_id.driver, trace_id.marker = os.getpid(), str(marker) if marker else None
    return dataclasses.replace(task, trace_id=trace_id)


def _sweep(n: int = 4):
    loaded = load_spec(data={"trace": {"limit": 30}, "seeds": [0], "record": "summary",
                             "space": {"cluster.models.0.replicas": list(range(1, n + 1))}})
    return make_tasks(loaded, loaded.points(), None), load_traces(loaded, {0})


def _warned(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "controlplane.sweep"]


def test_a_run_whose_pool_worker_is_killed_runs_again_and_the_sweep_goes_on(tmp_path, caplog):
    tasks, traces = _sweep()
    tasks[1] = _killing(tasks[1], tmp_path / "killed-once")
    with PoolBackend(workers=2) as back, caplog.at_level(logging.WARNING, logger="controlplane.sweep"):
        outcomes = list(back.run(tasks, traces))
    assert sorted(o.task.key for o in outcomes) == sorted(t.key for t in tasks)
    assert all(o.status == "finished" for o in outcomes)
    [line] = _warned(caplog)
    assert line.startswith("worker process ") and " was killed by SIGKILL while running run '" in line, line
    assert line.endswith(f"#{tasks[1].index} seed 0': it runs again (a run whose worker dies twice is stored as "
                         "failed)"), line


def test_a_run_whose_pool_worker_dies_twice_is_failed_and_the_others_finish(caplog):
    tasks, traces = _sweep()
    tasks[2] = _killing(tasks[2], None)
    with PoolBackend(workers=2) as back, caplog.at_level(logging.WARNING, logger="controlplane.sweep"):
        outcomes = {o.task.key: o for o in back.run(tasks, traces)}
    assert len(outcomes) == len(tasks)
    failed = outcomes.pop(tasks[2].key)
    assert failed.status == "failed" and all(o.status == "finished" for o in outcomes.values())
    error = failed.summary["error"]
    assert error.startswith("WorkerDied: its worker process died twice while running it: worker process "), error
    assert error.count("was killed by SIGKILL") == 2, error
    first, second = _warned(caplog)
    assert first.endswith("it runs again (a run whose worker dies twice is stored as failed)"), first
    assert second.endswith("again: it is stored as failed"), second


def test_a_sweep_with_a_killed_pool_worker_stores_every_run(tmp_path, monkeypatch):
    """Through `run_sweep`, as `controlplane sim sweep --backend pool` runs it: the sweep finished, not failed 3/9."""
    import sim.sweep.run
    from sim.sweep import run_sweep

    marker = tmp_path / "killed-once"
    made = sim.sweep.run.make_tasks
    monkeypatch.setattr(sim.sweep.run, "make_tasks", lambda *a, **k: [
        _killing(t, marker) if t.index == 1 else t for t in made(*a, **k)])
    loaded = load_spec(data={"trace": {"limit": 30}, "seeds": [0], "record": "summary",
                             "space": {"cluster.models.0.replicas": [1, 2, 3]}})
    result = run_sweep(loaded, f"sqlite:///{tmp_path / 'runs.db'}", backend="pool", workers=2)
    assert marker.exists() and (result.ran, result.failed) == (3, {})
    assert {r["status"] for r in result.runs()} == {"finished"}


def test_a_ray_run_whose_worker_dies_runs_again_then_fails(tmp_path, monkeypatch, caplog):
    """The same on Ray: a dead task's `WorkerCrashedError` ended the sweep with a traceback."""
    ray = pytest.importorskip("ray")
    from sim.sweep.worker import run_task

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    tasks, traces = _sweep(3)
    always, once = tasks[0].key, tasks[1].key
    marker = tmp_path / "killed-once"

    def run_or_die(task, trace):  # (by value, with its closure: Ray's workers cannot import this module)
        if task.key == always or (task.key == once and not marker.exists()):
            if task.key == once:
                marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return run_task(task, trace)

    back = make_backend("ray", workers=2)
    try:
        back._remote = ray.remote(num_cpus=1, max_retries=0)(run_or_die)
        with caplog.at_level(logging.WARNING, logger="controlplane.sweep"):
            outcomes = {o.task.key: o for o in back.run(tasks, traces)}
    finally:
        back.close()
    assert [outcomes[t.key].status for t in tasks] == ["failed", "finished", "finished"]
    assert outcomes[tasks[0].key].summary["error"].count("its Ray worker process died (WorkerCrashedError") == 2
    assert sum("it runs again" in line for line in _warned(caplog)) == 2


def test_workers_that_die_before_saying_which_run_they_run_end_the_sweep_in_one_error(caplog):
    """A run whose task kills its worker as the worker reads it (before `_pool_run`): no run to blame, so no
    run's second death to stop at; three pools in a row dying with nothing back end it, rather than for good."""
    from controlplane.errors import ControlPlaneError

    tasks, traces = _sweep(1)
    key = _KillsItsWorker("cluster.models.0.replicas")
    key.driver, key.marker = os.getpid(), None
    tasks[0] = dataclasses.replace(tasks[0], overrides={key: 1})  # (read, and its key hashed, with the task)
    with PoolBackend(workers=1) as back, caplog.at_level(logging.WARNING, logger="controlplane.sweep"):
        with pytest.raises(ControlPlaneError, match=r"the pool's worker processes died 3 times in a row before any "
                                                    r"run came back \(worker process \d+ was killed by SIGKILL\): "
                                                    r"1 runs not done"):
            list(back.run(tasks, traces))
    assert [line.endswith("running no run then: the runs not done run on a new pool") for line in _warned(caplog)
            ] == [True] * 3


def test_how_a_worker_ended_in_words():
    assert ended(42, -signal.SIGKILL) == "worker process 42 was killed by SIGKILL"
    assert ended(42, 1) == "worker process 42 exited with code 1"
    assert ended(42, -99) == "worker process 42 was killed by signal 99"
