"""`runs show` of a sweep's run says which point of the sweep it is: it printed only its name
("plan-7b #13 seed 1"), the point's overrides stored in the run's notes never shown."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from sim.sweep import load_spec, run_sweep

pytestmark = pytest.mark.usefixtures("wide_consoles")


def test_a_sweep_runs_show_prints_its_sweep_and_overrides(tmp_path):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = {"name": "pts", "trace": {"limit": 30}, "record": "summary",
            "space": {"cluster.models.0.replicas": [1, 2],
                      "plugins.enabled": [["queue-limit", "round-robin", "continuous-batching", "fixed-replicas",
                                           "static-memory", "builtin-latency-models"]]}}
    result = run_sweep(load_spec(data=spec), db, backend="serial")
    run_id = max(result.run_ids.values())
    shown = CliRunner().invoke(app, ["runs", "show", str(run_id), "--db", db])
    assert shown.exit_code == 0, shown.output
    assert (f"sweep {result.sweep_id}, overrides: cluster.models.0.replicas = 2; plugins.enabled = [\"queue-limit\", "
            "\"round-robin\", \"continuous-batching\", \"fixed-replicas\", \"static-memory\", "
            "\"builtin-latency-models\"]") in shown.stdout


def test_a_replays_show_says_nothing_of_sweeps(tmp_path):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    replay = CliRunner().invoke(app, ["sim", "replay", "--limit", "20", "--db", db])
    assert replay.exit_code == 0, replay.output
    shown = CliRunner().invoke(app, ["runs", "show", "1", "--db", db])
    assert shown.exit_code == 0, shown.output
    assert "overrides" not in shown.stdout and "sweep" not in shown.stdout
