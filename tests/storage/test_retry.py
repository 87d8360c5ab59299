"""What a database write that failed reports: the driver's error in one line; what is retried."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
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


@pytest.fixture
def reader_url(pg_url: str, pg_admin: Engine) -> Iterator[str]:
    """A role of the fresh database that may only read it (LOGIN, CONNECT, SELECT)."""
    engine = make_engine(pg_url)
    upgrade(engine)
    engine.dispose()
    role = f"cp_reader_{uuid.uuid4().hex[:8]}"
    database = make_url(pg_url).database
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN PASSWORD \'pw\''))
    grants = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    with grants.connect() as conn:
        conn.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"'))
        conn.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
    try:
        yield make_url(pg_url).set(username=role, password="pw").render_as_string(hide_password=False)
    finally:
        with grants.connect() as conn:
            conn.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"'))
            conn.execute(text(f'REVOKE ALL ON DATABASE "{database}" FROM "{role}"'))
        grants.dispose()
        with pg_admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


@pytest.mark.postgres
def test_a_read_only_role_fails_at_once_and_is_no_outage(reader_url: str, caplog) -> None:
    """Permission denied is the same at every try: no backoff, no 'unavailable ... retried' warning."""
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
