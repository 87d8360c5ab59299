"""SQLite: run and sweep ids are never reused (``AUTOINCREMENT``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 12:00:00

Without ``AUTOINCREMENT`` SQLite gives a new row the largest id in the table plus one, so the id
of a run deleted last came back for the next run. Deleted with plain SQL (``sqlite3 x.db "delete
from run where id=2"``: no ``PRAGMA foreign_keys``, so no ``ON DELETE CASCADE``), the run left its
requests, decisions, ... behind, and the next run, given its id, adopted them: its request rows
were refused as repeated ids, and ``runs export`` returned the deleted run's rows.

On SQLite ``run`` and ``sweep`` are rebuilt with ``INTEGER PRIMARY KEY AUTOINCREMENT`` (every row
copied as it is), and ``sqlite_sequence`` is seeded with the largest id found anywhere: ``run.id``
and every child table's ``run_id`` (so orphan rows of a run deleted earlier are never adopted),
``sweep.id`` and ``run.sweep_id``. PostgreSQL's ``SERIAL`` sequences never give an id twice, and
its foreign keys cascade whatever the client: nothing to do there.

The rebuild drops the old ``run`` table, which with foreign keys on would first delete every
child row (``ON DELETE CASCADE``); ``PRAGMA foreign_keys`` cannot change inside a transaction,
so ``controlplane.storage.db.upgrade`` (and ``alembic/env.py``) turn it off on the migrating
connection before the transaction begins, and this revision refuses to run with it on.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The tables whose ``run_id`` names a run (each run's rows).
CHILD_TABLES: tuple[str, ...] = ("request", "decision", "metric_sample", "worker_event", "iteration")

_RUN_COLUMNS = ("id, name, mode, status, trace, trace_format, seed, config, plugins, started_at, finished_at, "
                "wall_s, sim_end_s, summary, notes, sweep_id, sweep_key")
_RUN_BODY = (
    "\tname VARCHAR, \n"
    "\tmode VARCHAR NOT NULL, \n"
    "\tstatus VARCHAR NOT NULL, \n"
    "\ttrace VARCHAR, \n"
    "\ttrace_format VARCHAR, \n"
    "\tseed INTEGER, \n"
    "\tconfig JSON NOT NULL, \n"
    "\tplugins JSON NOT NULL, \n"
    "\tstarted_at DATETIME NOT NULL, \n"
    "\tfinished_at DATETIME, \n"
    "\twall_s FLOAT, \n"
    "\tsim_end_s FLOAT, \n"
    "\tsummary JSON, \n"
    "\tnotes TEXT, \n"
    "\tsweep_id INTEGER, \n"
    "\tsweep_key VARCHAR")
_SWEEP_COLUMNS = "id, name, kind, status, spec, spec_hash, trace, num_runs, created_at, finished_at, result"
_SWEEP_BODY = (
    "\tname VARCHAR, \n"
    "\tkind VARCHAR NOT NULL, \n"
    "\tstatus VARCHAR NOT NULL, \n"
    "\tspec JSON NOT NULL, \n"
    "\tspec_hash VARCHAR NOT NULL, \n"
    "\ttrace VARCHAR, \n"
    "\tnum_runs INTEGER, \n"
    "\tcreated_at DATETIME NOT NULL, \n"
    "\tfinished_at DATETIME, \n"
    "\tresult JSON")
#: (table, columns, body, index statements, the largest id any row names)
_TABLES = (
    ("run", _RUN_COLUMNS, _RUN_BODY,
     ("CREATE UNIQUE INDEX ix_run_sweep_id_sweep_key ON run (sweep_id, sweep_key)",),
     " UNION ALL ".join(["SELECT max(id) AS m FROM run"] + [f"SELECT max(run_id) FROM {t}" for t in CHILD_TABLES])),
    ("sweep", _SWEEP_COLUMNS, _SWEEP_BODY,
     ("CREATE INDEX ix_sweep_spec_hash ON sweep (spec_hash)",),
     "SELECT max(id) AS m FROM sweep UNION ALL SELECT max(sweep_id) FROM run"),
)


def _refuse_foreign_keys_on() -> None:
    if context.is_offline_mode():
        return
    if op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "revision 0005 rebuilds SQLite's run table, and with foreign keys on dropping the old one would delete "
            "every run's rows (ON DELETE CASCADE): run it with `controlplane db upgrade` (or alembic with this "
            "checkout's alembic/env.py), which turn PRAGMA foreign_keys off for the migration")


def _rebuild(table: str, columns: str, body: str, indexes: Sequence[str], autoincrement: bool) -> None:
    new = f"_{table}_0005"
    key = ("\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n" if autoincrement else "\tid INTEGER NOT NULL, \n")
    end = "\n)" if autoincrement else f", \n\tCONSTRAINT pk_{table} PRIMARY KEY (id)\n)"
    op.execute(f"CREATE TABLE {new} (\n{key}{body}{end}")
    op.execute(f"INSERT INTO {new} ({columns}) SELECT {columns} FROM {table}")
    for index in indexes:
        op.execute(f"DROP INDEX {index.split(' ON ')[0].split()[-1]}")
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {new} RENAME TO {table}")
    for index in indexes:
        op.execute(index)


def upgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        return  # PostgreSQL: SERIAL sequences never reuse an id
    _refuse_foreign_keys_on()
    for table, columns, body, indexes, largest in _TABLES:
        _rebuild(table, columns, body, indexes, autoincrement=True)
        op.execute(f"DELETE FROM sqlite_sequence WHERE name IN ('{table}', '_{table}_0005')")
        op.execute(f"INSERT INTO sqlite_sequence (name, seq) SELECT '{table}', coalesce(max(m), 0) FROM ({largest})")


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    _refuse_foreign_keys_on()
    for table, columns, body, indexes, _ in _TABLES:
        _rebuild(table, columns, body, indexes, autoincrement=False)
        op.execute(f"DELETE FROM sqlite_sequence WHERE name IN ('{table}', '_{table}_0005')")
