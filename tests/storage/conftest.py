"""Fixtures giving each test its own SQLite file or its own PostgreSQL database.

PostgreSQL tests use the server at ``$CONTROLPLANE_TEST_PG_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) only to create and
drop a uniquely named ``cp_test_<random>`` database per test, so concurrent
test runs against the same server never see each other's tables. They are
skipped, with the reason, when the server cannot be reached, except under
``CI=true``, where a missing server fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from controlplane.storage import make_engine, upgrade

PG_ADMIN_URL = os.environ.get("CONTROLPLANE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Journals and spill notes (`controlplane.storage.spill_notes`) in a folder of the test's own,
    not the user's state directory."""
    directory = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("CONTROLPLANE_JOURNAL_DIR", str(directory))
    return directory


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """AUTOCOMMIT engine on the maintenance database, for CREATE/DROP DATABASE."""
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        message = f"PostgreSQL unreachable at {make_url(PG_ADMIN_URL).render_as_string()}: {reason}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: Engine) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_reader(pg_admin: Engine) -> Iterator[Callable[[str], str]]:
    """``pg_reader(url)``: the URL of a new role that may only read the database of ``url`` (LOGIN,
    CONNECT, SELECT on the tables it has now); the role is dropped after the test."""
    made: list[tuple[str, str]] = []

    def make(url: str) -> str:
        role = f"cp_reader_{uuid.uuid4().hex[:8]}"
        with pg_admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'pw'"))
        made.append((role, url))
        _as_owner(url, f'GRANT CONNECT ON DATABASE "{make_url(url).database}" TO "{role}"',
                  f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        return make_url(url).set(username=role, password="pw").render_as_string(hide_password=False)

    yield make
    for role, url in made:
        with pg_admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"))
        _as_owner(url, f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"',
                  f'REVOKE ALL ON DATABASE "{make_url(url).database}" FROM "{role}"')
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


def _as_owner(url: str, *statements: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, unmigrated database of each kind."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a fresh database migrated to head."""
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    engine.dispose()
