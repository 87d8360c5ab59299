"""Which database a URL names, whatever its spelling: the driver (``postgresql`` or
``postgresql+psycopg``), the user, the password (given or hidden as ``***``) and ``localhost`` for
``127.0.0.1`` do not change the database. What a spill file and a spill's note are matched on
(`controlplane.storage.load_spill`, `controlplane.storage.spill_notes`), there with ``any_port``: the same
server's database reached through another port (pgbouncer, a port-forward: ``127.0.0.1:18120`` for ``:5432``) is
the same database; the runs a spill holds are then checked by their names and starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from sqlalchemy.engine import URL, make_url

__all__ = ["database_identity", "same_database", "without_port"]

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


def without_port(identity: str) -> str:
    """A `database_identity` with its port left out (``postgresql://localhost/name``); a SQLite file's as it is."""
    backend, sep, rest = identity.partition("://")
    if not sep:
        return identity
    netloc, slash, name = rest.partition("/")
    host, colon, _ = netloc.rpartition(":")
    return f"{backend}://{host if colon else netloc}{slash}{name}"


def same_database(a: str | URL, b: str | URL, *, any_port: bool = False) -> bool:
    """Whether the URLs ``a`` and ``b`` name one database (`database_identity`); with ``any_port``, whatever their
    ports (the same host's database of that name, reached through pgbouncer or a port-forward)."""
    ia, ib = database_identity(a), database_identity(b)
    return ia == ib or (any_port and without_port(ia) == without_port(ib))
