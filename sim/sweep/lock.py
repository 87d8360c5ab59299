"""One process at a time runs a sweep: two people starting the same spec against one shared
PostgreSQL database would otherwise both resume the same sweep row, the second deleting the
first's run being written (a resume deletes the sweep's unfinished runs) and then failing on a
run the first stored meanwhile (``UniqueViolation`` on ``ix_run_sweep_id_sweep_key``).

The process that runs a sweep holds a PostgreSQL session advisory lock on its id, on a connection
of its own kept open for the sweep's duration; the server drops the lock when that connection
ends, so a sweep whose process was killed can be resumed at once. SQLite takes no lock here.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Connection, Engine, text

from controlplane.errors import ControlPlaneError

__all__ = ["SweepBusy", "SweepLock"]

#: The advisory lock's first key (the second is the sweep id): any constant of controlplane's own.
_LOCK_CLASS: Final = 0x63707377  # "cpsw"


class SweepBusy(ControlPlaneError):
    """The sweep to resume is being run by another process right now."""


class SweepLock:
    """``take(sweep_id)`` holds the sweep for this process (False: another holds it); ``release()``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def take(self, sweep_id: int) -> bool:
        if self._engine.dialect.name != "postgresql":
            return True
        if self._conn is None:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k, :id)"),
                                       {"k": _LOCK_CLASS, "id": sweep_id}).scalar())

    def release(self) -> None:
        if self._conn is not None:
            # The lock is given up at once (the server ends a closed session's locks a moment later: a second
            # process asking right after was refused), then the session ends: `close()` alone gave the connection
            # back to the engine's pool, its session (and the lock) still open until the pool closed it.
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock_all()"))
            except Exception:  # (a connection already broken: its session, and the lock, are gone)
                pass
            self._conn.invalidate()
            self._conn.close()
            self._conn = None
