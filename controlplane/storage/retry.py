"""Retrying a database write with exponential backoff, and what a write that gave up reports.

Connection loss and lock timeouts pass; bad data (a duplicate
key, a value the column refuses) and a write that is not permitted (PostgreSQL's ``permission
denied``, a read-only role; SQLite's ``attempt to write a readonly database``, a file this process
may not write) fail the same way every time, so they are not retried. A table missing is retried
within a write's retries only (a migration's moment), quietly: past them the database's schema is
gone (dropped and made again, its tables deleted), no outage (`FlushFailure.schema_missing`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

log = logging.getLogger("controlplane.storage.recorder")

#: What the database raises for a row it will never take (a duplicate key, a value the column
#: refuses): not retried; the flush commits again row by row (`controlplane.storage.isolate`).
ROW_REFUSED: Final = (IntegrityError, DataError)
#: SQLSTATEs no retry mends: ``insufficient_privilege`` (a read-only role's INSERT).
_PERMANENT_SQLSTATES: Final = frozenset({"42501"})
#: SQLite's primary result code for a write to a database it opened read-only (a file, or its folder, this process
#: may not write; ``chattr +i``; ``?mode=ro``): SQLITE_READONLY, and its message where Python (3.10) has no code.
_SQLITE_READONLY: Final = 8
_SQLITE_READONLY_MESSAGE: Final = "attempt to write a readonly database"
#: SQLSTATEs of a statement that waited its time out: ``lock_not_available`` (PostgreSQL's ``lock_timeout``,
#: `controlplane.storage.db.LOCK_TIMEOUT_S`, on a table another session holds locked) and ``query_canceled``
#: (``statement_timeout``). Retryable, but not at once: the try itself waited (30 s), so retries with their
#: backoff made a run's last write wait four times that, and its close never reached its own wait (its line,
#: its spill): the write gives up after this try, and the outage's pauses and the close's wait try again.
_WAITED_SQLSTATES: Final = frozenset({"55P03", "57014"})
#: SQLSTATEs of a statement naming a table (or schema) the database does not have: ``undefined_table``,
#: ``invalid_schema_name``; SQLite says ``no such table``.
_MISSING_SQLSTATES: Final = frozenset({"42P01", "3F000"})


@dataclass(frozen=True)
class FlushFailure:
    """A flush that gave up: its rows are still pending in the recorder."""

    at: datetime
    attempts: int
    pending: int
    error: str
    retryable: bool
    schema_missing: bool = False  # a table was missing through the retries: the database lost its schema


def is_retryable(exc: SQLAlchemyError) -> bool:
    """Connection loss, lock timeouts: worth retrying. Bad data, a missing privilege and a missing table
    (`is_schema_missing`) are not."""
    if not isinstance(exc, DBAPIError) or isinstance(exc, ROW_REFUSED):
        return False
    return not is_permission_denied(exc) and not is_schema_missing(exc)


def is_schema_missing(exc: SQLAlchemyError) -> bool:
    """Whether ``exc``'s statement named a table the database does not have."""
    if not isinstance(exc, DBAPIError):
        return False
    return getattr(exc.orig, "sqlstate", None) in _MISSING_SQLSTATES or str(exc.orig).startswith("no such table")


def is_permission_denied(exc: SQLAlchemyError) -> bool:
    """Whether the database refused ``exc``'s statement as a write it may not do: a privilege the role lacks (a
    reader's write), or a SQLite database opened read-only."""
    if not isinstance(exc, DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) in _PERMANENT_SQLSTATES:
        return True
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == _SQLITE_READONLY
    return _SQLITE_READONLY_MESSAGE in str(exc.orig)


def describe_error(exc: BaseException) -> str:
    """``Type: first line``; for SQLAlchemy's wrapper of a driver's error, the driver's own message
    (without the ``(sqlite3.OperationalError)`` prefix SQLAlchemy puts before it)."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(orig)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else repr(orig)}"


def with_retries(
    fn: Callable[[], Any],
    *,
    max_retries: int,
    backoff_s: float,
    sleep: Callable[[float], None],
    target: str,
    pending: Callable[[], int],
    on_retry: Callable[[str, bool], None] | None = None,
) -> tuple[Any, FlushFailure | None]:
    """``(fn(), None)``, calling ``fn`` again after ``backoff_s``, twice that, ... while it raises a
    retryable error, at most ``max_retries`` times (not after a lock or statement timeout, which waited
    already: `_WAITED_SQLSTATES`); ``(None, failure)`` when it gives up.
    ``on_retry(error, missing)`` before each retry's sleep (the recorder's outage log,
    `controlplane.storage.outage_log`); without it each retry is logged as a warning. A missing table
    (``missing``) is retried quietly (DEBUG) and is no outage: past the retries, a failure with
    ``schema_missing``."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(), None
        except SQLAlchemyError as exc:
            retryable, missing = is_retryable(exc), is_schema_missing(exc)
            message = describe_error(exc)
            waited = retryable and getattr(exc.orig, "sqlstate", None) in _WAITED_SQLSTATES
            if not (retryable or missing) or waited or attempt > max_retries:
                return None, FlushFailure(at=datetime.now(timezone.utc), attempts=attempt, pending=pending(),
                                          error=message, retryable=retryable, schema_missing=missing)
            delay = backoff_s * 2 ** (attempt - 1)
            if missing:  # (a migration's moment, or a schema gone: said once when the write gives up)
                log.debug("storage: write to %s failed (attempt %d/%d): %s", target, attempt, max_retries + 1, message)
            if on_retry is not None:
                on_retry(message, missing)
            elif not missing:
                log.warning("storage: write to %s failed (attempt %d/%d), retrying in %.2fs: %s",
                            target, attempt, max_retries + 1, delay, message)
            sleep(delay)
