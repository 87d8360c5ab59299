"""A new SQLite file's schema made from the kept statements is the one Alembic's migrations make."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sqlalchemy import text

from controlplane.storage.db import SCHEMA_HEAD, ensure_schema, make_engine, upgrade
from controlplane.storage.sqlite_schema import STATEMENTS


def _schema(path: Path) -> tuple:
    con = sqlite3.connect(path)
    try:
        return (con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid").fetchall(),
                {k: con.execute(f"PRAGMA {k}").fetchall()
                 for k in ("journal_mode", "user_version", "application_id", "page_size", "auto_vacuum", "encoding")},
                con.execute("SELECT * FROM alembic_version").fetchall())
    finally:
        con.close()


def test_the_kept_statements_make_the_file_alembic_makes(tmp_path: Path) -> None:
    migrated, kept = tmp_path / "migrated.db", tmp_path / "kept.db"
    engine = make_engine(f"sqlite:///{migrated}")
    upgrade(engine)
    engine.dispose()
    engine = make_engine(f"sqlite:///{kept}")
    assert ensure_schema(engine) is True and ensure_schema(engine) is False
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from controlplane.storage.models import metadata

    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    engine.dispose()
    fresh = [row[3] for row in _schema(migrated)[0] if row[3] is not None and row[1] != "sqlite_sequence"]
    assert _schema(kept) == _schema(migrated), (
        "a migration changed the schema: paste these into controlplane/storage/sqlite_schema.py's STATEMENTS\n"
        + "\n".join(repr(s) for s in fresh))
    assert list(STATEMENTS) == fresh and _schema(kept)[2] == [(SCHEMA_HEAD,)]


def test_a_database_holding_anything_is_left_to_alembic(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE unrelated (x INTEGER)")
    con.commit()
    con.close()
    engine = make_engine(f"sqlite:///{path}")
    assert ensure_schema(engine) is True  # Alembic's migrations, beside the other table
    with engine.connect() as connection:
        tables = {r[0] for r in connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))}
    assert {"unrelated", "run", "request", "alembic_version"} <= tables
    engine.dispose()


def test_two_processes_starting_on_one_new_file_make_it_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    results: list[bool] = []
    engines = [make_engine(f"sqlite:///{path}") for _ in range(4)]
    threads = [threading.Thread(target=lambda e=e: results.append(ensure_schema(e))) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert _schema(path)[2] == [(SCHEMA_HEAD,)]
    for e in engines:
        e.dispose()


def test_the_kept_statements_are_read_at_the_head() -> None:
    from controlplane.storage import sqlite_schema

    assert sqlite_schema.REVISION == SCHEMA_HEAD, "move REVISION with SCHEMA_HEAD after pasting the new statements"


def test_statements_of_another_revision_are_not_used(tmp_path: Path, monkeypatch) -> None:
    from controlplane.storage import sqlite_schema

    monkeypatch.setattr(sqlite_schema, "REVISION", "0000")
    monkeypatch.setattr(sqlite_schema, "STATEMENTS", ("CREATE TABLE wrong (x INTEGER)",))
    path = tmp_path / "stale.db"
    engine = make_engine(f"sqlite:///{path}")
    assert ensure_schema(engine) is True  # made by Alembic's migrations, not the stale statements
    engine.dispose()
    tables = {row[1] for row in _schema(path)[0] if row[0] == "table"}
    assert "wrong" not in tables and {"run", "request", "alembic_version"} <= tables
    assert _schema(path)[2] == [(SCHEMA_HEAD,)]
