"""What a run's start refuses before it touches the database (`controlplane.cli.config_checks`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


@pytest.mark.parametrize("command", [
    ["sim", "replay", "--limit", "5"],
    ["live-replay", "--limit", "1", "--no-progress"],
    ["daemon", "--port", "0"],
    ["sim", "sweep", str(ROOT / "examples" / "sweep.yaml"), "--backend", "serial"],
    ["sim", "search", str(ROOT / "examples" / "search.yaml"), "--backend", "serial"],
])
@pytest.mark.parametrize("url", [False, True])
def test_a_database_in_a_folder_that_does_not_exist_is_refused_and_nothing_is_made(tmp_path, monkeypatch, command,
                                                                                   url):
    """`sim replay --limit 5 --db /nonexistent/dir/x.db` made the folders and stored the run there."""
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    result = CliRunner().invoke(app, [*command, "--db", f"sqlite:///{missing}" if url else str(missing)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"{missing.parent}: no such folder" in result.stderr and "check --db" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no folder, no database


def test_a_new_database_in_a_folder_that_exists_is_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for db in ("runs/a.db", "b.db", f"sqlite:///{tmp_path / 'runs' / 'c.db'}"):
        result = CliRunner().invoke(app, ["sim", "replay", "--limit", "5", "--db", db, "--json"])
        assert result.exit_code == 0, (result.output, result.exception)
    assert {"a.db", "c.db"} <= {p.name for p in (tmp_path / "runs").iterdir()} and (tmp_path / "b.db").is_file()
