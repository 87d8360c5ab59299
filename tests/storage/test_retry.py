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


@pytest.mark.postgres
def test_a_read_only_role_fails_at_once_and_is_no_outage(pg_url: str, pg_reader, caplog) -> None:
    """Permission denied is the same at every try: no backoff, no 'unavailable ... retried' warning."""
    upgrade(pg_url)
    reader_url = pg_reader(pg_url)
    delays: list[float] = []
    engine = make_engine(reader_url)
    rec = RunRecorder(engine, max_retries=3, retry_backoff_s=0.01, sleep=delays.append)
    try:
        with caplog.at_level(logging.WARNING, logger="controlplane.storage"), pytest.raises(StorageError) as info:
            start_run(rec)
    finally:
        rec.close()
        engine.dispose()
    assert str(info.value).endswith(": ProgrammingError: permission denied for table run")
    assert "cp_reader_" in str(info.value) and ":pw@" not in str(info.value)
    assert delays == [] and caplog.records == []
