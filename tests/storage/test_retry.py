"""What a database write that failed reports: the driver's error in one line; what is retried."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from controlplane.storage import RunRecorder, StorageError, make_engine, upgrade
from controlplane.storage.retry import describe_error

from .support import start_run


def test_a_driver_error_is_described_without_sqlalchemys_wrapper():
    exc = OperationalError("INSERT INTO run ...", {}, sqlite3.OperationalError("attempt to write a readonly database"))
    assert describe_error(exc) == "OperationalError: attempt to write a readonly database"


def test_other_errors_keep_their_first_line():
    assert describe_error(RuntimeError("first\nsecond")) == "RuntimeError: first"
    assert describe_error(RuntimeError()) == "RuntimeError: RuntimeError()"


def test_a_read_only_sqlite_file_fails_at_once_and_is_no_outage(tmp_path, caplog) -> None:
    """A SQLite database this process may not write (``chattr +i``, a file of another user; here ``?mode=ro``):
    it warned 'is unavailable ...; 0 rows pending are kept and retried', retried with backoff, then failed."""
    from sqlalchemy import create_engine

    from controlplane.storage.retry import is_permission_denied

    db = tmp_path / "runs.db"
    upgrade(f"sqlite:///{db}")
    error, delays = _start_refused(create_engine(f"sqlite:///file:{db}?mode=ro&uri=true"), caplog)
    assert error.endswith(": OperationalError: attempt to write a readonly database")
    assert delays == [] and caplog.records == []
    no_code = OperationalError("INSERT", {}, sqlite3.OperationalError("attempt to write a readonly database"))
    assert is_permission_denied(no_code)  # (Python 3.10: no sqlite_errorcode, the message says it)
    assert not is_permission_denied(OperationalError("INSERT", {}, sqlite3.OperationalError("disk I/O error")))


@pytest.mark.postgres
def test_a_read_only_role_fails_at_once_and_is_no_outage(pg_url: str, pg_reader, caplog) -> None:
    """Permission denied is the same at every try: no backoff, no 'unavailable ... retried' warning."""
    upgrade(pg_url)
    error, delays = _start_refused(make_engine(pg_reader(pg_url)), caplog)
    assert error.endswith(": ProgrammingError: permission denied for table run")
    assert "cp_reader_" in error and ":pw@" not in error
    assert delays == [] and caplog.records == []


def _start_refused(engine, caplog) -> tuple[str, list[float]]:
    """A run's start on ``engine`` refused (a `StorageError`): its message, and the backoff delays it slept."""
    delays: list[float] = []
    rec = RunRecorder(engine, max_retries=3, retry_backoff_s=0.01, sleep=delays.append)
    try:
        with caplog.at_level(logging.WARNING, logger="controlplane.storage"), pytest.raises(StorageError) as info:
            start_run(rec)
    finally:
        rec.close()
        engine.dispose()
    return str(info.value), delays


@pytest.mark.postgres
def test_a_locked_table_is_tried_once_per_write_so_the_close_waits_and_spills_as_documented(pg_url, tmp_path,
                                                                                          caplog) -> None:
    """A table locked by another session: each try waits lock_timeout (30 s by default), and the run's last write
    tried 4 times, so its close never reached its wait (no 'still unavailable at the close' line, no spill): a
    lock held 110 s held the replay's end for 1 min 49 s, silently."""
    import time

    from sqlalchemy import create_engine, text

    from .support import FINISHED, request_row

    upgrade(pg_url)
    engine = make_engine(pg_url + "?options=-c%20lock_timeout%3D200")  # (0.2 s: the test's lock_timeout)
    rec = RunRecorder(engine, max_retries=3, retry_backoff_s=0.01, close_wait_s=1.0, spill_dir=tmp_path)
    run_id = start_run(rec)
    rec.add_request(request_row(0))
    locker = create_engine(pg_url)
    conn = locker.connect()
    conn.begin()
    conn.execute(text("LOCK TABLE request IN ACCESS EXCLUSIVE MODE"))
    try:
        begun = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="controlplane.storage"):
            assert not rec.finish_run(run_id, status="finished", summary={}, finished_at=FINISHED, wall_s=1.0,
                                      sim_end_s=1.0)
            assert rec.errors[-1].attempts == 1 and rec.errors[-1].retryable
            with pytest.raises(StorageError) as info:
                rec.close()
        assert time.monotonic() - begun < 6
    finally:
        conn.close()
        locker.dispose()
        engine.dispose()
    assert "lock timeout" in caplog.text and "is still unavailable at the close; waiting up to 1 s" in caplog.text
    assert info.value.spill_path is not None and info.value.spill_path.exists()
