"""Which database a URL names, whatever its spelling: the driver (``postgresql`` or
``postgresql+psycopg``), the user, the password (given or hidden as ``***``) and ``localhost`` for
``127.0.0.1`` do not change the database. What a spill file and a spill's note are matched on
(`controlplane.storage.load_spill`, `controlplane.storage.spill_notes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from sqlalchemy.engine import URL, make_url

__all__ = ["database_identity", "same_database"]

#: Names of this host's loopback interface: the same server, however the URL spells it.
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1", "0:0:0:0:0:0:0:1", "localhost.localdomain"})
_DEFAULT_PORTS: Final = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def _query_value(url: URL, key: str) -> Any:
    value = url.query.get(key)
    return value[0] if isinstance(value, tuple) and value else value


def database_identity(url: str | URL) -> str:
    """``url``'s database as ``backend://host:port/name`` (a loopback host or a Unix socket's folder is
    ``localhost``, a missing port the backend's default), or ``sqlite:ABSOLUTE-PATH`` for a SQLite
    file; the text itself where it does not parse as a URL."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL (a note's key of an older version): compared as it is
        return str(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        name = parsed.database or ""
        if not name or name == ":memory:" or _query_value(parsed, "mode") == "memory":
            return "sqlite::memory:"
        if name.startswith("file:"):  # (a URI: ``file:PATH?mode=ro``)
            name = name[len("file:"):]
        return f"sqlite:{Path(name).expanduser().resolve()}"
    host = (parsed.host or _query_value(parsed, "host") or "localhost").lower().strip("[]")
    if host in _LOOPBACK or host.startswith("/"):  # (a Unix socket: a server of this host)
        host = "localhost"
    port = parsed.port or _query_value(parsed, "port") or _DEFAULT_PORTS.get(backend, "")
    return f"{backend}://{host}:{port}/{parsed.database or ''}"


def same_database(a: str | URL, b: str | URL) -> bool:
    """Whether the URLs ``a`` and ``b`` name one database (`database_identity`)."""
    return database_identity(a) == database_identity(b)
