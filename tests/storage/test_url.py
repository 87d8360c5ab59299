"""`database_url`: what `--db` and `storage.url` accept (a URL, or a SQLite file's path)."""

from __future__ import annotations

import os

import pytest

from controlplane.config import RunConfig
from controlplane.storage.url import database_url


@pytest.mark.parametrize("url", ["sqlite:///runs.db", "sqlite:////tmp/x.db", "sqlite://",
                                 "postgresql+psycopg://me@127.0.0.1:5432/test"])
def test_a_url_is_kept_as_given(url):
    assert database_url(url) == url


@pytest.mark.parametrize(("path", "url"), [("runs.db", "sqlite:///runs.db"), ("/tmp/x.db", "sqlite:////tmp/x.db"),
                                           ("out/runs.sqlite", "sqlite:///out/runs.sqlite"),
                                           ("  runs.db ", "sqlite:///runs.db")])
def test_a_path_is_a_sqlite_file(path, url):
    assert database_url(path) == url


def test_home_is_expanded():
    assert database_url("~/runs.db") == f"sqlite:///{os.path.expanduser('~')}/runs.db"


def test_a_scheme_without_slashes_is_left_for_the_parser_to_refuse():
    assert database_url("postgresql:/host/db") == "postgresql:/host/db"  # (a typo: not a file named so)


def test_the_config_takes_a_path_too():
    assert RunConfig.model_validate({"storage": {"url": "runs.db"}}).storage.url == "sqlite:///runs.db"
    assert RunConfig().storage.url == "sqlite:///controlplane.db"


@pytest.mark.parametrize("name", ["my?runs.db", "a%20b.db", "x#y.db", "a:b.db", "runs.db?mode=ro", "c é.db"])
def test_a_path_is_the_file_it_names_whatever_its_characters(tmp_path, monkeypatch, name):
    """``my?runs.db`` made the files ``my``, ``my-wal``, ``my-shm`` (a URL's query), ``a%20b.db`` made ``a b.db``
    and ``a:b.db`` was "malformed database URL"."""
    from controlplane.storage import make_engine
    from controlplane.storage.db import sqlite_path

    monkeypatch.chdir(tmp_path)
    engine = make_engine(database_url(name))
    try:
        assert sqlite_path(engine) is not None and os.path.basename(str(sqlite_path(engine))) == name
        with engine.begin() as conn:
            conn.exec_driver_sql("create table t (x int)")
    finally:
        engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_the_follow_up_command_line_quotes_a_path_with_a_space():
    import shlex

    from controlplane.cli.common import db_option

    option, _ = db_option(database_url("runs of mine.db"), "sqlite:///controlplane.db")
    assert shlex.split(option) == ["--db", "sqlite:///runs of mine.db"]


@pytest.mark.parametrize("given", ["runs.db", "sub/runs.db", "ABSOLUTE", "PATH", "my?runs.db", "a:b.db", "x#y.db"])
def test_make_engine_takes_a_sqlite_files_path_as_the_cli_does(tmp_path, monkeypatch, given):
    """`make_engine('runs.db')` was "malformed database URL 'runs.db'" though docs/schema.md says it takes a
    SQLite file's path, as `--db` does."""
    from pathlib import Path

    from controlplane.storage import ensure_schema, make_engine
    from controlplane.storage.db import sqlite_path

    monkeypatch.chdir(tmp_path)
    name = "abs.db" if given in ("ABSOLUTE", "PATH") else given
    url = {"ABSOLUTE": str(tmp_path / name), "PATH": Path(name)}.get(given, given)
    engine = make_engine(url)
    try:
        assert sqlite_path(engine).resolve() == (tmp_path / name).resolve()
        ensure_schema(engine)
    finally:
        engine.dispose()
    assert (tmp_path / name).is_file()
    assert make_engine(database_url(str(url))).url == engine.url  # (the same URL as the CLI's --db)
