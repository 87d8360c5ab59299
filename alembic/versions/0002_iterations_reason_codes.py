"""Live iteration timings, request reason codes and the recorder's flush marks.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01 00:00:00

* ``iteration``: one row per timed live iteration (calibration read them from ``decision``
  rows with ``action = 'iteration'`` before).
* ``request.reason_code``: why a request was rejected or failed, as a machine reads it.
* ``writer_mark``: each recorder's last committed flush, so a flush whose commit outcome was
  lost is neither lost nor written twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("request") as batch:
        batch.add_column(sa.Column("reason_code", sa.String(), nullable=True))

    op.create_table(
        "iteration",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("end_s", sa.Float(), nullable=False),
        sa.Column("num_prefill_tokens", sa.Integer(), nullable=False),
        sa.Column("num_prefill_seqs", sa.Integer(), nullable=False),
        sa.Column("num_decode_seqs", sa.Integer(), nullable=False),
        sa.Column("sum_decode_context", sa.BigInteger(), nullable=False),
        sa.Column("sum_prefill_context", sa.BigInteger(), nullable=False),
        sa.Column("iteration_s", sa.Float(), nullable=False),
        sa.Column("padded_prefill_tokens", sa.BigInteger(), nullable=True),
        sa.Column("padded_decode_context", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_iteration_run_id_run"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iteration")),
    )
    op.create_index(op.f("ix_iteration_run_id_end_s"), "iteration", ["run_id", "end_s"])

    op.create_table(
        "writer_mark",
        sa.Column("writer", sa.String(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("writer", name=op.f("pk_writer_mark")),
    )


def downgrade() -> None:
    op.drop_table("writer_mark")
    op.drop_index(op.f("ix_iteration_run_id_end_s"), table_name="iteration")
    op.drop_table("iteration")
    with op.batch_alter_table("request") as batch:
        batch.drop_column("reason_code")
