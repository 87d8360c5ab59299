"""The replica lines of `runs plot` and the HTML report follow the workers' own events: a live run whose two
workers were ready at 1.4 s plotted 0 ready replicas until the second metrics sample, 5 s in (a step line holds
each sample until the next)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from controlplane.cli import runs_plot
from controlplane.report.data import load_run
from controlplane.report.worker_replicas import worker_replicas
from controlplane.storage import make_engine
from controlplane.storage.models import WorkerEvent
from controlplane.testing import make_config, make_trace

#: Two workers starting at 0 s, both ready at 1.4 s, one drained at 6 s and stopped at 7 s, the other at 9 s.
EVENTS = [(0.0, "default-0", "starting", {"model": "default", "reason": "initial replicas"}),
          (0.0, "default-1", "starting", {"model": "default", "reason": "initial replicas"}),
          (1.4, "default-0", "ready", {"device": "cpu", "model": "tiny-llama"}),
          (1.4, "default-1", "ready", {"device": "cpu", "model": "tiny-llama"}),
          (6.0, "default-1", "draining", {"reason": "scale in"}),
          (7.0, "default-1", "stopped", None),
          (9.0, "default-0", "stopped", {"reason": "run ended"})]


@pytest.fixture
def engine(tmp_path):
    from sim.replay import replay

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    replay(make_trace(20, qps=2), make_config(storage={"url": url}, control={"metrics_interval_s": 5.0}))
    engine = make_engine(url)
    w = WorkerEvent.__table__
    with engine.begin() as conn:  # (the events of the tester's live run, in place of the simulated ones)
        conn.execute(w.delete().where(w.c.run_id == 1))
        conn.execute(w.insert(), [{"run_id": 1, "time_s": t, "worker_id": wid, "kind": kind,
                                   "detail": json.dumps(detail) if detail is not None else None}
                                  for t, wid, kind, detail in EVENTS])
    yield engine
    engine.dispose()


def test_the_replicas_are_counted_at_the_worker_events_times(engine):
    by_model, (t, ready, starting) = worker_replicas(engine, 1)
    assert list(t) == [0.0, 1.4, 6.0, 7.0, 9.0]
    assert list(ready) == [0, 2, 1, 1, 0] and list(starting) == [2, 0, 0, 0, 0]
    assert list(by_model) == ["default"] and np.array_equal(by_model["default"][1], ready)
    series = load_run(engine, 1).series  # (the HTML report's replicas panel)
    assert list(series["replicas"][0]) == [0.0, 1.4, 6.0, 7.0, 9.0] and list(series["replicas"][1]) == [0, 2, 1, 1, 0]


def test_runs_plot_draws_the_replicas_at_the_worker_events_times(engine, tmp_path, monkeypatch):
    drawn = {}
    panel = runs_plot._replica_panel

    def seen(ax, series, per_model, decisions):
        drawn.update(series=series, per_model=per_model)
        return panel(ax, series, per_model, decisions)

    monkeypatch.setattr(runs_plot, "_replica_panel", seen)
    runs_plot.plot_run(engine, 1, tmp_path / "run.png")
    t, ready = drawn["series"]["replicas"]
    assert list(t[:2]) == [0.0, 1.4] and list(ready[:2]) == [0, 2]  # (the samples: 0 ready until 5 s)
    assert list(drawn["per_model"]["default"][1]) == [0, 2, 1, 1, 0]
    assert (tmp_path / "run.png").stat().st_size > 0
