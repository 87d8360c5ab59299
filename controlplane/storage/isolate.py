"""Committing a flush whose rows the database refused, without the refused rows.

:meth:`controlplane.storage.backlog.Backlog.commit` writes a flush with one executemany per table;
when the database refuses a row for good (``IntegrityError``/``DataError``: a repeated request id,
a value a column refuses) the whole transaction rolls back, and so would every retry. Then it
comes here, in a new transaction: each table's rows in a savepoint, and for a table whose
savepoint fails, its rows by bisection in savepoints down to single rows, so every row the
database takes is committed, in the same order, with the writer's mark, and only the refused
ones are set aside (:mod:`controlplane.storage.refused`). Run updates (``finish_run``) go one by
one in savepoints. Only this path uses savepoints: a flush without a refused row is unchanged.

(SQLite savepoints work inside the recorder's transactions because
:func:`controlplane.storage.db.make_engine` turns the driver's own transaction handling off and
emits ``BEGIN`` itself.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from sqlalchemy import Connection, update

from controlplane.storage import spill
from controlplane.storage.bulk import BulkInsert
from controlplane.storage.deleted_runs import deleted_error
from controlplane.storage.models import Run
from controlplane.storage.refused import Refusal
from controlplane.storage.retry import ROW_REFUSED, describe_error
from controlplane.storage.rows import SPECS

__all__ = ["insert_isolated", "update_runs_isolated"]

_RUN: Final = Run.__table__


def insert_isolated(conn: Connection, name: str, insert_: BulkInsert, rows: Sequence[tuple[int, tuple]],
                    refusal: Refusal) -> None:
    """Insert ``rows`` (``(seq, stored tuple)``, in order) of table ``name`` in savepoints;
    add the rows the database refuses to ``refusal``. Other errors are raised."""
    if not rows:
        return
    try:
        with conn.begin_nested():
            insert_.execute(conn, [row for _, row in rows])
        return
    except ROW_REFUSED as exc:
        if len(rows) == 1:
            seq, row = rows[0]
            refusal.add(name, SPECS[name].decoded(row), seq, describe_error(exc))
            return
    middle = len(rows) // 2
    insert_isolated(conn, name, insert_, rows[:middle], refusal)
    insert_isolated(conn, name, insert_, rows[middle:], refusal)


def update_runs_isolated(conn: Connection, updates: Sequence[tuple[int, Mapping]], refusal: Refusal,
                         where: str) -> None:
    """Apply run updates (``(seq, values)``) one by one in savepoints; add the refused ones to ``refusal``."""
    for seq, values in updates:
        changes = {k: v for k, v in values.items() if k != "id"}
        try:
            with conn.begin_nested():
                found = conn.execute(update(_RUN).where(_RUN.c.id == values["id"]).values(changes)).rowcount
        except ROW_REFUSED as exc:
            refusal.add(spill.RUN_UPDATE, dict(values), seq, describe_error(exc))
            continue
        if found == 0:  # (its row deleted since it started: `controlplane.storage.deleted_runs`)
            raise deleted_error([values["id"]], where)
