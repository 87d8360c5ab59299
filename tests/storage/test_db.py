"""Engine construction: defaults, SQLite pragmas, clear errors, timestamps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select, text

from controlplane.storage import StorageError, make_engine
from controlplane.storage.models import Request, Run


def test_default_url_is_sqlite_file_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = make_engine()
    try:
        assert engine.url.render_as_string() == "sqlite:///controlplane.db"
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert (tmp_path / "controlplane.db").exists()
    finally:
        engine.dispose()


def test_sqlite_parent_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "runs.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert path.exists()
    finally:
        engine.dispose()


def test_a_sqlite_folder_that_cannot_be_made_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text("a file where the folder should be\n")
    with pytest.raises(StorageError, match=r"cannot create the folder '.*trace\.csv' of the SQLite database "
                                           r"sqlite:///.*trace\.csv/runs\.db: File exists"):
        make_engine(f"sqlite:///{tmp_path / 'trace.csv' / 'runs.db'}")


def test_sqlite_pragmas(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_transactions_roll_back(sqlite_engine: Engine) -> None:
    """pysqlite's own transaction handling is replaced; a rollback must still undo writes."""
    values = dict(mode="sim", status="running", config={}, plugins=[], started_at=datetime.now(timezone.utc))
    with sqlite_engine.connect() as conn:
        with conn.begin() as tx:
            conn.execute(insert(Run.__table__).values(values))
            tx.rollback()
        assert conn.execute(select(Run.__table__.c.id)).first() is None


@pytest.mark.parametrize("url", ["postgresql:/host/db", "sqlite:x.db", "postgresql://u@h:port/db", "mysql:host"])
def test_malformed_url_names_it(url: str) -> None:
    """(A string that is not a URL is a SQLite file's path, as `--db` takes it: ``tests/storage/test_url.py``.)"""
    with pytest.raises(ValueError, match="malformed database URL") as info:
        make_engine(url)
    assert url in str(info.value)


def test_unknown_driver_names_url() -> None:
    with pytest.raises(ValueError, match=r"unknown or uninstalled database driver.*nosuchdb://u@h/d"):
        make_engine("nosuchdb://u@h/d")
    with pytest.raises(ValueError, match=r"uninstalled database driver.*postgresql\+nosuch://u@h/d"):
        make_engine("postgresql+nosuch://u@h/d")


def test_bare_postgresql_url_uses_psycopg3() -> None:
    engine = make_engine("postgresql://u@127.0.0.1:1/d")
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_malformed_url_hides_password() -> None:
    with pytest.raises(ValueError) as info:
        make_engine("postgresql+psycopg://user:s3cret@host:notaport/db")
    assert "s3cret" not in str(info.value)


def test_timestamps_round_trip_as_aware_utc(engine: Engine) -> None:
    started = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    table = Run.__table__
    with engine.begin() as conn:
        run_id = conn.execute(
            insert(table).values(mode="sim", status="running", config={}, plugins=[], started_at=started)
        ).inserted_primary_key[0]
    with engine.connect() as conn:
        stored = conn.execute(select(table.c.started_at).where(table.c.id == run_id)).scalar_one()
    assert stored == started
    assert stored.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused(engine: Engine) -> None:
    with pytest.raises(Exception, match="naive"):
        with engine.begin() as conn:
            conn.execute(
                insert(Run.__table__).values(
                    mode="sim", status="running", config={}, plugins=[], started_at=datetime(2025, 1, 1)
                )
            )


def test_delete_run_cascades(engine: Engine) -> None:
    with engine.begin() as conn:
        run_id = conn.execute(
            insert(Run.__table__).values(
                mode="sim", status="running", config={}, plugins=[], started_at=datetime.now(timezone.utc)
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(Request.__table__).values(
                run_id=run_id, request_id="r1", status="completed", arrival_s=0.0, prompt_tokens=1, output_tokens=1
            )
        )
        conn.execute(Run.__table__.delete().where(Run.__table__.c.id == run_id))
        assert conn.execute(select(Request.__table__.c.id)).first() is None


def test_prepare_schema_creates_nothing_and_a_new_file_gets_its_schema_without_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    # A fresh interpreter: whether Alembic is imported is the point.
    code = ("import sys\n"
            "from controlplane.storage.db import ensure_schema, make_engine, prepare_schema\n"
            f"new = make_engine('sqlite:///{tmp_path / 'new.db'}')\n"
            "print(prepare_schema(new))\n"  # not at head: nothing there yet
            "print('alembic' in sys.modules)\n"
            f"print(__import__('os').path.exists({str(tmp_path / 'new.db')!r}))\n"
            "print(ensure_schema(new))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False", "True"]  # no Alembic, nothing created, then made
    code = ("import sys\n"
            "from controlplane.storage.db import make_engine, prepare_schema\n"
            f"print(prepare_schema(make_engine('sqlite:///{tmp_path / 'new.db'}')))\n"  # exists now, at head
            "print('alembic' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_prepare_schema_says_a_database_not_at_head_needs_the_check(tmp_path: Path) -> None:
    from controlplane.storage.db import ensure_schema, prepare_schema

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
    assert prepare_schema(engine) is False
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    assert prepare_schema(engine) is False
    engine.dispose()


def _one_finished_run(db: Path) -> int:
    """A SQLite file at ``db`` with the schema and one finished run named "kept"; its id."""
    from controlplane.storage import RunRecorder, upgrade

    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    with RunRecorder(engine) as rec:
        run_id = rec.start_run(name="kept", mode="sim", trace=None, trace_format=None, seed=1, config={}, plugins=[],
                               started_at=datetime.now(timezone.utc))
        rec.finish_run(run_id, status="finished", summary={"num_requests": 0}, finished_at=datetime.now(timezone.utc),
                       wall_s=0.0, sim_end_s=0.0)
    engine.dispose()
    return run_id


def _as_unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` run so that file permissions bind: as is for a user, and for root without the
    capabilities that pass them by (``setpriv``), so a read-only folder is one for it too."""
    import os
    import shutil

    if os.getuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made to bind")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]


def test_reading_commands_work_on_a_database_in_a_read_only_folder(tmp_path: Path) -> None:
    import subprocess
    import sys

    from controlplane.storage.db import read_only_sqlite_url, sqlite_read_only

    folder = tmp_path / "copy"
    folder.mkdir()
    db = folder / "runs.db"
    run_id = _one_finished_run(db)
    assert "immutable=1" not in read_only_sqlite_url(db)  # (this process may write the folder)
    folder.chmod(0o555)
    db.chmod(0o444)
    try:
        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(_as_unprivileged([sys.executable, "-m", "controlplane.cli", *args]), cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120)

        url = subprocess.run(_as_unprivileged([sys.executable, "-c", "from pathlib import Path; from controlplane."
                                               f"storage.db import read_only_sqlite_url as u; print(u(Path({str(db)!r})))"]),
                             capture_output=True, text=True, timeout=60)
        assert "mode=ro&immutable=1" in url.stdout, url.stderr  # a read-only folder and no -wal: nothing can write

        probe = subprocess.run(_as_unprivileged([sys.executable, "-c", "import os, sys; "
                                                 f"sys.exit(os.access({str(folder)!r}, os.W_OK))"]))
        assert probe.returncode == 0, "the folder is writable for the command: the test would prove nothing"
        listed = cli("runs", "list", "--db", f"sqlite:///{db}")
        assert listed.returncode == 0, listed.stderr
        assert "kept" in listed.stdout and "finished" in listed.stdout
        shown = cli("runs", "show", str(run_id), "--db", f"sqlite:///{db}")
        assert shown.returncode == 0 and f"run {run_id}" in shown.stdout, shown.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["runs.db"]  # nothing written next to it
        db.chmod(0o000)  # not even readable: one line saying why
        failed = cli("runs", "list", "--db", f"sqlite:///{db}")
        assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
        assert failed.stderr.count("\n") == 1 and "cannot be read read-only" in failed.stderr, failed.stderr
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)
    assert not sqlite_read_only(db)


def test_a_postgresql_server_that_never_answers_fails_the_connection_in_time(monkeypatch) -> None:
    # A real listening socket that accepts and says nothing (a host that drops the session): without a
    # connect timeout each attempt would wait for the OS's TCP timeout, about 2 minutes.
    import socket
    import time

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from controlplane.storage import db

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        monkeypatch.setattr(db, "CONNECT_TIMEOUT_S", 1)
        for url in (f"postgresql://u@127.0.0.1:{port}/x", f"postgresql://u@127.0.0.1:{port}/x?connect_timeout=2"):
            engine = db.make_engine(url)
            start = time.monotonic()
            with pytest.raises(OperationalError):
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            took = time.monotonic() - start
            engine.dispose()
            limit = 2 if "connect_timeout=2" in url else 1  # the URL's own setting wins
            assert limit * 0.8 <= took < limit * 2 + 3, (url, took)
    finally:
        silent.close()


def _wal_without_shm(tmp_path: Path) -> Path:
    """A copy of a stored run's database whose last write (the run renamed 'late') is only in its
    ``-wal`` file, with no ``-shm`` beside it (copied while a writer held it open, or left by a
    writer killed after a crash that removed the ``-shm``)."""
    import shutil
    import sqlite3

    src = tmp_path / "src" / "runs.db"
    _one_finished_run(src)
    writer = sqlite3.connect(src, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE run SET name = 'late'")
        copy = tmp_path / "copy"
        copy.mkdir()
        shutil.copy(src, copy / "runs.db")
        shutil.copy(f"{src}-wal", copy / "runs.db-wal")
    finally:
        writer.close()
    assert sorted(p.name for p in copy.iterdir()) == ["runs.db", "runs.db-wal"]
    return copy / "runs.db"


def _run_names(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(Run.name)).scalars())
    finally:
        engine.dispose()


def test_a_wal_without_its_shm_is_read_through_not_ignored(tmp_path: Path) -> None:
    from urllib.parse import quote

    from controlplane.storage.db import read_only_sqlite_url

    db = _wal_without_shm(tmp_path)
    ignoring = f"sqlite+pysqlite:///file:{quote(str(db))}?mode=ro&immutable=1&uri=true"
    assert _run_names(ignoring) == ["kept"]  # (what immutable=1 reads: the rename, only in the -wal, is missed)
    url = read_only_sqlite_url(db)
    assert "immutable" not in url
    assert _run_names(url) == ["late"]


def test_a_wal_without_its_shm_in_a_read_only_folder_is_one_error_line_not_missing_rows(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = _wal_without_shm(tmp_path)
    db.parent.chmod(0o555)
    try:
        result = subprocess.run(_as_unprivileged([sys.executable, "-m", "controlplane.cli", "runs", "list", "--db",
                                                  f"sqlite:///{db}"]), capture_output=True, text=True, timeout=120)
    finally:
        db.parent.chmod(0o755)
    assert result.returncode == 2 and "kept" not in result.stdout, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "runs.db-wal file holds writes not yet in runs.db" in result.stderr, \
        result.stderr
    assert sorted(p.name for p in db.parent.iterdir()) == ["runs.db", "runs.db-wal"]  # nothing written next to it


def test_a_sqlite_connection_waits_long_for_another_writers_lock(tmp_path):
    """sqlite3's 5 s ran out ("database is locked") while three processes made one new file's schema; a URL's own
    ``?timeout=`` still wins."""
    from controlplane.storage.db import SQLITE_BUSY_TIMEOUT_S

    for url, expected in ((f"sqlite:///{tmp_path / 'a.db'}", SQLITE_BUSY_TIMEOUT_S),
                          (f"sqlite:///{tmp_path / 'b.db'}?timeout=2", 2.0)):
        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == int(expected * 1000)
        engine.dispose()


def test_psycopg_errors_it_ignores_are_not_printed(caplog) -> None:
    """psycopg logs at WARNING a pipeline it could not end on a lost connection (``error ignored
    terminating <psycopg.Pipeline [BAD] ...>``) while the error raised is reported by the recorder:
    a PostgreSQL engine sends those to DEBUG; psycopg's other warnings stay."""
    import logging

    from controlplane.storage import make_engine

    make_engine("postgresql+psycopg://nobody@127.0.0.1:1/x").dispose()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("psycopg").warning("error ignored terminating %r: %s", "<psycopg.Pipeline [BAD]>",
                                             "the connection is lost\nno connection to the server")
        logging.getLogger("psycopg.transaction").warning("error ignored in rollback of %s: %s", "tx",
                                                         "canceling statement due to user request")
        logging.getLogger("psycopg").warning("unknown PostgreSQL timezone: %r; will use UTC", "Mars/Base")
    assert [r.getMessage() for r in caplog.records] == ["unknown PostgreSQL timezone: 'Mars/Base'; will use UTC"]


def test_a_closed_run_s_rows_are_in_the_sqlite_file_alone(tmp_path):
    """A replay's writer process leaves without closing its connections: the last run's end sat in the
    ``-wal`` file (git clean removes it; a copy of the .db read the run as running, then crashed). The
    recorder's close folds the log into the file."""
    import shutil
    import sqlite3

    from controlplane.testing import make_config, make_trace, replay_with

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    replay_with(trace=make_trace(200), config=make_config(storage={"url": url}), db_url=url)
    shutil.copy(tmp_path / "runs.db", tmp_path / "copy.db")  # (the .db alone, as a backup or `git clean` leaves it)
    copy = sqlite3.connect(f"file:{tmp_path / 'copy.db'}?mode=ro", uri=True)
    assert copy.execute("select status from run").fetchall() == [("finished",)]
    assert copy.execute("select count(*) from request").fetchone() == (200,)
    copy.close()


@pytest.mark.postgres
def test_a_postgresql_write_waits_for_a_lock_at_most_lock_timeout(pg_url):
    """A table held by `LOCK TABLE` made a replay's writes wait for ever, silently: they now give up after
    LOCK_TIMEOUT_S, as an outage (the recorder keeps the rows and says so); a URL's own options win."""
    from sqlalchemy.engine import make_url

    from controlplane.storage.db import LOCK_TIMEOUT_S

    engine = make_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(text("show lock_timeout")).scalar() == f"{int(LOCK_TIMEOUT_S)}s"
    engine.dispose()
    own = make_engine(make_url(pg_url).update_query_dict({"options": "-c lock_timeout=2500"}))
    with own.connect() as conn:
        assert conn.execute(text("show lock_timeout")).scalar() == "2500ms"
    own.dispose()
