"""A run of a release before 2026-12-07 on a measured profile stored the default ``gpu: a100-80gb`` beside an A10G
profile (that release wrote every default into the stored config, and priced the run as an A100): this release
refuses that config (its gpu follows the profile's device). `runs config` exited 2 printing nothing, its error
saying the user gave the gpu "as an option or override"; it prints the config as the run ran with it, and says at
the top why this release refuses it and how to replay it."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.errors import ConfigError
from controlplane.storage import make_engine, run_config
from tests.sim.latency.test_measured_checks import l40s_rows

pytestmark = pytest.mark.usefixtures("no_controlplane_env")

CONFIG = ("name: measured-a10g\ncluster:\n  models:\n    - name: default\n      replicas: 1\n"
          "      latency_model: measured\n      latency: {path: a10g.json}\n      num_kv_blocks: 2000\n")


def _older_release_run(tmp_path, monkeypatch) -> str:
    """Run 1 of a database, replayed on an A10G profile with the config stored as the release before wrote it."""
    (tmp_path / "a10g.json").write_text(json.dumps({"format": "controlplane-profile/1", "model": "acme/llama-13b",
                                                    "device": "a10g", "precision": "fp16", "rows": l40s_rows()}))
    (tmp_path / "measured.yaml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    done = CliRunner().invoke(app, ["sim", "replay", "--limit", "20", "--config", "measured.yaml", "--db", db,
                                    "--json", "--no-progress"])
    assert done.exit_code == 0, done.output
    con = sqlite3.connect(tmp_path / "runs.db")
    (stored,) = con.execute("SELECT config FROM run WHERE id = 1").fetchone()
    config = json.loads(stored)
    assert config["cluster"]["models"][0]["gpu"] == "a10g"
    config["cluster"]["models"][0]["gpu"] = "a100-80gb"  # (as the release before stored it)
    con.execute("UPDATE run SET config = ? WHERE id = 1", (json.dumps(config),))
    con.commit()
    con.close()
    return db


def test_runs_config_prints_a_config_this_release_refuses_saying_why_and_the_fix(tmp_path, monkeypatch):
    db = _older_release_run(tmp_path, monkeypatch)
    shown = CliRunner().invoke(app, ["runs", "config", "1", "--db", db])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[1] == "# note: this release refuses this config as run 1 stored it, so a replay with it stops with:"
    assert lines[2].startswith("#   cluster.models.0: the measured profile a10g.json's device (a10g) and gpu "
                               "(a100-80gb) disagree")
    assert ("#   leave gpu out of cluster.models.0: it follows the measured profile's device (a10g) now; older "
            "releases wrote the default gpu (a100-80gb) themselves and priced the run as a100-80gb") in shown.stdout
    assert "    gpu: a100-80gb" in lines  # (the config as the run ran with it)
    assert "given as an option or override" not in shown.output
    assert shown.stderr.startswith("warning: this release refuses run 1's config as stored")
    (tmp_path / "run1.yaml").write_text(shown.stdout.replace("    gpu: a100-80gb\n", ""))  # (the fix it names)
    again = CliRunner().invoke(app, ["sim", "replay", "--limit", "20", "--config", "run1.yaml", "--db", db, "--json",
                                     "--no-progress"])
    assert again.exit_code == 0, again.output

    engine = make_engine(db)
    try:
        assert run_config(engine, 1, validate=False)["cluster"]["models"][0]["gpu"] == "a100-80gb"
        assert "trace_read" not in run_config(engine, 1, validate=False)
        with pytest.raises(ConfigError, match="run 1's stored config is one this release refuses") as refused:
            run_config(engine, 1)
        assert "given as an option or override" not in str(refused.value)
        assert run_config(engine, 2).cluster.models[0].gpu == "a10g"
    finally:
        engine.dispose()


def test_runs_config_from_a_folder_without_the_profile_says_it_went_unchecked(tmp_path, monkeypatch):
    db = _older_release_run(tmp_path, monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shown = CliRunner().invoke(app, ["runs", "config", "1", "--db", db])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[1].startswith("# note: cluster.models.0's measured profile a10g.json is not "
                                                   "found from this folder")
    assert "gpu: a100-80gb" in shown.stdout and not shown.stderr
