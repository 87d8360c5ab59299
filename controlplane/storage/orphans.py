"""A run's rows left behind by its deletion outside controlplane, and deleting a run with all its rows.

``DELETE FROM run WHERE id = N`` in plain SQL on SQLite (``sqlite3 x.db ...``: no ``PRAGMA
foreign_keys=ON``, so no ``ON DELETE CASCADE``) removes the run row and leaves its requests,
decisions, metric samples, worker events and iterations in their tables. Since revision 0005 a
SQLite run id is never given twice (``AUTOINCREMENT``, its sequence seeded past every ``run_id``
stored), as PostgreSQL's sequence never does; should a new run's id still name such rows (a
sequence set back by hand), the run is not started (:func:`refuse_orphans`): its rows would be
mixed with them. :func:`delete_run` (``controlplane runs delete``) deletes a run and every row
naming its id, whether or not its run row is still there.
"""

from __future__ import annotations

from typing import Any, Callable, Final

from controlplane.storage.errors import StorageError

__all__ = ["CHILD_TABLES", "OrphanRows", "delete_run", "delete_sweep_row", "refuse_orphans", "sweep_of",
           "tables_with_rows"]

#: The tables whose ``run_id`` names a run: each run's rows (``ON DELETE CASCADE``).
CHILD_TABLES: Final = ("request", "decision", "metric_sample", "worker_event", "iteration")

#: Which child tables hold a row of run ``:id`` (each an indexed lookup: every child table's index leads with
#: ``run_id``). The same text for ``sqlite3`` and SQLAlchemy's ``text()``; SQLite and PostgreSQL both take it.
_WHICH: Final = " UNION ALL ".join(
    f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM {t} WHERE run_id = :id)" for t in CHILD_TABLES)


class OrphanRows(StorageError):
    """A new run's id already names rows: a run of that id was deleted without its rows."""


def tables_with_rows(execute: Callable[[str, dict[str, Any]], Any], run_id: int) -> list[str]:
    """The child tables holding a row of ``run_id``; ``execute(sql, params)`` is ``sqlite3``'s or
    (with ``text()``) SQLAlchemy's."""
    return [row[0] for row in execute(_WHICH, {"id": run_id})]


def orphan_message(run_id: int, tables: list[str], url: str) -> str:
    return (f"could not start run in {url}: its new id {run_id} already names rows in {', '.join(tables)}, left by a "
            f"run {run_id} deleted without them (plain SQL on SQLite deletes no rows of other tables: no foreign-key "
            f"pragma, no cascade); a run of that id would be mixed with them, so none was started. Delete them "
            f"with `controlplane runs delete {run_id} --yes --db URL` (docs/configuration.md, \"Deleting runs\")")


def refuse_orphans(connection: Any, run_id: int, url: str) -> None:
    """Raise `OrphanRows` (the caller's transaction, the run row's insert, is rolled back) where a child
    table already holds rows of the new run ``run_id``. ``connection``: SQLAlchemy's."""
    from sqlalchemy import text

    tables = tables_with_rows(lambda sql, params: connection.execute(text(sql), params), run_id)
    if tables:
        raise OrphanRows(orphan_message(run_id, tables, url))


def delete_run(engine: Any, run_id: int) -> dict[str, int]:
    """Delete run ``run_id`` and every row naming it, in one transaction; return how many of each table
    (``run`` 0 where only rows left without their run were there). Each table's rows are deleted
    explicitly, so a connection without SQLite's foreign-key pragma, or rows whose run is gone, lose
    nothing to chance."""
    from sqlalchemy import text

    counts: dict[str, int] = {}
    with engine.begin() as connection:
        for table in CHILD_TABLES:
            counts[table] = connection.execute(text(f"DELETE FROM {table} WHERE run_id = :id"), {"id": run_id}).rowcount
        counts["run"] = connection.execute(text("DELETE FROM run WHERE id = :id"), {"id": run_id}).rowcount
    return counts


def count_rows(engine: Any, run_id: int) -> dict[str, int]:
    """How many rows of each child table name ``run_id``, and ``run``: 1 where its run row is there."""
    from sqlalchemy import text

    with engine.connect() as connection:
        counts = {t: connection.execute(text(f"SELECT count(*) FROM {t} WHERE run_id = :id"), {"id": run_id}).scalar()
                  for t in CHILD_TABLES}
        counts["run"] = connection.execute(text("SELECT count(*) FROM run WHERE id = :id"), {"id": run_id}).scalar()
    return counts


def sweep_of(engine: Any, sweep_id: int) -> tuple[dict[str, Any] | None, list[int]]:
    """Sweep (or search) ``sweep_id``'s row (``id``, ``name``, ``kind``, ``status``, ``num_runs``; None where it is
    not there) and the ids of the runs naming it (``run.sweep_id``), in order."""
    from sqlalchemy import text

    with engine.connect() as connection:
        row = connection.execute(text("SELECT id, name, kind, status, num_runs FROM sweep WHERE id = :id"),
                                 {"id": sweep_id}).mappings().first()
        runs = list(connection.execute(text("SELECT id FROM run WHERE sweep_id = :id ORDER BY id"),
                                       {"id": sweep_id}).scalars())
    return (dict(row) if row is not None else None), runs


def delete_sweep_row(engine: Any, sweep_id: int) -> int:
    """Delete sweep ``sweep_id``'s row (its runs deleted first, each with `delete_run`); return 1, or 0 where it
    was not there. Its id is never given again (``AUTOINCREMENT``, PostgreSQL's sequence)."""
    from sqlalchemy import text

    with engine.begin() as connection:
        return connection.execute(text("DELETE FROM sweep WHERE id = :id"), {"id": sweep_id}).rowcount
