"""`--json` of the commands that list or show (runs list, runs sweeps, runs show, plugins list): one JSON
document on stdout, what the table says and more, for scripts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> str:
    db = f"sqlite:///{tmp_path_factory.mktemp('json') / 'runs.db'}"
    for limit in ("30", "50"):
        done = CliRunner().invoke(app, ["sim", "replay", "--limit", limit, "--db", db, "--json", "--no-progress"])
        assert done.exit_code == 0, done.output
    return db


def _json(*args: str):
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    assert len(done.stdout.strip().splitlines()) == 1, done.stdout
    return json.loads(done.stdout)


def test_runs_list_json(runs):
    listed = _json("runs", "list", "--db", runs, "--json")
    assert [r["id"] for r in listed] == [2, 1]  # newest first, as the table
    first = listed[1]
    assert (first["mode"], first["status"], first["num_requests"], first["num_completed"]) == ("sim", "finished", 30, 30)
    assert first["trace"].endswith("AzureLLMInferenceTrace_code.csv") and first["started_at"][4] == "-"
    assert first["counted_from_rows"] is False and first["status_notes"] == [] and "config" not in first
    assert _json("runs", "list", "--db", runs, "--json", "--status", "crashed") == []


def test_runs_sweeps_json(runs):
    assert _json("runs", "sweeps", "--db", runs, "--json") == []


def test_runs_show_json(runs):
    shown = _json("runs", "show", "1", "--db", runs, "--json")
    assert shown["id"] == 1 and shown["summary"]["num_requests"] == 30 and shown["config"]["seed"] == 0
    assert {"decision_counts", "plugin_errors", "plugins", "started_at"} <= set(shown)
    assert sum(c["count"] for c in shown["decision_counts"]) > 0
    timeline = _json("runs", "show", "1", "--db", runs, "--json", "--timeline")
    assert timeline["run_id"] == 1 and timeline["scale_decisions"]
    assert all({"time_s", "plugin", "action", "payload", "reason"} <= set(d) for d in timeline["scale_decisions"])


def test_plugins_list_json():
    from controlplane.plugin_manager import discover_plugins

    listed = _json("plugins", "list", "--json")
    found = discover_plugins()
    assert [p["name"] for p in listed] == sorted(found)
    least = next(p for p in listed if p["name"] == "least-loaded")
    assert least["hooks"] == list(found["least-loaded"].hooks) and least["error"] is None
    assert least["description"] == found["least-loaded"].doc and isinstance(least["default"], bool)
