"""A SQLite file whose name or path is longer than SQLite opens: said so, not SQLite's "unable to open database
file (does its folder exist, and may this user write there?)" for a folder that exists
(`controlplane.storage.url.sqlite_path_too_long`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import ensure_schema, make_engine
from controlplane.storage.errors import StorageError

pytestmark = pytest.mark.usefixtures("no_controlplane_env")


def _deep(tmp_path: Path, total: int) -> Path:
    """A file ``total`` bytes long as an absolute path, in folders of 50-byte names that exist."""
    folder = tmp_path
    while len(os.fsencode(folder)) + 51 + 10 < total:
        folder = folder / ("d" * 50)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / ("z" * (total - len(os.fsencode(folder)) - 4) + ".db")


def test_a_name_too_long_is_said(tmp_path):
    name = "x" * 250 + ".db"
    with pytest.raises(StorageError, match=r"the SQLite file's name is too long \(253 bytes\): a file name here may "
                                           r"have 255 bytes, and SQLite's -journal .* at most 247"):
        make_engine(f"sqlite:///{tmp_path / name}")


def test_a_path_too_long_is_said_and_one_at_the_limit_works(tmp_path):
    with pytest.raises(StorageError, match=r"the SQLite file's path is too long \(505 bytes as an absolute path\): "
                                           r"SQLite opens paths of at most 512 bytes.* at most 504"):
        make_engine(f"sqlite:///{_deep(tmp_path, 505)}")
    engine = make_engine(f"sqlite:///{_deep(tmp_path, 504)}")  # (the longest SQLite opens: written)
    try:
        ensure_schema(engine)
    finally:
        engine.dispose()
    ok = Path("x" * 244 + ".db")  # (247 bytes: the longest name, in a short folder)
    engine = make_engine(f"sqlite:///{tmp_path / ok}")
    try:
        ensure_schema(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [["runs", "list"], ["sim", "replay", "--limit", "5", "--no-progress"]])
def test_the_commands_say_so(tmp_path, command):
    db = tmp_path / ("y" * 300 + ".db")
    done = CliRunner().invoke(app, [*command, "--db", str(db)])
    assert done.exit_code == 2, done.output
    assert "the SQLite file's name is too long (303 bytes)" in done.stderr
    assert "does its folder exist" not in done.stderr
