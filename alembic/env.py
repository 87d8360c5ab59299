"""Alembic environment for the controlplane run database.

The URL comes from, in order: a Connection handed over programmatically in
``config.attributes["connection"]`` (what ``controlplane.storage.db.upgrade``
does), ``-x url=...``, ``$CONTROLPLANE_DB_URL`` or ``$CONTROLPLANE_STORAGE__URL``, else
``sqlite:///controlplane.db``. Batch mode is on so later revisions can alter
tables on SQLite, which lacks most ALTER TABLE forms.
"""

from __future__ import annotations

import os
import sys
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from controlplane.storage.db import DEFAULT_URL, foreign_keys_off, make_engine, plain_sqlite_file
from controlplane.storage.url import database_url
from controlplane.storage.models import metadata

config = context.config
target_metadata = metadata

if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    env_url = os.environ.get("CONTROLPLANE_DB_URL") or os.environ.get("CONTROLPLANE_STORAGE__URL")
    return database_url(x_url or env_url or DEFAULT_URL)  # (a SQLite file's path too, as the CLI takes it)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
        **kwargs,
    )


def _run_with(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _say_if_new(url: str) -> None:
    """A SQLite file that does not exist is made, empty, then migrated: say so and where, on stderr (a relative
    path is read from the folder Alembic runs in: run from the checkout, ``sqlite:///runs.db`` was a new file
    there, not the user's, and a downgrade "succeeded" on it)."""
    path = plain_sqlite_file(url)
    if path is not None and not path.exists():
        print(f"note: {path.absolute()} does not exist: Alembic makes a new, empty database there (give the "
              "database's absolute path, sqlite:////path/to/runs.db, to work on an existing one)", file=sys.stderr)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    _say_if_new(_url())
    engine = make_engine(_url())
    try:
        with engine.connect() as connection, foreign_keys_off(connection):  # (SQLite: see revision 0005)
            _run_with(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
