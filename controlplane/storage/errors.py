"""Exceptions raised by the storage layer."""

from __future__ import annotations

import re
from pathlib import Path


class StorageError(RuntimeError):
    """The database could not be written or is in an unusable state.

    ``spill_path`` is set when rows that could not be written were saved to a
    JSON-lines file instead, so the caller can report where they are and
    replay them later with :meth:`RunRecorder.replay_spill`. ``summary`` is set when a run's close
    raised it (`controlplane.session.RunSession.close`): the run's summary, whole though its rows
    were spilled, for the caller to show.
    """

    def __init__(self, message: str, *, spill_path: Path | None = None) -> None:
        super().__init__(message)
        self.spill_path = spill_path
        self.summary: dict | None = None


class RunDeleted(StorageError):
    """A run's row is gone from the database while its recorder still writes its rows: deleted by `controlplane
    runs delete --force` (or SQL). Its rows are refused for good (their run id names no run), so the recorder
    drops them and stops writing the run (`controlplane.storage.deleted_runs`). ``run_ids``: the runs."""

    def __init__(self, message: str, *, run_ids: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.run_ids = run_ids

    def __reduce__(self) -> tuple:  # (to the replaying process, from the writer process)
        return (_run_deleted, (str(self), self.run_ids))


def _run_deleted(message: str, run_ids: frozenset[int]) -> RunDeleted:
    return RunDeleted(message, run_ids=run_ids)


def mask_password(url: str) -> str:
    """``url`` with the password of its user (``//user:password@``) replaced by ``***``, and so is a
    ``password=`` in its query string (libpq and psycopg take the password there too), and an
    ``sslpassword=``. The password is the one SQLAlchemy reads (an ``@`` in the query is not the end of
    the credentials); where what follows it holds an ``@`` too (a password's unencoded ``@``: SQLAlchemy
    would take its rest for the host), the credentials end at the last ``@``, hiding all of it."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    m = _SQLALCHEMY_URL.match(url)
    if m is not None and m.group("password") is not None and "@" not in url[m.end("password") + 1:m.start("query")]:
        return f"{url[:m.start('password')]}***{url[m.end('password'):]}"
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials or "/" in credentials.split(":", 1)[0]:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


# SQLAlchemy's own pattern (sqlalchemy.engine.url._parse_url), with the query's start always matched
_SQLALCHEMY_URL = re.compile(r"""[\w\+]+://(?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/\?]+)\]|(?P<ipv4host>[^/:\?]+))?(?::(?P<port>[^/\?]*))?)?
    (?:/(?P<database>[^\?]*))?(?P<query>(?:\?.*)?)$""", re.X | re.S)
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&]*", re.IGNORECASE)  # (sslpassword: the client key's)


def database_error(exc: BaseException, url: str | None = None) -> StorageError:
    """A database driver's failure (SQLAlchemy's ``DBAPIError``, or the driver's own) as one line
    that names the database (password hidden): the driver's error type and message, without
    SQLAlchemy's wrapper, the statement and its "Background on this error" link. SQLite's
    "unable to open", "readonly" and "disk I/O error" name the likely cause."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)  # psycopg's: the message without the statement's "LINE 2: ..." lines
    if diag is not None and diag.message_primary:
        text = diag.message_primary + (f" ({diag.message_hint})" if diag.message_hint else "")
    else:
        text = " ".join(line.strip() for line in str(orig).splitlines() if line.strip())
    if "unable to open database file" in text:
        text += " (does its folder exist, and may this user write there?)"
    elif "attempt to write a readonly database" in text:
        text += " (this user may not write the file, or its folder)"
    elif text == "disk I/O error":  # (SQLite could not make or grow its -wal or -shm file: a full disk)
        text += " (is its disk full? SQLite writes its -wal and -shm files beside it, even to read)"
    elif getattr(orig, "sqlstate", None) == "42501":
        text += " (this role may not do that here: use a role that owns the schema's tables, or grant it the privilege)"
    where = f"{mask_password(url)}: " if url else ""
    return StorageError(f"{where}{type(orig).__name__}: {text}")
