"""`controlplane runs ...` into a pipe its reader closed (`... | head -1`): exit 0, nothing on stderr
(controlplane/cli/pipes.py). They ended with status 1, click's and rich's answer to a broken pipe."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from controlplane.cli import app


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('pipes') / 'runs.db'}"
    for seed in ("1", "2"):
        res = CliRunner().invoke(app, ["sim", "replay", "--limit", "40", "--seed", seed, "--db", url, "--json"])
        assert res.exit_code == 0, res.output
    return url


def _into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """The command with its stdout a pipe whose reader is gone before it writes: each write fails (EPIPE)."""
    read, write = os.pipe()
    os.close(read)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")}
    try:
        return subprocess.run([sys.executable, "-m", "controlplane.cli", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=120)
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [
    ("runs", "export", "1", "--format", "csv"), ("runs", "export", "1", "--format", "json"),
    ("runs", "export", "1", "--what", "decisions", "--format", "jsonl"), ("runs", "show", "1"),
    ("runs", "show", "1", "--timeline"), ("runs", "list"), ("runs", "compare", "1", "2", "--no-ci"),
    ("runs", "compare", "1", "2", "--json", "--resamples", "100"),
], ids=" ".join)
def test_a_runs_command_whose_reader_went_away_ends_quietly_with_exit_0(db, args):
    proc = _into_a_closed_pipe(*args, "--db", db)
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.parametrize("args", [("--help",), ("sim", "replay", "--help"), ("runs", "--help")], ids=" ".join)
def test_help_into_a_closed_pipe_ends_quietly_with_exit_0(args):
    """`controlplane --help | head`: rich's answer to the closed pipe (SystemExit(1)) became the exit status."""
    proc = _into_a_closed_pipe(*args)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_a_usage_error_into_a_closed_pipe_still_fails():
    """The closed pipe met while an error is shown keeps the command's failure."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "controlplane.cli", "nosuch"], stdout=write, stderr=write,
                              timeout=120)
    finally:
        os.close(write)
    assert proc.returncode != 0
