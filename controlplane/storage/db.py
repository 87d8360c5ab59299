"""Engines and schema migrations.

Nothing here runs at import time: callers create an engine for the URL they
were given (CLI flag, settings, test fixture) and pass it around explicitly.
Alembic is imported when a migration function runs (half a second of imports
a background writer process does not need).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from controlplane.storage import jsoncodec, sqlite_schema
from controlplane.storage.errors import StorageError, mask_password
from controlplane.storage.url import database_url, sqlite_path_too_long

if TYPE_CHECKING:
    from controlplane.storage.schema_upgrade import Applied

log = logging.getLogger("controlplane.storage")

DEFAULT_URL: Final = "sqlite:///controlplane.db"


def migrations_dir(checkout: Path = Path(__file__).resolve().parents[2] / "alembic") -> Path:
    """The schema's Alembic migrations: the checkout's ``alembic/`` (a source checkout, an editable install), else
    where a wheel installed them (``<prefix>/share/controlplane/alembic``: pyproject's data-files), the prefix being
    the install's: beside the packages for ``pip install --target DIR`` (``DIR/share/...``), the environment's, or
    the user scheme's for ``pip install --user``; the checkout's path when none is there (the error names it).
    (In a non-editable install ``checkout`` is ``site-packages/alembic``, the Alembic library, which has no
    ``env.py``.)"""
    if (checkout / "env.py").is_file():
        return checkout
    import site
    import sysconfig

    for prefix in (checkout.parent, sysconfig.get_path("data"), sys.prefix, getattr(site, "USER_BASE", None)):
        installed = Path(prefix or "") / "share" / "controlplane" / "alembic"
        if prefix and (installed / "env.py").is_file():
            return installed
    return checkout


ALEMBIC_DIR: Final = migrations_dir()

_PG_MIGRATION_LOCK: Final = 0x636F6E74726F6C  # any constant shared by all controlplane processes
_SQLITE_BEGIN_OPTION: Final = "controlplane_sqlite_begin"


def describe_url(engine: Engine) -> str:
    """The engine's URL with any password hidden, for error messages."""
    return mask_password(engine.url.render_as_string(hide_password=True))


def _unencoded_at(url: str) -> bool:
    """Whether ``url``'s password holds an ``@`` not percent-encoded (``user:p@ss@host``): SQLAlchemy ends the
    password at its first ``@``, so the rest of it became the host (or a port, a database name)."""
    rest = url.partition("://")[2].split("?", 1)[0]
    colon = rest.find(":")
    if colon < 0 or "/" in rest[:colon] or "@" in rest[:colon]:
        return False
    at = rest.find("@", colon)
    return at >= 0 and "@" in rest[at + 1:]


def _parse_url(url: str | os.PathLike[str] | URL) -> URL:
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if isinstance(url, str):  # (a SQLite file's path made its URL, as `--db` and `storage.url` take it)
        url = database_url(url)
    if isinstance(url, str) and _unencoded_at(url):  # (before SQLAlchemy: its error may quote a piece of it)
        raise ValueError(_AT_IN_PASSWORD.format(url=mask_password(url)))
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError) as exc:
        raise ValueError(
            f"malformed database URL {mask_password(str(url))!r}: {exc}; "
            "expected e.g. 'sqlite:///path/to/runs.db', a SQLite file's path or "
            "'postgresql+psycopg://user@host:5432/dbname'"
        ) from exc
    if parsed.host and "@" in parsed.host:  # (a password's @ the check above missed: `user:p?@ss@host`)
        raise ValueError(_AT_IN_PASSWORD.format(url=mask_password(str(url))))
    return parsed


# (`user:p@ss@host`: SQLAlchemy took the password to its first @ and "ss@host" for the host, which the driver's
# error then printed: "failed to resolve host 'ss@127.0.0.1'", a piece of the password)
_AT_IN_PASSWORD: Final = ("malformed database URL {url!r}: its password holds an '@', which a URL reserves (the part "
                          "after it would be read as the host); percent-encode it: @ as %40 (: as %3A, / as %2F, "
                          "% as %25)")


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _install_sqlite_hooks(engine: Engine) -> None:
    """WAL + synchronous=NORMAL for fast durable-enough bulk writes, and real transactions.

    pysqlite on Python < 3.12 silently runs DDL outside any transaction and
    starts transactions lazily; handing transaction control to SQLAlchemy
    (SQLAlchemy's documented recipe) makes migrations atomic and lets
    :func:`upgrade` take the write lock up front with ``BEGIN IMMEDIATE``.
    Foreign keys are switched on so ON DELETE CASCADE works as on PostgreSQL.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in sqlite_schema.PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get(_SQLITE_BEGIN_OPTION, "BEGIN"))


def fold_wal(engine: Engine) -> None:
    """SQLite: fold the write-ahead log into the database file (``wal_checkpoint(TRUNCATE)``), so that
    the file alone holds every row written: a copy of it, or ``git clean`` of the ``-wal`` file after a
    process that left without closing its connections (the writer process does), loses nothing (the
    last run read as ``running``, then ``crashed``, with part of its rows). Nothing for other
    databases; a checkpoint that cannot run now (a reader holds the log) is left to SQLite's own."""
    if engine.dialect.name != "sqlite":
        return
    try:
        raw = engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
    except Exception:  # noqa: BLE001 - a later connection's checkpoint folds it
        logging.getLogger(__name__).debug("storage: wal checkpoint of %s failed", engine.url, exc_info=True)


#: Seconds a PostgreSQL connection attempt may take (libpq's ``connect_timeout``) unless the URL says
#: otherwise (``?connect_timeout=N``).
CONNECT_TIMEOUT_S = 10
#: Seconds a PostgreSQL statement waits for a lock another session holds (``lock_timeout``) unless the URL
#: gives its own ``options``.
LOCK_TIMEOUT_S: Final = 30.0
#: Seconds a SQLite connection waits for another writer's lock (sqlite3's ``timeout``) unless the URL says.
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
_LIBPQ_DRIVERS = ("postgresql+psycopg", "postgresql+psycopg2")  # drivers taking libpq's connect_timeout


class _IgnoredErrorsToDebug(logging.Filter):
    """psycopg logs at WARNING each error it ignores while another one is raised: a pipeline or a
    transaction it could not end because the connection is lost (``error ignored terminating
    <psycopg.Pipeline [BAD] ...>: the connection is lost``), or because Ctrl-C cancelled the
    statement. The error raised is what counts, and the recorder reports it (its outage log,
    `controlplane.storage.outage_log`; a spill): these go to DEBUG, not to the user's terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("error ignored"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"  # (handlers compare the record's level)
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_psycopg() -> None:
    """Install `_IgnoredErrorsToDebug` on psycopg's loggers (once; a logger's filter sees only its own records)."""
    for name in ("psycopg", "psycopg.transaction"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _IgnoredErrorsToDebug) for f in logger.filters):
            logger.addFilter(_IgnoredErrorsToDebug())


def make_engine(url: str | os.PathLike[str] | URL | None = None, **engine_kwargs: Any) -> Engine:
    """Create an engine for ``url`` (default ``sqlite:///controlplane.db`` in the cwd): a database URL, or
    a SQLite file's path (``runs.db``, a `pathlib.Path`), made its URL as ``--db`` makes it
    (`controlplane.storage.url.database_url`: a path's ``?``, ``%``, ``#`` and ``:`` are the file's name).

    For SQLite files the parent directory is created. A bare
    ``postgresql://`` URL means psycopg 3, the driver controlplane depends
    on, rather than SQLAlchemy's default psycopg2. For server databases
    connections are pinged on checkout, so a long-running daemon survives a
    database restart without a failed write; a PostgreSQL connection attempt gives up after
    `CONNECT_TIMEOUT_S` (a host that drops packets). ``engine_kwargs`` go to
    :func:`sqlalchemy.create_engine` and override these defaults.

    Raises ``ValueError`` naming the URL when it is malformed or names an
    unknown driver, ``StorageError`` naming the folder when a SQLite file's
    folder cannot be made.
    """
    parsed = _parse_url(url if url is not None else DEFAULT_URL)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    is_sqlite = parsed.get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {"json_serializer": jsoncodec.dumps}
    if not is_sqlite:
        kwargs["pool_pre_ping"] = True
    if parsed.drivername in _LIBPQ_DRIVERS:
        connect: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            # A host that drops packets would hang each connection attempt for the OS's TCP timeout (~2 min).
            connect["connect_timeout"] = CONNECT_TIMEOUT_S
        if "options" not in parsed.query:
            # A table another session holds locked (a LOCK TABLE, a long migration) made a write wait for ever,
            # silently: after LOCK_TIMEOUT_S it fails as an outage does (the recorder keeps the rows, says so).
            connect["options"] = f"-c lock_timeout={int(LOCK_TIMEOUT_S * 1000)}"
        kwargs["connect_args"] = connect
    if is_sqlite and "timeout" not in parsed.query:
        # How long a connection waits for another process's write lock: sqlite3's 5 s was seen to run out while
        # three processes made one new file's schema and wrote their first rows ("database is locked").
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    kwargs.update(engine_kwargs)
    if is_sqlite and (path := _sqlite_file(parsed)) is not None:
        if (too_long := sqlite_path_too_long(path)) is not None:  # (SQLite: only "unable to open database file")
            raise StorageError(f"{mask_password(parsed.render_as_string(hide_password=True))}: {too_long}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission: one line naming the folder
            raise StorageError(f"cannot create the folder {str(path.parent)!r} of the SQLite database "
                               f"{mask_password(parsed.render_as_string(hide_password=True))}: {exc.strerror or exc}") from None
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        from controlplane.extras import extra_of, install_hint, missing_module

        extra = extra_of(missing_module(exc))  # (psycopg: the `postgres` extra; that is how to install it)
        raise ValueError(
            f"unknown or uninstalled database driver in URL {mask_password(parsed.render_as_string(hide_password=True))!r}: {exc}"
            + (f" ({install_hint(extra)})" if extra else "")
        ) from exc
    if is_sqlite:
        _install_sqlite_hooks(engine)
    elif parsed.drivername.startswith("postgresql+psycopg") and parsed.drivername != "postgresql+psycopg2":
        quiet_psycopg()
    return engine


def plain_sqlite_file(url: str | os.PathLike[str] | URL) -> Path | None:
    """The file of a SQLite URL (or of a path, as :func:`make_engine` takes one) with the default driver and no
    options (what ``controlplane.storage.sqlite_start`` can start a run in), else None (other databases,
    in-memory, options, a URL that does not parse: :func:`make_engine` says what is wrong)."""
    try:
        parsed = _parse_url(url)
    except ValueError:
        return None
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite") or parsed.query:
        return None
    return _sqlite_file(parsed)


def sqlite_read_only(path: Path) -> bool:
    """Whether this process may not write the SQLite file ``path`` or its folder (a read-only
    copy: WAL mode needs the folder to make its ``-wal`` and ``-shm`` files)."""
    return not (os.access(path.parent, os.W_OK) and os.access(path, os.W_OK))


def read_only_sqlite_url(path: Path) -> str:
    """A SQLite URI that reads ``path`` and writes nothing into it: ``mode=ro``, plus ``immutable=1``
    only where its folder may not be written and it has no ``-wal`` file.

    ``immutable=1`` turns off SQLite's locking and change detection and ignores a ``-wal`` file:
    rows written there (a ``-wal`` without its ``-shm``, a writer that appears meanwhile) would be
    missed. It is needed only where SQLite could not make the ``-wal``/``-shm`` files a WAL reader
    uses (a read-only folder), and is safe only there and without a ``-wal`` (nothing that can make
    the journal a writer needs can be writing). Elsewhere ``mode=ro`` reads through the WAL (in a
    writable folder SQLite may leave ``-wal``/``-shm`` files next to the database; a ``-wal`` without
    ``-shm`` in a read-only folder cannot be read at all: an error, not missing rows)."""
    from urllib.parse import quote

    path = path.resolve()
    immutable = not os.access(path.parent, os.W_OK) and not Path(f"{path}-wal").exists()
    return f"sqlite+pysqlite:///file:{quote(str(path))}?mode=ro{'&immutable=1' if immutable else ''}&uri=true"


def unreadable_wal(path: Path) -> bool:
    """Whether ``path`` has a ``-wal`` file without its ``-shm`` in a folder this process may not
    write: SQLite cannot read it read-only (it would have to make the ``-shm``)."""
    path = path.resolve()
    return (Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()
            and not os.access(path.parent, os.W_OK))


def sqlite_path(engine: Engine) -> Path | None:
    """The database file behind a SQLite engine, or None (server DB, in-memory)."""
    if engine.url.get_backend_name() != "sqlite":
        return None
    return _sqlite_file(engine.url)


def _alembic_config() -> Config:
    if not (ALEMBIC_DIR / "env.py").is_file():
        raise StorageError(
            f"Alembic migrations not found at {ALEMBIC_DIR} nor under {sys.prefix}/share/controlplane/alembic "
            "(where a wheel installs them); reinstall controlplane (pip install -e CHECKOUT, or its wheel)"
        )
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    return config


def head_revisions() -> set[str]:
    """The revision(s) the code expects the database to be at."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(_alembic_config()).get_heads())


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def current_revisions(engine: Engine) -> set[str]:
    """The revision(s) recorded in the database's ``alembic_version`` table (empty if none)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head") -> Applied:
    """Run the Alembic migrations up to ``revision`` in one transaction; return what it applied
    (`controlplane.storage.schema_upgrade.Applied`: false when the database was there already).

    Concurrent callers (several simulator processes starting against one
    database) are serialised with a PostgreSQL advisory lock or SQLite's
    write lock, so the second one finds the schema already upgraded. A failure says what the user can
    do (a PostgreSQL lock another session holds: which, and whose; a full disk: rolled back, unchanged).
    """
    from alembic.util import CommandError

    from controlplane.storage.schema_upgrade import migrate

    owns_engine = not isinstance(engine_or_url, Engine)
    engine = make_engine(engine_or_url) if owns_engine else engine_or_url
    try:
        current = current_revisions(engine)
        _refuse_unknown(engine, current)
        _refuse_downgrade(engine, current, revision)
        return migrate(engine, _alembic_config(), current, revision)
    except CommandError as exc:  # (a target revision no migration has)
        raise _no_such_revision(engine, revision, exc) from None
    finally:
        if owns_engine:
            engine.dispose()


@contextmanager
def foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: ``PRAGMA foreign_keys=OFF`` on ``connection`` while migrating, ON again after (other
    databases: nothing). A revision that rebuilds a table (0005: ``run``) drops the old one, which
    with foreign keys on deletes every row referencing it first (``ON DELETE CASCADE``); the pragma
    cannot change inside a transaction, so it is set on the driver's connection before one begins."""
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _no_such_revision(engine: Engine, revision: str, exc: Exception) -> StorageError:
    return StorageError(f"cannot upgrade {describe_url(engine)} to {revision!r}: {exc}; "
                        f"its migrations are {', '.join(sorted(_known_revisions()))}")


def _refuse_downgrade(engine: Engine, current: set[str], revision: str) -> None:
    """A target revision the database is already past is an error (Alembic's upgrade to it does nothing, and
    `controlplane db upgrade` said "database at revision 0004" as if it had gone there): going back is
    Alembic's downgrade, which drops what the later revisions added; the error gives its command. ``base`` (no
    revision) is past for every database that has one. A target Alembic cannot locate is one line too."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if revision in ("head", "heads"):
        return
    script = ScriptDirectory.from_config(_alembic_config())
    try:
        targets = {r.revision for r in script.get_revisions(revision) if r is not None}
        if not current:
            return
        behind = {r.revision for cur in current for r in script.iterate_revisions(cur, "base")} - current
    except CommandError as exc:  # (``head+1``: Alembic's upgrade to it failed an assertion, a traceback)
        raise _no_such_revision(engine, revision, exc) from None
    except Exception:  # noqa: BLE001 - a revision Alembic cannot resolve: its upgrade names it
        return
    # (``base``, before the first revision, resolves to none: every database with a revision is past it; its
    # upgrade did nothing and said "database at revision 0005", rc 0)
    if not targets or targets <= behind:
        from controlplane.storage.schema_upgrade import alembic_command

        raise StorageError(f"{describe_url(engine)} is at revision {', '.join(sorted(current))}, already past "
                           f"{revision!r}: an upgrade does not go back; going back drops what the later revisions "
                           f"added, with Alembic (from any folder): "
                           f"`{alembic_command(engine, f'downgrade {revision}')}`"
                           + (" (with the password)" if "***" in describe_url(engine) else ""))


def prepare_schema(engine: Engine) -> bool:
    """Get ready for `ensure_schema` without writing anything; return whether the schema is at
    head already (then the run need not check it again). A SQLite file that does not exist yet
    is not created (`ensure_schema` makes it from ``controlplane.storage.sqlite_schema``'s
    statements, no Alembic), and False returned. Otherwise ``alembic_version`` is read (False if it cannot
    be: `ensure_schema` then reports why). A writer process does this while its run is still
    starting."""
    path = sqlite_path(engine)
    if path is not None and not path.exists():
        return False
    return recorded_revisions(engine) == {SCHEMA_HEAD}


#: The newest migration in ``alembic/versions``; a test keeps it equal to Alembic's head. A
#: database already there is recognised without importing Alembic (a fifth of a second).
SCHEMA_HEAD: Final = "0005"


def recorded_revisions(engine: Engine) -> set[str]:
    """``alembic_version`` read with plain SQL; empty when the table does not exist yet. Any other
    failure is raised: a role that may not read it (``permission denied``) is told so, not that the
    database holds no controlplane schema."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as connection:
            return {row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))}
    except DBAPIError as exc:
        if _no_such_table(exc):
            return set()
        raise


def _no_such_table(exc: BaseException) -> bool:
    """Whether a driver's error says the table does not exist (PostgreSQL's ``undefined_table``, SQLite's
    ``no such table``, MySQL's 1146)."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) == "42P01":
        return True
    text = str(orig).lower()
    return "no such table" in text or ("alembic_version" in text and ("does not exist" in text or "doesn't exist" in text))


def ensure_schema(engine: Engine) -> bool:
    """Upgrade the database to head unless it is already there; return whether it upgraded.

    The check reads only ``alembic_version``, so calling this at every start
    is cheap. A database migrated by newer code is refused rather than
    silently written with an older schema's assumptions. An upgrade of a schema is logged as a
    warning, on stderr (``upgraded the schema of URL from 0003 to 0005``); a new one is made quietly.
    """
    from controlplane.storage.schema_upgrade import refuse_upgrade, upgrades_allowed

    allowed = upgrades_allowed()  # ($CONTROLPLANE_SCHEMA_UPGRADE=never: a schema behind is refused, not upgraded)
    if recorded_revisions(engine) == {SCHEMA_HEAD}:
        return False
    if sqlite_path(engine) is not None:  # a new SQLite file: the migrated schema without Alembic
        if sqlite_schema.REVISION == SCHEMA_HEAD and sqlite_schema.create_if_new(engine, SCHEMA_HEAD,
                                                                                 _SQLITE_BEGIN_OPTION):
            return True
    current = current_revisions(engine)
    if current == head_revisions():
        return False
    _refuse_unknown(engine, current)
    if current and not allowed:  # (a new database gets its schema whatever the setting)
        refuse_upgrade(engine, current, head_revisions())
    if applied := upgrade(engine):  # (not when another process did it meanwhile)
        log.warning("%s", applied.line)  # (on stderr: older releases may not open it now)
    return True


def _refuse_unknown(engine: Engine, current: set[str]) -> None:
    """A database migrated by newer code (a revision none of these migrations has) is an error."""
    unknown = current - _known_revisions()
    if unknown:
        from controlplane.storage.schema_upgrade import revisions_text

        raise StorageError(
            f"{describe_url(engine)} is at revision {revisions_text(current)}, ahead of this controlplane (its latest "
            f"is {revisions_text(head_revisions())}; {revisions_text(unknown)} unknown to it): a newer controlplane "
            "upgraded it, and this one refuses it; upgrade controlplane")
