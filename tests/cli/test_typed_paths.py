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
