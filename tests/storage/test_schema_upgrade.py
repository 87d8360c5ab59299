"""What a schema upgrade says (`controlplane.storage.schema_upgrade`): what it applied, why it failed (a lock
another PostgreSQL session holds; a full disk), and an Alembic command line that works from any folder."""

from __future__ import annotations

import logging
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from controlplane.storage import StorageError, current_revisions, ensure_schema, make_engine, upgrade
from controlplane.storage.db import SCHEMA_HEAD
from controlplane.storage.schema_upgrade import absolute_url, alembic_command

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_an_upgrade_says_what_it_applied(db_url):
    upgrade(db_url, "0002")
    applied = upgrade(db_url)
    assert applied and applied.revisions == ("0003", "0004", "0005")
    assert applied.before == {"0002"} and applied.after == {SCHEMA_HEAD}
    assert applied.line.startswith("upgraded the schema of ") and applied.line.endswith(f" from 0002 to {SCHEMA_HEAD}")
    again = upgrade(db_url)
    assert not again and again.revisions == () and again.after == {SCHEMA_HEAD}


def test_a_command_s_upgrade_is_told_on_stderr_and_a_new_schema_is_not(sqlite_url, caplog):
    caplog.set_level(logging.WARNING, logger="controlplane.storage")
    engine = make_engine(sqlite_url)
    assert ensure_schema(engine) and not caplog.records  # (a new file: made quietly)
    engine.dispose()
    old = sqlite_url.replace("runs.db", "old.db")
    upgrade(old, "0003")
    engine = make_engine(old)
    assert ensure_schema(engine)
    engine.dispose()
    assert [r.getMessage() for r in caplog.records] == [f"upgraded the schema of {old} from 0003 to {SCHEMA_HEAD}"]


def test_a_failed_upgrade_says_it_was_rolled_back_and_the_database_is_unchanged(sqlite_url, monkeypatch):
    """A full disk said only `OperationalError: disk I/O error`: nothing of what happened to the database."""
    from alembic import command

    upgrade(sqlite_url, "0003")
    real = command.upgrade

    def then_a_full_disk(config, revision):
        real(config, revision)  # (every migration done, in the transaction: the failure must undo them)
        raise OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(command, "upgrade", then_a_full_disk)
    with pytest.raises(StorageError) as raised:
        upgrade(sqlite_url)
    assert str(raised.value) == (
        f"the schema upgrade of {sqlite_url} from 0003 to {SCHEMA_HEAD} failed: OperationalError: database or disk "
        f"is full; it ran in one transaction, which was rolled back: {sqlite_url} is unchanged, at revision 0003 "
        "(free space on its disk, then run the command again)")
    engine = make_engine(sqlite_url)
    assert current_revisions(engine) == {"0003"}
    with engine.connect() as conn:  # (0004's column is not there: the migrations were undone, not only the version)
        assert "max_output_tokens" not in {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(request)")}
    engine.dispose()


def _with_lock_timeout(url: str, ms: int) -> str:
    return f"{url}?options=-c%20lock_timeout%3D{ms}"


@pytest.mark.postgres
@pytest.mark.parametrize("lock_timeout_ms", [3000, 500])
def test_an_upgrade_waiting_for_a_lock_names_the_session_holding_it(pg_url, caplog, lock_timeout_ms):
    """An open read transaction (`BEGIN; SELECT count(*) FROM request`) made every command fail after 30 s with
    `LockNotAvailable: canceling statement due to lock timeout`, not saying what waited for what. Under 2 s
    (the watch's first look) the error looks for the holders itself."""
    caplog.set_level(logging.WARNING, logger="controlplane.storage")
    upgrade(pg_url, "0003")
    reader = create_engine(pg_url)
    try:
        with reader.connect() as conn:
            conn.execute(text("SET application_name = 'a-reader'"))
            conn.execute(text("SELECT count(*) FROM request")).scalar()  # (its transaction stays open)
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            with pytest.raises(StorageError) as raised:
                upgrade(_with_lock_timeout(pg_url, lock_timeout_ms))
            conn.rollback()
    finally:
        reader.dispose()
    said = str(raised.value)
    assert said.startswith(f"the schema upgrade of {pg_url}?options=-c+lock_timeout%3D{lock_timeout_ms} from 0003 to "
                           f"{SCHEMA_HEAD} waited lock_timeout ({'3s' if lock_timeout_ms == 3000 else '500ms'}) for ")
    assert f"for a lock on table request held by pid {pid} (postgres, a-reader, idle in transaction" in said
    assert "(LockNotAvailable: canceling statement due to lock timeout); it was rolled back" in said
    assert f"`SELECT pg_terminate_backend({pid})`), then run the command again" in said
    waited = [r.getMessage() for r in caplog.records if "is waiting for" in r.getMessage()]
    assert len(waited) == (1 if lock_timeout_ms > 2000 else 0)
    if waited:
        assert f"is waiting for a lock on table request held by pid {pid} (postgres, a-reader" in waited[0]
    engine = make_engine(pg_url)
    assert current_revisions(engine) == {"0003"}
    engine.dispose()


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
