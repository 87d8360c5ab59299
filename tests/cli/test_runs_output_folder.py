"""A file `controlplane runs ...` writes into a folder that does not exist: refused the same way by every
command, and no folder made (`controlplane.output_file.check_folder`)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> str:
    db = f"sqlite:///{tmp_path_factory.mktemp('runs') / 'runs.db'}"
    done = CliRunner().invoke(app, ["sim", "replay", "--limit", "30", "--db", db, "--json", "--no-progress"])
    assert done.exit_code == 0, done.output
    return db


@pytest.mark.parametrize("command, name", [(["export", "1", "-o"], "rows.csv"), (["plot", "1", "-o"], "run.png"),
                                           (["report", "1", "--html"], "report.html")])
def test_a_missing_folder_is_refused_by_every_command_alike(one_run, tmp_path, command, name):
    """`runs plot -o` and `runs report --html` made the missing folders (a typo made a tree), `runs export -o`
    refused: all refuse now, in the same words, before any work."""
    output = tmp_path / "no" / "such" / name
    done = CliRunner().invoke(app, ["runs", *command, str(output), "--db", one_run])
    assert done.exit_code == 2, done.output
    assert done.stderr.strip() == f"error: {output}: its folder {output.parent} does not exist"
    assert not (tmp_path / "no").exists()
