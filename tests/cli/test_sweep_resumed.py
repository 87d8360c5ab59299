"""A resumed `controlplane sim sweep` says whose runs it skipped: three jobs of one spec into one SQLite file, one
reported `ran 0, skipped 2`, counting as its own resume the runs another job had just stored."""

from __future__ import annotations

import os
import re
import socket
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli.sweep import say_runs_stored_before

pytestmark = pytest.mark.usefixtures("wide_consoles")


def test_a_resume_says_which_process_stored_the_runs_it_skips_and_when(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n  cluster.models.0.replicas: [1, 2]\n")
    args = ["sim", "sweep", str(spec), "--db", f"sqlite:///{tmp_path / 'runs.db'}", "--backend", "serial", "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "stored before" not in first.stderr
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert re.search(rf"note: resumed sweep 1: its 2 runs stored before, by pid {os.getpid()} on "
                     rf"{re.escape(socket.gethostname())}, the last \d+ s ago, are not run again \(--fresh runs every "
                     r"point again\)", again.stderr), again.stderr


def test_the_note_counts_only_the_runs_stored_before(capsys):
    now = datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc)
    runs = [{"id": 1, "status": "finished", "finished_at": now - timedelta(hours=3),
             "config": {"process": {"pid": 7, "host": "a"}}},
            {"id": 2, "status": "finished", "finished_at": now, "config": {}}]  # (run now)
    say_runs_stored_before(SimpleNamespace(resumed=True, sweep_id=5, run_ids={"k": 2}), runs, now=now)
    assert ("note: resumed sweep 5: its 1 run stored before, by pid 7 on a, the last 3 h ago, is not run again "
            "(--fresh runs every point again)") in capsys.readouterr().err.replace("\n", " ")
    say_runs_stored_before(SimpleNamespace(resumed=False, sweep_id=5, run_ids={}), runs, now=now)
    assert "stored before" not in capsys.readouterr().err


def test_a_resume_with_nothing_to_run_reports_the_backend_asked_for(tmp_path):
    """(`sim sweep --json` said "backend": "serial" on a resume that had nothing to run, started with the default
    backend, Ray: the backend it would have run on is reported, and "ran": 0 says none was started.)"""
    import importlib.util
    import json

    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n  cluster.models.0.replicas: [1, 2]\n")
    args = ["sim", "sweep", str(spec), "--db", f"sqlite:///{tmp_path / 'runs.db'}", "--json"]
    first = CliRunner().invoke(app, [*args, "--backend", "serial"])
    assert first.exit_code == 0, first.output
    auto = "ray" if importlib.util.find_spec("ray") is not None else "pool"
    for asked, reported in (([], auto), (["--backend", "pool"], "pool"), (["--backend", "serial"], "serial")):
        again = CliRunner().invoke(app, [*args, *asked])
        assert again.exit_code == 0, again.output
        line = json.loads(again.stdout)
        assert (line["backend"], line["ran"], line["skipped"], line["resumed"]) == (reported, 0, 2, True), asked
