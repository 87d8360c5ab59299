"""`controlplane runs compare --json`: everything the tables and notes say (the decisions' differences, the
runs' different workloads), and the notes on stderr in table mode."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli.runs_timeline import compare_decisions, decision_comparisons
from controlplane.storage import make_engine

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> str:
    """Two replays of the bundled trace with its run config (the SLO planner scales): 30 and 60 requests."""
    db = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'runs.db'}"
    for limit in ("30", "60"):
        done = CliRunner().invoke(app, ["sim", "replay", "--limit", limit, "--db", db, "--json", "--no-progress"])
        assert done.exit_code == 0, done.output
    return db


def _compare(db: str, *args: str):
    done = CliRunner().invoke(app, ["runs", "compare", "1", "2", "--db", db, *args])
    assert done.exit_code == 0, done.output
    return done


def test_json_says_the_runs_replayed_different_requests(two_runs):
    """`--json` dropped the note the tables end with: the differences mixed the workload's effect unsaid."""
    found = json.loads(_compare(two_runs, "--json", "--no-ci").stdout)
    assert found["workloads_differ"] is True
    assert found["workloads_note"].startswith("note: the runs replayed different requests (run 1: ")
    assert "(limit=60)" in found["workloads_note"] and "decisions" not in found
    same = json.loads(CliRunner().invoke(app, ["runs", "compare", "1", "1", "--db", two_runs, "--json",
                                               "--no-ci"]).stdout)
    assert same["workloads_differ"] is False and same["workloads_note"] is None


def test_json_has_the_decisions_with_decisions(two_runs):
    """`--json --decisions` ignored --decisions."""
    found = json.loads(_compare(two_runs, "--json", "--no-ci", "--decisions").stdout)
    engine = make_engine(two_runs)
    try:
        expected = decision_comparisons(engine, 1, 2)
        assert len(compare_decisions(engine, 1, 2)) == len(expected)
    finally:
        engine.dispose()
    assert found["decisions"] == json.loads(json.dumps(expected))
    runs = found["decisions"][0]
    assert runs["kind"] == "runs" and (runs["a"], runs["b"]) == (1, 2)
    assert runs["up_to_s"] is not None and runs["shorter"] == 1
    assert all({"model", "start_s", "end_s", "a", "b"} <= set(d) for d in runs["differences"])


def test_table_mode_s_notes_go_to_stderr(two_runs):
    """The workload note went to stdout, between the tables, while other commands' notes go to stderr."""
    done = _compare(two_runs, "--no-ci")
    assert "note: the runs replayed different requests" in done.stderr
    assert "note:" not in done.stdout and "run 1 vs run 2" in done.stdout


def test_json_mode_s_notes_go_to_stderr_too(two_runs):
    """With --json the notes were in the JSON alone, though every note goes to stderr: a CI log showed none."""
    done = _compare(two_runs, "--json", "--no-ci")
    found = json.loads(done.stdout)
    assert found["notes"] == [found["workloads_note"]]
    assert done.stderr.splitlines() == found["notes"]
