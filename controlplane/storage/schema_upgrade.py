"""A schema upgrade's run and its words: what it applied, why it failed, where a database stands.

`controlplane.storage.db.upgrade` checks the target, then :func:`migrate` runs the Alembic migrations
in one transaction under a lock (PostgreSQL's advisory lock, SQLite's ``BEGIN IMMEDIATE``) and returns
what they did (:class:`Applied`). Its failures are told in the user's terms:

* PostgreSQL: a statement of the upgrade waits for a table another session holds (an open transaction that
  read it: ``BEGIN; SELECT count(*) FROM request; ...``) until ``lock_timeout`` (30 s, `LOCK_TIMEOUT_S`)
  cancels it. :class:`LockWatch` asks the server who holds it (``pg_blocking_pids``, ``pg_stat_activity``),
  says so on stderr while it waits, and the error names the table, the session (pid, user, application, its
  state and query) and what to do, instead of ``LockNotAvailable: canceling statement due to lock timeout``.
* Any other failure of the migrations (a full disk: ``database or disk is full``) says that the upgrade,
  one transaction, was rolled back and the database is unchanged, at its revision (read again to say so).
  A role or a file that may not be written is left to the callers, which say that the schema needs an
  upgrade this connection may not make (`controlplane.cli.common.open_stored_runs`).

:func:`schema_state` says where a database stands against this code without changing it (`controlplane db
current`); :func:`alembic_command` writes an Alembic command line that works from any folder.
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine

from controlplane.storage.errors import StorageError, database_error, mask_password

__all__ = ["Applied", "LockWatch", "absolute_url", "alembic_command", "may_not_write", "migrate", "revisions_text",
           "schema_state"]

log = logging.getLogger("controlplane.storage")

#: Seconds a PostgreSQL upgrade waits for a lock before :class:`LockWatch` says who holds it, and between
#: its looks after that.
LOCK_NOTE_AFTER_S: Final = 2.0
#: SQLSTATE of a statement that waited ``lock_timeout`` for a lock (``lock_not_available``).
_LOCK_NOT_AVAILABLE: Final = "55P03"
#: Who the upgrade's backend waits for: each lock it has not been granted, and each session blocking it.
_BLOCKERS_SQL: Final = (
    "SELECT w.relation::regclass::text, b.pid, a.usename, a.application_name, a.state, a.xact_start, a.query "
    "FROM pg_locks w CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b(pid) "
    "JOIN pg_stat_activity a ON a.pid = b.pid WHERE w.pid = %(pid)s AND NOT w.granted ORDER BY b.pid")
#: Who holds a lock on one of the schema's tables (the error's own look, where the watch saw none).
_HOLDERS_SQL: Final = (
    "SELECT c.relname, l.pid, a.usename, a.application_name, a.state, a.xact_start, a.query "
    "FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.granted AND l.pid <> pg_backend_pid() AND c.relname = ANY(%(tables)s) "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY c.relname, l.pid")


def revisions_text(revisions: Any) -> str:
    """``0003`` (several: ``0003, 0004``; none: ``none``)."""
    return ", ".join(sorted(revisions)) or "none"


@dataclass(frozen=True)
class Applied:
    """What an upgrade did: the revision(s) before and after it (read under its lock) and the revisions it
    applied, oldest first (none: the database was there already). False when it applied none."""

    url: str
    before: frozenset[str]
    after: frozenset[str]
    revisions: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.revisions)

    @property
    def line(self) -> str:
        """``upgraded the schema of URL from 0003 to 0005`` (a new schema: ``made the schema of URL at 0005``)."""
        if not self.before:
            return f"made the schema of {self.url} at {revisions_text(self.after)}"
        return f"upgraded the schema of {self.url} from {revisions_text(self.before)} to {revisions_text(self.after)}"


def migrate(engine: Engine, config: Any, current: set[str], revision: str) -> Applied:
    """Run the Alembic migrations of ``config`` up to ``revision`` in one transaction (``current``: the
    revisions read before it, for its errors); return what it did. Concurrent callers are serialised with
    a PostgreSQL advisory lock or SQLite's write lock, so the second one finds the schema upgraded."""
    from alembic import command

    from controlplane.storage.db import _PG_MIGRATION_LOCK, _SQLITE_BEGIN_OPTION, describe_url, foreign_keys_off

    watch = LockWatch(engine, f"the schema upgrade of {describe_url(engine)} from {revisions_text(current)} to "
                              f"{revisions_text(_targets(config, revision))}")
    try:
        with engine.connect() as connection, foreign_keys_off(connection):
            if engine.dialect.name == "sqlite":
                connection.execution_options(**{_SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    watch.start(connection)
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                before = _heads(connection)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                after = _heads(connection)
    except Exception as exc:
        raise _explained(engine, exc, current, watch) from None
    finally:
        watch.stop()
    return Applied(describe_url(engine), frozenset(before), frozenset(after), _between(config, before, after))


def _heads(connection: Connection) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(connection).get_current_heads())


def _targets(config: Any, revision: str) -> set[str]:
    """The revision(s) ``revision`` names (``head``: the newest), or itself where Alembic cannot tell."""
    from alembic.script import ScriptDirectory

    try:
        return {r.revision for r in ScriptDirectory.from_config(config).get_revisions(revision) if r is not None}
    except Exception:  # noqa: BLE001 - the upgrade names a revision it cannot locate
        return {revision}


def _between(config: Any, before: set[str], after: set[str]) -> tuple[str, ...]:
    """The revisions above ``before`` up to ``after``, oldest first."""
    from alembic.script import ScriptDirectory

    if before == after:
        return ()
    script = ScriptDirectory.from_config(config)
    found = [r.revision for r in script.iterate_revisions(tuple(after), tuple(before) or "base")]
    return tuple(reversed(found))


def _explained(engine: Engine, exc: BaseException, current: set[str], watch: LockWatch) -> BaseException:
    """The upgrade's failure ``exc`` as the user can act on it (see the module's docstring); ``exc`` itself
    where it is not a database's failure, or one its callers explain (a role or file that may not write)."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError) or may_not_write(exc):
        return exc
    if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
        return StorageError(watch.timed_out(exc))
    from controlplane.storage.db import current_revisions, describe_url

    try:
        now = current_revisions(engine)
    except Exception:  # noqa: BLE001 - unreadable now (a full disk): the transaction's rollback still holds
        now = current
    if now != current:  # (another process's upgrade meanwhile: this one's failure is its own)
        return exc
    room = " (free space on its disk, then run the command again)" if "disk" in str(exc.orig).lower() else ""
    return StorageError(f"{watch.what} failed: {database_error(exc)}; it ran in one transaction, which was rolled "
                        f"back: {describe_url(engine)} is unchanged, at revision {revisions_text(current)}{room}")


def may_not_write(exc: Any) -> bool:
    """A PostgreSQL role without the privilege (``insufficient_privilege``), a SQLite file opened read-only or
    that this user may not write (``SQLITE_READONLY``)."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) == "42501" or (getattr(orig, "sqlite_errorcode", 0) & 0xFF) == 8


class LockWatch:
    """While a PostgreSQL upgrade waits for a lock: who holds it. After `LOCK_NOTE_AFTER_S` of waiting, and
    then as often, a thread asks the server which sessions block the upgrade's (``pg_blocking_pids``) and
    says so once on stderr (a warning); the error of a wait that timed out names them (`timed_out`)."""

    def __init__(self, engine: Engine, what: str) -> None:
        self.engine, self.what = engine, what
        self.blockers: list[tuple] = []
        self._pid: int | None = None
        self._timeout = ""
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, connection: Connection) -> None:
        """Watch ``connection``'s backend (its transaction begun, before its first lock)."""
        self._pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        self._timeout = str(connection.exec_driver_sql("SHOW lock_timeout").scalar())
        self._thread = threading.Thread(target=self._watch, name="controlplane-upgrade-lock-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        told = False
        while not self._done.wait(LOCK_NOTE_AFTER_S):
            try:
                with self.engine.connect() as conn:
                    blockers = [tuple(r) for r in conn.exec_driver_sql(_BLOCKERS_SQL, {"pid": self._pid})]
            except Exception:  # noqa: BLE001 - a look that fails says nothing; the upgrade goes on
                log.debug("storage: who blocks the upgrade could not be read", exc_info=True)
                continue
            if blockers and not self._done.is_set():
                self.blockers = blockers
                if not told:
                    told = True
                    log.warning("%s is waiting for %s (it gives up after lock_timeout, %s)", self.what,
                                _held(blockers), self._timeout or "30s")

    def timed_out(self, exc: BaseException) -> str:
        """The error of an upgrade whose lock wait timed out: what it waited for, who held it, what to do."""
        blockers = self.blockers or self._holders()
        pids = sorted({b[1] for b in blockers})
        who = _held(blockers) if blockers else "a lock another session holds (pg_locks and pg_stat_activity show which)"
        end = (f"end that session's transaction (COMMIT or ROLLBACK where it runs, or as an administrator "
               f"`SELECT pg_terminate_backend({pids[0]})`)" if len(pids) == 1 else
               "end those sessions' transactions (COMMIT or ROLLBACK where they run, or as an administrator "
               f"`SELECT pg_terminate_backend(pid)` of {', '.join(map(str, pids))})" if pids else
               "end the transactions that hold its tables")
        return (f"{self.what} waited lock_timeout ({self._timeout or '30s'}) for {who} and gave up "
                f"({database_error(exc)}); it was rolled back, the database is unchanged: {end}, then run the command "
                "again (the upgrade needs each table to itself for a moment: no transaction may hold one open)")

    def _holders(self) -> list[tuple]:
        """Sessions holding a lock on the schema's tables now (where the watch saw none: a short lock_timeout)."""
        from controlplane.storage.models import metadata

        try:
            with self.engine.connect() as conn:
                tables = [*metadata.tables, "alembic_version"]
                return [tuple(r) for r in conn.exec_driver_sql(_HOLDERS_SQL, {"tables": tables})]
        except Exception:  # noqa: BLE001 - the error then says where to look
            return []


def _held(blockers: list[tuple]) -> str:
    """``a lock on table request held by pid 4242 (...)`` (`_session`); the advisory lock (no table) is another
    upgrade's."""
    tables = sorted({b[0] for b in blockers if b[0]})
    what = (f"a lock on table {', '.join(tables)}" if len(tables) == 1 else
            f"locks on tables {', '.join(tables)}" if tables else "the schema upgrade lock (another upgrade of it)")
    sessions = {b[1]: b for b in blockers}
    return f"{what} held by " + "; ".join(_session(b) for b in sessions.values())


def _session(blocker: tuple) -> str:
    """``pid 4242 (postgres, psql, idle in transaction, in a transaction begun at 15:20:01: SELECT 1)``."""
    _, pid, user, application, state, since, query = blocker
    said = [str(x) for x in (user, application) if x]
    said += [state] if state else []
    said += [f"in a transaction begun at {since.astimezone():%H:%M:%S}"] if since is not None else []
    detail, text = ", ".join(said), " ".join(str(query or "").split())
    if text:
        detail += (": " if detail else "") + text[:80] + ("..." if len(text) > 80 else "")
    return f"pid {pid}" + (f" ({detail})" if detail else "")


def schema_state(engine: Engine, head: str, url: str | None = None) -> tuple[str, str]:
    """Where the database stands against this code's ``head``, read without changing anything: ``(state, text)``,
    state ``none`` (no schema yet), ``current``, ``behind`` (the text says what an upgrade applies) or ``ahead``
    (newer code upgraded it: this code refuses it). ``url``: the database as the user named it (default: the
    engine's, password hidden)."""
    from controlplane.storage.db import _known_revisions, describe_url, recorded_revisions

    url, revisions = mask_password(url) if url else describe_url(engine), recorded_revisions(engine)
    if not revisions:
        return "none", (f"{url}: no controlplane schema (no alembic_version table): the first command that opens it "
                        f"(a replay, `runs list`, `db upgrade`: any but `db current`) makes the schema at revision {head}")
    known = _known_revisions()
    if revisions - known:
        return "ahead", (f"{url}: revision {revisions_text(revisions)}, ahead of this controlplane (its latest is "
                         f"{head}): a newer controlplane upgraded it, and this one refuses it; upgrade controlplane")
    if revisions == {head}:
        return "current", f"{url}: revision {head}, this controlplane's latest: nothing to upgrade"
    from controlplane.storage.db import _alembic_config

    pending = _between(_alembic_config(), revisions, {head})
    who = ("`controlplane db upgrade` does it in place (other commands refuse it: "
           f"{UPGRADE_ENV}=never)" if not upgrades_allowed()
           else "`controlplane db upgrade`, or any command that opens it, does it in place")
    return "behind", (f"{url}: revision {revisions_text(revisions)}, behind this controlplane's {head}: an upgrade "
                      f"applies {', '.join(pending)} ({who}; releases older than this one then refuse it)")


def absolute_url(engine: Engine) -> str:
    """The engine's URL (password hidden) with a SQLite file's path made absolute: a command run from another
    folder (Alembic's from the checkout) reads the same file, not a new one there."""
    from controlplane.storage.db import describe_url

    url = engine.url
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return describe_url(engine)
    prefix = "file:" if database.startswith("file:") else ""
    path = database.removeprefix(prefix)
    if not path or path.startswith("/") or path.startswith(":memory:"):
        return describe_url(engine)
    return mask_password(url.set(database=prefix + os.path.abspath(path)).render_as_string(hide_password=True))


def alembic_command(engine: Engine, action: str) -> str:
    """``alembic -c /checkout/alembic.ini -x url=URL ACTION`` for the engine's database: a command that works from
    any folder (the checkout's config by its path; a SQLite file by its absolute path), quoted for a shell."""
    from controlplane.storage.db import ALEMBIC_DIR

    ini = ALEMBIC_DIR.parent / "alembic.ini"
    return f"alembic -c {shlex.quote(str(ini))} -x {shlex.quote('url=' + absolute_url(engine))} {action}"



#: ``never``: no command upgrades a database's schema on its own (only `controlplane db upgrade` does): for a
#: database shared by processes of several releases, which an upgrade by the newest would lock out.
UPGRADE_ENV: Final = "CONTROLPLANE_SCHEMA_UPGRADE"
_UPGRADE_CHOICES: Final = ("auto", "never")


def upgrades_allowed() -> bool:
    """Whether a command may upgrade a database's schema on its own (``$CONTROLPLANE_SCHEMA_UPGRADE``: ``auto``,
    the default, or ``never``); a StorageError for another value, whatever the database's state."""
    choice = os.environ.get(UPGRADE_ENV, "auto").strip().lower() or "auto"
    if choice not in _UPGRADE_CHOICES:
        raise StorageError(f"{UPGRADE_ENV}={os.environ[UPGRADE_ENV]!r}: give auto (the default: a command upgrades a "
                           "database whose schema is behind) or never (only `controlplane db upgrade` does)")
    return choice == "auto"


def refuse_upgrade(engine: Engine, current: set[str], head: set[str]) -> None:
    """The StorageError of a database whose schema (``current``) is behind ``head`` where upgrades are off."""
    url = mask_password(engine.url.render_as_string(hide_password=True))
    raise StorageError(
        f"{url} is at revision {revisions_text(current)}, behind this controlplane's {revisions_text(head)}, and "
        f"{UPGRADE_ENV}=never: nothing was changed. Upgrade it once every process using it runs this release "
        f"(`controlplane db upgrade --db {shlex.quote(url)}`; older releases refuse it then), or use the release "
        "that wrote it")
