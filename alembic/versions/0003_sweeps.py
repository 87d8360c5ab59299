"""Sweeps: the ``sweep`` table and each run's ``sweep_id`` and ``sweep_key``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 00:00:00

* ``sweep``: one row per sweep or configuration search (`controlplane sim sweep|search`): its
  spec, the spec's hash (the same spec resumes an unfinished sweep) and a search's result.
* ``run.sweep_id`` / ``run.sweep_key``: the sweep a run belongs to and its point's key there,
  unique together (a resumed sweep skips the keys already stored).

``run.sweep_id`` is deliberately not a foreign key: adding one to SQLite's existing ``run``
table needs a batch (copy and drop) migration, and with foreign keys on, dropping the old
``run`` table would cascade into every run's rows. Plain ``ADD COLUMN`` is safe on both.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweep",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(), nullable=False),
        sa.Column("trace", sa.String(), nullable=True),
        sa.Column("num_runs", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep")),
    )
    op.create_index(op.f("ix_sweep_spec_hash"), "sweep", ["spec_hash"])
    op.add_column("run", sa.Column("sweep_id", sa.Integer(), nullable=True))
    op.add_column("run", sa.Column("sweep_key", sa.String(), nullable=True))
    op.create_index(op.f("ix_run_sweep_id_sweep_key"), "run", ["sweep_id", "sweep_key"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_run_sweep_id_sweep_key"), table_name="run")
    op.drop_column("run", "sweep_key")
    op.drop_column("run", "sweep_id")
    op.drop_index(op.f("ix_sweep_spec_hash"), table_name="sweep")
    op.drop_table("sweep")
