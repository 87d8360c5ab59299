"""`controlplane runs config RUN`: the config a stored run ran with, as YAML `--config` takes; a run's
`config` as `runs show --json` prints it (with the facts the run added) is refused naming what to use instead."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from controlplane.cli import app


def test_a_runs_config_replays_it_again(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    first = runner.invoke(app, ["sim", "replay", "--limit", "40", "--seed", "3", "--db", db, "--json"])
    assert first.exit_code == 0, first.output
    shown = runner.invoke(app, ["runs", "config", "1", "--db", db])
    assert shown.exit_code == 0, shown.output
    (tmp_path / "run1.yaml").write_text(shown.stdout)
    again = runner.invoke(app, ["sim", "replay", "--config", str(tmp_path / "run1.yaml"), "--limit", "40",
                                "--db", db, "--json"])
    assert again.exit_code == 0, again.output
    a, b = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (first, again))
    for key in ("slo_attainment", "gpu_hours", "num_completed", "ttft_p99_s"):
        assert a[key] == b[key], key
    raw = runner.invoke(app, ["runs", "show", "1", "--db", db, "--json"])
    (tmp_path / "row.json").write_text(json.dumps(json.loads(raw.stdout)["config"]))
    refused = runner.invoke(app, ["sim", "replay", "--config", str(tmp_path / "row.json"), "--limit", "5",
                                  "--db", db])
    assert refused.exit_code == 2
    assert "trace_read is what a run records beside its config" in refused.output
    assert "controlplane runs config RUN" in refused.output
