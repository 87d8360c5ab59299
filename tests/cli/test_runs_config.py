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


def test_a_runs_config_leaves_its_database_out_so_a_replay_stores_where_it_is_told(tmp_path, monkeypatch):
    """`runs config 1 --db sqlite:///cand1.db` printed `storage.url: sqlite:///cand1.db`: a replay with it and no
    --db wrote into the CI artifact it was read from."""
    import sqlite3

    monkeypatch.delenv("CONTROLPLANE_STORAGE__URL", raising=False)
    source = tmp_path / "cand1.db"
    runner = CliRunner()
    assert runner.invoke(app, ["sim", "replay", "--limit", "20", "--db", f"sqlite:///{source}", "--json"]).exit_code == 0
    shown = runner.invoke(app, ["runs", "config", "1", "--db", str(source)])
    assert shown.exit_code == 0, shown.output
    assert "cand1.db" not in "".join(line for line in shown.stdout.splitlines() if not line.startswith("#"))
    assert f"# storage.url is left out (run 1 ran with sqlite:///{source})" in shown.stdout
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "run1.yaml").write_text(shown.stdout)
    again = runner.invoke(app, ["sim", "replay", "--config", "run1.yaml", "--limit", "20", "--json"])
    assert again.exit_code == 0, again.output
    other = runner.invoke(app, ["sim", "replay", "--config", "run1.yaml", "--limit", "20", "--db", "other.db"])
    assert other.exit_code == 0, other.output
    runs = {}
    for path in (source, work / "controlplane.db", work / "other.db"):
        con = sqlite3.connect(path)
        runs[path.name] = con.execute("SELECT count(*) FROM run").fetchone()[0]
        con.close()
    assert runs == {"cand1.db": 1, "controlplane.db": 1, "other.db": 1}
