"""A PostgreSQL outage made on purpose, for the outage test and `benchmarks/db_outage.py`: one
database refuses new connections and loses the ones it has, while the server keeps serving
every other database."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, text

__all__ = ["PostgresOutage"]


class PostgresOutage:
    """From ``begin()`` to ``end()``, ``database`` refuses connections and its open ones are
    terminated every ``interval_s``. ``admin`` is an engine on another database of the server."""

    def __init__(self, admin: Engine, database: str, *, interval_s: float = 0.2) -> None:
        self.admin, self.database, self.interval_s = admin, database, interval_s
        self.killed = 0  # connections terminated
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._kill, name=f"outage-{database}", daemon=True)

    def _allow(self, allow: bool) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.database}" WITH ALLOW_CONNECTIONS {str(allow).lower()}'))

    def _kill(self) -> None:
        while not self._stop.is_set():
            with self.admin.connect() as conn:
                self.killed += sum(1 for _ in conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": self.database}))
            self._stop.wait(self.interval_s)

    def begin(self) -> None:
        self._allow(False)
        self._thread.start()

    def end(self) -> None:
        self._stop.set()
        self._thread.join()
        self._allow(True)
