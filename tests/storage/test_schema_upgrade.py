"""Alembic command lines that work from any folder (`controlplane.storage.schema_upgrade.alembic_command`)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from controlplane.storage import current_revisions, make_engine, upgrade
from controlplane.storage.schema_upgrade import absolute_url, alembic_command

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_alembic_command_works_from_any_folder(tmp_path, monkeypatch):
    """`alembic -x url=sqlite:///upg/v03.db downgrade 0004` (the hint of `db upgrade --db upg/v03.db`), run from
    the checkout as it said, made a new empty database there and left the user's as it was."""
    folder = tmp_path / "upg"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    upgrade("upg/v03.db")
    engine = make_engine("upg/v03.db")
    assert absolute_url(engine) == f"sqlite:///{folder / 'v03.db'}"
    command = alembic_command(engine, "downgrade 0004")
    assert command == f"alembic -c {REPO_ROOT / 'alembic.ini'} -x url=sqlite:///{folder / 'v03.db'} downgrade 0004"
    done = subprocess.run([sys.executable, "-m", *shlex.split(command)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert current_revisions(engine) == {"0004"} and not (REPO_ROOT / "upg").exists()
    engine.dispose()


@pytest.mark.parametrize(("url", "shown"), [
    ("sqlite:///runs.db", "sqlite:///{cwd}/runs.db"),
    ("sqlite:///file:runs.db?mode=ro&uri=true", "sqlite:///file%3A{cwd}/runs.db?mode=ro&uri=true"),
    ("sqlite:////abs/runs.db", "sqlite:////abs/runs.db"),
    ("sqlite://", "sqlite://"),
    ("postgresql+psycopg://me:pw@db:5432/runs", "postgresql+psycopg://me:***@db:5432/runs"),
])
def test_absolute_url(tmp_path, monkeypatch, url, shown):
    monkeypatch.chdir(tmp_path)
    engine = create_engine(url) if url.startswith("postgresql") else make_engine(url)
    assert absolute_url(engine) == shown.format(cwd=tmp_path)
    engine.dispose()
