"""A sweep some of whose runs failed: its status says so (`failed`, which `runs sweeps --status
failed` selects; it was `finished`, as if every run had run), and its report lists the failed
points with their errors (it said "status finished, 1 runs stored" and nothing of the other)."""

from __future__ import annotations

import html

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.report.html import sweep_report
from controlplane.storage import make_engine
from sim.sweep import load_spec, run_sweep

pytestmark = pytest.mark.usefixtures("wide_consoles")


@pytest.fixture
def wide_consoles(monkeypatch):
    from controlplane.cli import common

    for console in (common.out, common.err):
        monkeypatch.setattr(console, "_width", 400)


def test_a_sweep_with_failed_runs_is_failed_and_its_report_lists_them(tmp_path, monkeypatch):
    monkeypatch.setattr("sim.sweep.spec.check_points", lambda *a: None)  # (the spec's own check refuses it first)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data={"name": "half", "trace": {"limit": 60},
                             "space": {"cluster.models.0.latency_model": ["linear", "nonsense"]}})  # refused by the run
    result = run_sweep(loaded, db, backend="serial")
    assert len(result.failed) == 1
    failed = CliRunner().invoke(app, ["runs", "sweeps", "--status", "failed", "--db", db])
    assert failed.exit_code == 0, failed.output
    assert " half " in failed.stdout and " failed " in failed.stdout and " 1/2 " in failed.stdout
    finished = CliRunner().invoke(app, ["runs", "sweeps", "--status", "finished", "--db", db])
    assert "half" not in finished.stdout and "no finished sweeps" in finished.stderr
    engine = make_engine(db)
    try:
        page = html.unescape(sweep_report(engine, result.sweep_id))
    finally:
        engine.dispose()
    assert "status failed, 1 runs stored, " in page and ">1 failed<" in page
    assert "failed runs (1)" in page
    assert '{"cluster.models.0.latency_model": "nonsense"}' in page
    assert "unknown latency model 'nonsense'" in page
