"""The line `sim replay` ends with on stdout (where its run is stored, the command that shows it) is one line
in a log or a pipe however long the database's path: a command split across two lines does not paste."""

from __future__ import annotations

from typer.testing import CliRunner

from controlplane.cli import app


def test_the_stored_in_line_is_never_split(tmp_path):
    folder = tmp_path / ("a_rather_long_folder_name_for_ci_artifacts" * 2) / "build-12345" / "databases"
    folder.mkdir(parents=True)
    db = f"sqlite:///{folder / 'regression-baseline.db'}"
    result = CliRunner().invoke(app, ["sim", "replay", "--limit", "5", "--db", db, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"see `controlplane runs show 1 --db {db}`" in result.stdout.splitlines()[-1]
