"""`controlplane sim sweep --json` stopped by Ctrl-C: the one JSON line --json promises, with status interrupted
(it printed nothing: a script read an empty stdout)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import sim.sweep
from controlplane.cli import app
from sim.sweep.run import SweepInterrupted

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


def test_an_interrupted_sweep_prints_its_json_line_with_the_runs_stored(tmp_path, monkeypatch):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n  cluster.models.0.replicas: [1, 2]\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    done = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", db, "--backend", "serial", "--json"])
    assert done.exit_code == 0, done.output
    finished = json.loads(done.stdout)
    assert finished["status"] == "finished"

    def interrupted(*args, **kwargs):  # (Ctrl-C as the resumed sweep went on: its two runs stored before)
        raise SweepInterrupted(finished["sweep_id"], 2, 3)

    monkeypatch.setattr(sim.sweep, "run_sweep", interrupted)
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", db, "--backend", "serial", "--json"])
    assert result.exit_code in (1, 130)
    assert result.stdout.count("\n") == 1
    line = json.loads(result.stdout)
    assert line["status"] == "interrupted" and line["sweep_id"] == finished["sweep_id"]
    assert (line["stored"], line["total"]) == (2, 3)
    assert [r["run_id"] for r in line["runs"]] == [r["run_id"] for r in finished["runs"]]
    assert line["runs"][0]["summary"] == finished["runs"][0]["summary"]
    assert "sweep 1 is stored with status 'interrupted', 2 of its 3 runs finished" in result.stderr
