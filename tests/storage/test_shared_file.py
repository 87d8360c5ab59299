"""A writer process never writes a SQLite file its parent had open when it forked: SQLite's record of
its locks is copied to the child, its locks are not, and the child's rows were lost without an error."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from controlplane.storage import make_engine
from controlplane.storage.early import ENV_SWITCH, EarlyWriter, early_writer_usable
from controlplane.storage.shared_file import open_files, open_here, sqlite_path
from controlplane.testing import make_config
from tests.fixtures.common import azure_head

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer process is forked")


def _stored(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as c:
        return c.execute("select id, status, (select count(*) from request where run_id = run.id) from run "
                         "order by id").fetchall()


def test_sqlite_path_names_a_file_or_none():
    assert sqlite_path("sqlite:///runs.db") == "runs.db"
    assert sqlite_path("sqlite+pysqlite:////tmp/x/runs.db?timeout=5") == "/tmp/x/runs.db"
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true",
                "postgresql+psycopg://u@h/db", "not a url"):
        assert sqlite_path(url) is None, url


def test_open_here_sees_a_file_this_process_holds_open(tmp_path: Path):
    path = tmp_path / "runs.db"
    url = f"sqlite:///{path}"
    assert open_here(url, open_files()) is False  # not there yet
    conn = sqlite3.connect(path)
    conn.execute("create table t (x)")
    assert open_here(url, open_files()) is True
    conn.close()
    assert open_here(url, open_files()) is False
    assert open_here("postgresql+psycopg://u@h/db", open_files()) is False


def test_a_writer_cannot_write_a_file_open_when_it_was_forked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_SWITCH, "1")
    url, other = f"sqlite:///{tmp_path / 'runs.db'}", f"sqlite:///{tmp_path / 'other.db'}"
    reader = make_engine(url)
    with reader.connect() as conn:  # the pool keeps the file open after this
        conn.execute(text("select 1"))
    assert early_writer_usable(url) is False and early_writer_usable(other) is True
    writer = EarlyWriter()
    try:
        assert writer.can_write(url) is False and writer.can_write(other) is True
    finally:
        writer.discard()
    reader.dispose()  # closed before the fork: the child shares nothing
    writer = EarlyWriter()
    try:
        assert writer.can_write(url) is True and early_writer_usable(url) is True
    finally:
        writer.discard()


def test_a_run_beside_an_open_reader_keeps_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A reader's engine open when the run starts and disposed during it (the moment that made the
    parent delete the write-ahead log the child was writing): the run's rows all land."""
    from sim.replay import replay

    monkeypatch.setenv(ENV_SWITCH, "1")
    path = tmp_path / "runs.db"
    url = f"sqlite:///{path}"
    replay(azure_head(20), make_config(storage={"url": url}))  # the schema, and a run before
    reader = make_engine(url)
    with reader.connect() as conn:
        conn.execute(text("select count(*) from run"))
    result = replay(azure_head(300), make_config(storage={"url": url}),
                    on_progress=lambda arrived, now: reader.dispose())
    assert result.summary["num_requests"] == 300
    assert _stored(path) == [(1, "finished", 20), (2, "finished", 300)]


def test_an_inline_run_then_a_run_with_a_writer_keep_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The CI failure: the first run wrote inline (no CPU free at its start), the second forked a
    writer while the first run's engine still held the file, then freed that engine."""
    from sim.replay import replay

    path = tmp_path / "runs.db"
    url = f"sqlite:///{path}"
    monkeypatch.setenv(ENV_SWITCH, "0")
    replay(azure_head(40), make_config(storage={"url": url}))
    monkeypatch.setenv(ENV_SWITCH, "1")
    replay(azure_head(60), make_config(storage={"url": url}))
    assert _stored(path) == [(1, "finished", 40), (2, "finished", 60)]
