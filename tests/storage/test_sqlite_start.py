"""A run started in a SQLite file with the standard library leaves the file SQLAlchemy's way
leaves (schema, pragmas, run row, id), and leaves anything else untouched for that way."""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from controlplane.storage import RunRecorder, ensure_schema, make_engine, upgrade
from controlplane.storage.db import SCHEMA_HEAD, plain_sqlite_file
from controlplane.storage.sqlite_start import start_run

from .test_sqlite_schema import _schema

STARTS = [
    dict(name="unit", mode="sim", trace="traces/tiny.jsonl", trace_format="jsonl", seed=7,
         config={"cluster": {"workers": 2}, "x": [1.5, None, True, "é"], "inf": 1e300},
         plugins=[{"name": "defaults", "dist": "controlplane", "version": "0.1.0"}],
         started_at=datetime(2026, 12, 5, 2, 3, 4, 56, tzinfo=timezone.utc)),
    dict(name=None, mode="sim", trace=None, trace_format=None, seed=None, config={}, plugins=[],
         started_at=datetime(2026, 1, 2, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))),
]


def _runs(path: Path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT * FROM run ORDER BY id").fetchall()
    finally:
        con.close()


def _by_engine(path: Path, values: dict) -> int:
    engine = make_engine(f"sqlite:///{path}")
    try:
        ensure_schema(engine)
        return RunRecorder(engine).start_run(**values)
    finally:
        engine.dispose()


def test_a_new_file_and_its_runs_are_the_ones_the_engine_makes(tmp_path: Path) -> None:
    by_engine, by_stdlib = tmp_path / "engine" / "runs.db", tmp_path / "stdlib" / "runs.db"
    ids = [(_by_engine(by_engine, v), start_run(by_stdlib, v, head=SCHEMA_HEAD)) for v in STARTS + STARTS[:1]]
    assert ids == [(1, 1), (2, 2), (3, 3)]
    assert _schema(by_stdlib) == _schema(by_engine)
    assert _runs(by_stdlib) == _runs(by_engine)
    assert _runs(by_stdlib)[1][9] == "2026-01-03 04:59:59.999999"  # in UTC, as SQLAlchemy's DATETIME text
    engine = make_engine(f"sqlite:///{by_stdlib}")  # and SQLAlchemy reads it back as it wrote it
    assert ensure_schema(engine) is False
    engine.dispose()


def test_a_file_at_head_made_by_alembic_takes_the_run(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    upgrade(f"sqlite:///{path}")
    assert start_run(path, STARTS[0], head=SCHEMA_HEAD) == 1
    assert _runs(path)[0][1:4] == ("unit", "sim", "running")


@pytest.mark.parametrize("case", ["older schema", "other tables", "not a database", "naive time", "path trace",
                                  "numpy seed", "other head", "text not UTF-8", "seed past 64 bits"])
def test_anything_else_is_left_untouched_for_the_engine(tmp_path: Path, case: str) -> None:
    import numpy as np

    path = tmp_path / "runs.db"
    values, head = dict(STARTS[0]), SCHEMA_HEAD
    if case == "older schema":
        upgrade(f"sqlite:///{path}", "0002")
    elif case == "other tables":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE unrelated (x INTEGER)")
        con.commit()
        con.close()
    elif case == "not a database":
        path.write_bytes(b"not a database, " * 100)
    else:
        upgrade(f"sqlite:///{path}")
        values.update({"naive time": {"started_at": datetime(2026, 1, 1)}, "path trace": {"trace": Path("t.csv")},
                       "numpy seed": {"seed": np.int64(7)},
                       # (sqlite3 raised these from the writer process, which died: "exited before starting")
                       "text not UTF-8": {"trace": os.fsdecode(b"t\xff.csv")}, "seed past 64 bits": {"seed": 2**70},
                       }.get(case, {}))
        head = "9999" if case == "other head" else head
    before = path.read_bytes()
    assert start_run(path, values, head=head) is None
    if case != "other tables":  # (reading it in WAL mode is all a refusal does to that one)
        assert path.read_bytes() == before
    else:
        assert {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")} == {"unrelated"}


def test_a_locked_file_is_left_to_the_engine_which_waits_and_retries(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "runs.db"
    upgrade(f"sqlite:///{path}")
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(sqlite3, "connect", lambda p, **kw: lock.__class__(p, timeout=0.05, **kw))
    try:
        assert start_run(path, STARTS[0], head=SCHEMA_HEAD) is None
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert _runs(path) == []


def test_processes_starting_on_one_new_file_make_it_once_and_get_distinct_ids(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    ids: list[int | None] = []
    threads = [threading.Thread(target=lambda: ids.append(start_run(path, STARTS[0], head=SCHEMA_HEAD)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A start that met a lock it could not take gives None and leaves the run to the engine, which retries: its
    # contract (it failed this way once in the whole suite on a slow, busy host). Those that started got distinct ids, one schema.
    started = sorted(i for i in ids if i is not None)
    assert len(ids) == 4 and started and started == list(range(1, len(started) + 1))
    assert [row[0] for row in sqlite3.connect(path).execute("SELECT id FROM run ORDER BY id")] == started
    assert _schema(path)[2] == [(SCHEMA_HEAD,)]


def test_only_plain_sqlite_files_are_started_this_way(tmp_path: Path) -> None:
    assert plain_sqlite_file(f"sqlite:///{tmp_path}/a.db") == Path(f"{tmp_path}/a.db")
    assert plain_sqlite_file("sqlite+pysqlite:///rel/a.db") == Path("rel/a.db")
    assert plain_sqlite_file("rel/a b.db") == Path("rel/a b.db")  # (a path, as make_engine takes it)
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///a.db?timeout=1", "sqlite+aiosqlite:///a.db",
                "postgresql://u@h/db", "postgresql:/not-a-url", "sqlite:///file:a.db?uri=true"):
        assert plain_sqlite_file(url) is None, url


def test_a_replays_writer_process_starts_a_plain_file_this_way(tmp_path: Path, monkeypatch) -> None:
    """Through the writer process: the same run rows and ids, first run and second."""
    from controlplane.storage import sqlite_start
    from controlplane.storage.early import EarlyWriter, FrontRecorder

    if not hasattr(os, "fork"):
        pytest.skip("the writer process is forked")
    calls = tmp_path / "calls"
    real = sqlite_start.start_run

    def counted(*args, **kwargs):
        with open(calls, "a") as f:
            f.write("x")
        return real(*args, **kwargs)

    monkeypatch.setattr(sqlite_start, "start_run", counted)  # (the child is forked with it)
    by_engine, by_writer = tmp_path / "engine.db", tmp_path / "writer.db"
    for n in (1, 2):
        rec = FrontRecorder(EarlyWriter(), f"sqlite:///{by_writer}")
        assert rec.start_run(**STARTS[n - 1]) == n == _by_engine(by_engine, STARTS[n - 1])
        rec.close()
    assert calls.read_text() == "xx"
    assert _runs(by_writer) == _runs(by_engine) and _schema(by_writer) == _schema(by_engine)
