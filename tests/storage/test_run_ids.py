"""A run's id is never given twice, and a new run never adopts the rows of a run deleted without them.

SQLite gave a new row the largest id plus one, so the next run took the id of the run deleted last; a run
deleted with plain SQL (``sqlite3 x.db "delete from run where id=2"``: no foreign-key pragma, no cascade)
left its rows, which that next run adopted (its own request rows refused as repeated ids, ``runs export``
giving the deleted run's 300 rows). Revision 0005 rebuilds ``run`` (and ``sweep``) with AUTOINCREMENT.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text

from controlplane.storage import RunRecorder, current_revisions, make_engine, upgrade
from controlplane.storage.db import SCHEMA_HEAD, _alembic_config
from controlplane.storage.orphans import CHILD_TABLES, OrphanRows, delete_run
from controlplane.storage.sqlite_start import start_run as stdlib_start_run
from tests.storage.support import STARTED, decision_row, metric_row, request_row, start_run, worker_event_row

REPO_ROOT = Path(__file__).resolve().parents[2]
_RUN_VALUES = dict(name="unit", mode="sim", trace=None, trace_format=None, seed=0, config={"a": 1}, plugins=[],
                   started_at=STARTED)


def _record(engine: Engine, n: int) -> int:
    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
        for i in range(n):
            rec.add_request(request_row(i))
            rec.add_decision(decision_row(i))
            rec.add_metric(metric_row(i))
            rec.add_worker_event(worker_event_row(i))
        rec.flush()
        assert not rec.refused
    return run_id


def _counts(engine: Engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT run_id, count(*) FROM {t} GROUP BY run_id ORDER BY run_id")).all()
                for t in CHILD_TABLES}


def _plain_delete(engine: Engine, url: str, run_id: int) -> None:
    """What the analyst did: plain SQL, outside controlplane (on SQLite no foreign-key pragma)."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(engine.url.database)
        con.execute(f"DELETE FROM run WHERE id = {run_id}")
        con.commit()
        con.close()
    else:
        with engine.begin() as conn:
            conn.execute(text(f"DELETE FROM run WHERE id = {run_id}"))


def test_a_run_deleted_with_plain_sql_gives_its_id_to_no_other_run(engine: Engine, db_url: str) -> None:
    assert (_record(engine, 10), _record(engine, 30)) == (1, 2)
    _plain_delete(engine, db_url, 2)
    assert _record(engine, 5) == 3  # (was 2, whose 30 leftover request rows refused its 5 as "repeated ids")
    counts = _counts(engine)
    if db_url.startswith("sqlite"):  # the deleted run's rows stay (no cascade), under their own id only
        assert counts["request"] == [(1, 10), (2, 30), (3, 5)]
    else:  # PostgreSQL cascades whatever the client, and its sequence never gives an id twice
        assert counts["request"] == [(1, 10), (3, 5)]
    assert delete_run(engine, 2)["request"] == (30 if db_url.startswith("sqlite") else 0)
    assert _counts(engine)["request"] == [(1, 10), (3, 5)]
    assert _record(engine, 1) == 4


def test_a_new_runs_id_that_names_rows_already_starts_no_run(engine: Engine, db_url: str) -> None:
    """Defence in depth (a sequence set back by hand): the run is refused, saying why and what to do, and
    nothing is inserted; the standard-library start of a SQLite file's run (writer process) leaves it to
    the engine's way, which says so."""
    orphan = "INSERT INTO metric_sample (run_id, time_s, name, value) VALUES (1, 0, 'x', 1)"  # (no run 1 yet)
    if db_url.startswith("sqlite"):  # plain SQL: no foreign-key pragma
        con = sqlite3.connect(engine.url.database)
        con.execute(orphan)
        con.commit()
        con.close()
    else:  # (foreign keys not enforced: a superuser's replica role)
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(orphan))
    if db_url.startswith("sqlite"):
        assert stdlib_start_run(engine.url.database, _RUN_VALUES, head=SCHEMA_HEAD) is None
    with RunRecorder(engine) as rec, pytest.raises(OrphanRows) as info:
        start_run(rec)
    message = str(info.value)
    assert "new id 1 already names rows in metric_sample" in message
    assert "controlplane runs delete 1 --yes" in message
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM run")).scalar() == 0
    assert delete_run(engine, 1) == {**dict.fromkeys(CHILD_TABLES, 0), "metric_sample": 1, "run": 0}
    if db_url.startswith("sqlite"):  # (the refused insert was rolled back with its sequence; PostgreSQL's spent 1)
        assert stdlib_start_run(engine.url.database, _RUN_VALUES, head=SCHEMA_HEAD) == 1


def _at_0004_with_orphans(path: Path) -> Engine:
    """A file at 0004 holding runs 1 and 2, run 3's rows without their run (deleted with plain SQL), rows of a
    run 9 never seen, and sweep 1 with a run naming a sweep 5."""
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine, "0004")
    for n in (3, 4, 2):
        _record(engine, n)
    with sqlite3.connect(path) as conn:  # (plain SQL, as an analyst's: no foreign-key pragma)
        conn.execute("INSERT INTO iteration (run_id, worker_id, batch_id, start_s, end_s, num_prefill_tokens, "
                     "num_prefill_seqs, num_decode_seqs, sum_decode_context, sum_prefill_context, iteration_s) "
                     "VALUES (9, 'w', 1, 0, 1, 1, 1, 1, 1, 1, 1)")
        conn.execute("INSERT INTO sweep (id, kind, status, spec, spec_hash, created_at) "
                     "VALUES (1, 'grid', 'finished', '{}', 'h', '2025-06-01 08:00:00')")
        conn.execute("UPDATE run SET sweep_id = 5, sweep_key = 'k' WHERE id = 1")
    _plain_delete(engine, "sqlite", 3)
    return engine


def _seq(path: Path) -> dict[str, int]:
    con = sqlite3.connect(path)
    try:
        return dict(con.execute("SELECT name, seq FROM sqlite_sequence"))
    finally:
        con.close()


def test_revision_0005_keeps_every_row_and_seeds_the_ids_past_every_run_id_stored(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = _at_0004_with_orphans(path)
    before = _counts(engine)
    with engine.connect() as conn:
        runs_before = conn.execute(text("SELECT * FROM run ORDER BY id")).all()
    upgrade(engine)  # (its connections have foreign keys on: dropping the old run table must not cascade)
    assert current_revisions(engine) == {SCHEMA_HEAD}
    assert _counts(engine) == before and before["request"] == [(1, 3), (2, 4), (3, 2)]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT * FROM run ORDER BY id")).all() == runs_before
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # (on again for the pooled connection)
    assert _seq(path) == {"run": 9, "sweep": 5}
    assert _record(engine, 1) == 10
    con = sqlite3.connect(path)
    assert "AUTOINCREMENT" in con.execute("SELECT sql FROM sqlite_master WHERE name = 'run'").fetchone()[0]
    assert con.execute("PRAGMA foreign_key_check(request)").fetchall() == [("request", 8, "run", 0),
                                                                           ("request", 9, "run", 0)]  # run 3's
    con.close()
    engine.dispose()


def test_revision_0005_refuses_a_connection_with_foreign_keys_on(tmp_path: Path) -> None:
    """Dropping the old run table with foreign keys on would first delete every run's rows (cascade)."""
    path = tmp_path / "old.db"
    engine = _at_0004_with_orphans(path)
    before = _counts(engine)
    config = _alembic_config()
    with engine.begin() as conn, pytest.raises(RuntimeError, match="would delete every run's rows"):
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    assert current_revisions(engine) == {"0004"} and _counts(engine) == before
    engine.dispose()


def test_alembics_own_command_line_upgrades_without_losing_a_row(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = _at_0004_with_orphans(path)
    before = _counts(engine)
    env = {k: v for k, v in os.environ.items() if k != "CONTROLPLANE_DB_URL"}
    result = subprocess.run([sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"), "-x",
                             f"url=sqlite:///{path}", "upgrade", "head"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert current_revisions(engine) == {SCHEMA_HEAD} and _counts(engine) == before
    assert _seq(path) == {"run": 9, "sweep": 5}
    result = subprocess.run([sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"), "-x",
                             f"url=sqlite:///{path}", "downgrade", "0004"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert current_revisions(engine) == {"0004"} and _counts(engine) == before and _seq(path) == {}
    engine.dispose()
