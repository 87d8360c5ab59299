"""Retrying a database write with exponential backoff, and what a write that gave up reports.

Connection loss, lock timeouts and a table missing mid-migration pass; bad data (a duplicate
key, a value the column refuses) and a write that is not permitted (PostgreSQL's ``permission
denied``, a read-only role; SQLite's ``attempt to write a readonly database``, a file this process
may not write) fail the same way every time, so they are not retried.
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


@dataclass(frozen=True)
class FlushFailure:
    """A flush that gave up: its rows are still pending in the recorder."""

    at: datetime
    attempts: int
    pending: int
    error: str
    retryable: bool


def is_retryable(exc: SQLAlchemyError) -> bool:
    """Connection loss, lock timeouts, a missing table mid-migration: worth retrying. Bad data and a
    missing privilege are not."""
    if not isinstance(exc, DBAPIError) or isinstance(exc, ROW_REFUSED):
        return False
    return not is_permission_denied(exc)


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
    on_retry: Callable[[str], None] | None = None,
) -> tuple[Any, FlushFailure | None]:
    """``(fn(), None)``, calling ``fn`` again after ``backoff_s``, twice that, ... while it raises a
    retryable error, at most ``max_retries`` times (not after a lock or statement timeout, which waited
    already: `_WAITED_SQLSTATES`); ``(None, failure)`` when it gives up.
    ``on_retry(error)`` before each retry's sleep (the recorder's outage log,
    `controlplane.storage.outage_log`); without it each retry is logged as a warning."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(), None
        except SQLAlchemyError as exc:
            retryable = is_retryable(exc)
            message = describe_error(exc)
            waited = retryable and getattr(exc.orig, "sqlstate", None) in _WAITED_SQLSTATES
            if not retryable or waited or attempt > max_retries:
                return None, FlushFailure(at=datetime.now(timezone.utc), attempts=attempt, pending=pending(),
                                          error=message, retryable=retryable)
            delay = backoff_s * 2 ** (attempt - 1)
            if on_retry is not None:
                on_retry(message)
            else:
                log.warning("storage: write to %s failed (attempt %d/%d), retrying in %.2fs: %s",
                            target, attempt, max_retries + 1, delay, message)
            sleep(delay)
