"""Paths as users type them: ``-c -`` reads the run config from stdin, and a ``~`` the shell left (quoted) is
the user's home for the trace, ``-c``, ``-o`` and a sweep spec, as it is for ``--db``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from sim.traces import bundled_trace_path
from sim.traces.bundled import bundled_default_config_path

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


def _env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")}, **extra}


def test_sim_replay_reads_its_config_from_stdin_with_dash(tmp_path):
    """`sim replay -c -` said "config file not found: -"."""
    config = bundled_default_config_path().read_text()
    cmd = [sys.executable, "-m", "controlplane.cli", "sim", "replay", "-c", "-", "--limit", "20", "--json",
           "--no-progress", "--db", f"sqlite:///{tmp_path / 'runs.db'}"]
    done = subprocess.run(cmd, input=config, capture_output=True, text=True, env=_env(), timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1])["num_requests"] == 20


def test_a_config_named_dash_elsewhere_says_how_to_read_stdin():
    from controlplane.config import load_config
    from controlplane.errors import ConfigError

    with pytest.raises(ConfigError, match=r"config file not found: - \(a config on stdin is read with -c /dev/stdin"):
        load_config("-")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home dir"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_a_quoted_tilde_is_the_home_for_the_trace_the_config_and_the_output(home, tmp_path):
    """`sim replay '~/t.csv'` said "trace file not found", `runs export 1 -o "~/cp_out.csv"` "its folder ~ does
    not exist"."""
    (home / "t.csv").write_bytes(bundled_trace_path().read_bytes())
    (home / "run.yaml").write_text(bundled_default_config_path().read_text())
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    done = CliRunner().invoke(app, ["sim", "replay", "~/t.csv", "-c", "~/run.yaml", "--format", "azure", "--limit",
                                    "20", "--json", "--no-progress", "--db", db])
    assert done.exit_code == 0, done.output
    for command in (["export", "1", "-o", "~/cp_out.csv"], ["report", "1", "-o", "~/report.html"]):
        done = CliRunner().invoke(app, ["runs", *command, "--db", db])
        assert done.exit_code == 0, done.output
    assert len((home / "cp_out.csv").read_text().splitlines()) == 21
    assert (home / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert not (Path.cwd() / "~").exists()


def test_a_quoted_tilde_is_the_home_for_a_sweep_spec_and_its_files(home, tmp_path):
    (home / "t.csv").write_bytes(bundled_trace_path().read_bytes())
    (home / "run.yaml").write_text(bundled_default_config_path().read_text())
    (home / "spec.yaml").write_text("name: tilde\nconfig: ~/run.yaml\n"
                                    "trace: {path: ~/t.csv, format: azure, limit: 20}\n"
                                    "space: {cluster.models.0.replicas: [1]}\nseeds: [0]\n")
    from sim.sweep import load_spec

    loaded = load_spec(Path("~/spec.yaml").expanduser())
    assert loaded.trace_path() == str(home / "t.csv")
    done = CliRunner().invoke(app, ["sim", "sweep", "~/spec.yaml", "--backend", "serial", "--no-progress", "--db",
                                    f"sqlite:///{tmp_path / 'runs.db'}"])
    assert done.exit_code == 0, done.output
