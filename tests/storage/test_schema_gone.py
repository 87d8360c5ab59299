"""A database whose schema vanished while a run was written to it (dropped and made again under its name, its
tables deleted): it was retried as an outage with backoff ('is unavailable (... relation "writer_mark" does not
exist)'), with reminders, until the close waited its 60 s and spilled. It will not mend: it is said once, as an
error saying what to do; nothing more is tried there, and the close spills at once."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import MetaData, text

from controlplane.storage import RunRecorder, StorageError, spill

from .support import FINISHED, request_row, start_run

LOGGER = "controlplane.storage"


def _drop_schema(engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        return
    tables = MetaData()
    tables.reflect(engine)
    with engine.begin() as conn:
        conn.execute(text("PRAGMA foreign_keys=OFF"))
        for table in reversed(tables.sorted_tables):
            conn.execute(text(f'DROP TABLE "{table.name}"'))


def test_a_schema_gone_is_said_once_and_the_close_spills_at_once(engine, tmp_path, caplog) -> None:
    slept: list[float] = []
    rec = RunRecorder(engine, max_retries=3, retry_backoff_s=0.01, close_wait_s=60.0, spill_dir=tmp_path,
                      sleep=slept.append)
    run_id = start_run(rec)
    rec.add_request(request_row(0))
    assert rec.flush()
    _drop_schema(engine)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        rec.add_request(request_row(1))
        assert not rec.flush()
        tried = len(slept)  # (a migration's moment: the write's own retries, quietly)
        for i in range(2, 5):
            rec.add_request(request_row(i))
            assert not rec.flush()  # nothing more is tried there
        rec.finish_run(run_id, status="finished", summary={}, finished_at=FINISHED, wall_s=1.0, sim_end_s=1.0)
        with pytest.raises(StorageError) as closed:
            rec.close()
    assert tried == 3 and len(slept) == tried  # no retries after, no wait at the close
    shown = [r for r in caplog.records if r.levelno >= logging.WARNING]
    said = [r.getMessage() for r in shown if "lost its schema" in r.getMessage()]
    assert len(said) == 1 and ("does not exist" in said[0] or "no such table" in said[0]), said
    assert "No retry mends that" in said[0]
    assert "restored from a backup" in said[0] and "load-spill" in said[0]
    assert not [r for r in shown if "unavailable" in r.getMessage()]
    assert closed.value.spill_path is not None
    entries = list(spill.read_entries(closed.value.spill_path))
    assert sorted(row["request_id"] for table, row, _ in entries if table == "request") == \
        [request_row(i)["request_id"] for i in range(1, 5)]
