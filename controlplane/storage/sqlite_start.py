"""A run's start in a SQLite file with the standard library's ``sqlite3``, before SQLAlchemy's engine.

A replay's writer process (:mod:`controlplane.storage.writer_process`) answers the run row's id
while the replaying process waits for it, just before the first event. Through SQLAlchemy that
answer came after making the engine (importing the SQLite dialect), the recorder (compiling its
inserts), the schema check and the insert: ~50 M instructions that the replaying process, its
own imports done sooner, waited for. :func:`start_run` does what that path does to the file, with
``sqlite3`` alone: the connection's pragmas (``controlplane.storage.db``), a new file's schema
(:mod:`controlplane.storage.sqlite_schema`, in ``BEGIN IMMEDIATE`` as ``create_if_new``), the check
that ``alembic_version`` is at head, and the ``run`` row's ``INSERT`` with the values SQLAlchemy's
types bind (JSON through :func:`controlplane.storage.jsoncodec.dumps`, the start time in UTC as
SQLite's ``DATETIME`` text). The writer makes its engine after answering.

Only the plain case is done here: a file at head, or new; values of the types a run's start
gives. Anything else (an older schema, a locked or unreadable file, a naive time, a value of
another type or one sqlite3 cannot bind, a new id that names rows already: `controlplane.storage.orphans`) returns None, and the caller goes the SQLAlchemy way, which migrates, retries and
reports errors as before. ``tests/storage/test_sqlite_start.py`` compares both ways' files.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from controlplane.storage import jsoncodec, sqlite_schema
from controlplane.storage.orphans import tables_with_rows

__all__ = ["start_run"]

#: SQLAlchemy's SQLite ``DATETIME`` storage format.
_DATETIME: Final = "%04d-%02d-%02d %02d:%02d:%02d.%06d"

_TEXT_OR_NONE: Final = ("name", "trace", "trace_format")


def _bound(values: dict[str, Any]) -> tuple | None:
    """The ``run`` row's parameters as SQLAlchemy binds them, or None where a value is not one
    of the plain types handled here."""
    if set(values) != {"name", "mode", "trace", "trace_format", "seed", "config", "plugins", "started_at"}:
        return None
    if any(values[k] is not None and type(values[k]) is not str for k in _TEXT_OR_NONE):
        return None
    seed, config, plugins, started = values["seed"], values["config"], values["plugins"], values["started_at"]
    if type(values["mode"]) is not str or (seed is not None and type(seed) is not int):
        return None
    if type(config) not in (dict, list) or type(plugins) not in (dict, list):
        return None
    if type(started) is not datetime or started.tzinfo is None or started.utcoffset() is None:
        return None
    t = started.astimezone(timezone.utc)
    return (values["name"], values["mode"], "running", values["trace"], values["trace_format"], seed,
            jsoncodec.dumps(config), jsoncodec.dumps(plugins),
            _DATETIME % (t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond))


def start_run(path: str | Path, values: dict[str, Any], *, head: str) -> int | None:
    """Insert a ``running`` run row into the SQLite file ``path`` (made, with its folder and
    schema, if it does not exist) and return its id; None, having written nothing, where its
    schema is not at ``head``, it cannot be read or written now, or ``values`` (``start_run``'s
    arguments but ``mode``'s check) are not plain."""
    params = _bound(values)
    if params is None or sqlite_schema.REVISION != head:
        return None
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error):
        return None
    try:
        for pragma in sqlite_schema.PRAGMAS:
            connection.execute(pragma)
        if not _at_head(connection, head):
            return None
        connection.execute("BEGIN")
        try:
            cursor = connection.execute(
                "INSERT INTO run (name, mode, status, trace, trace_format, seed, config, plugins, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", params)
            if tables_with_rows(connection.execute, int(cursor.lastrowid)):
                return None  # (rolled back: its id names rows of a run deleted without them; the engine's way says so)
            connection.execute("COMMIT")
        finally:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        return int(cursor.lastrowid)
    except (sqlite3.Error, ValueError, OverflowError):
        # (a value sqlite3 cannot bind: text with a lone surrogate, from a file name that is not
        # UTF-8, or an int past 64 bits: the engine's way raises it where the run's start reports it)
        return None
    finally:
        connection.close()


def _at_head(connection: sqlite3.Connection, head: str) -> bool:
    """Whether the schema is at ``head``, having made it in a file that holds nothing (one
    ``BEGIN IMMEDIATE`` transaction, as ``sqlite_schema.create_if_new``)."""
    try:
        return _version(connection) == {head}
    except sqlite3.OperationalError:  # no such table (or locked: then the next step fails too)
        pass
    connection.execute("BEGIN IMMEDIATE")
    try:
        if not sqlite_schema.fill_if_empty(connection.execute, head):
            connection.execute("ROLLBACK")
            return _version(connection) == {head}  # another process made it meanwhile
        connection.execute("COMMIT")
    finally:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    return True


def _version(connection: sqlite3.Connection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT version_num FROM alembic_version")}
