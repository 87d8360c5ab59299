"""Initial schema: run, request, decision, metric_sample, worker_event.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Types are spelled out here rather than imported from the models, so this
revision keeps describing the schema it created after the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _run_fk(table: str) -> tuple[sa.Column, sa.ForeignKeyConstraint]:
    return (
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f(f"fk_{table}_run_id_run"), ondelete="CASCADE"),
    )


def upgrade() -> None:
    op.create_table(
        "run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("trace", sa.String(), nullable=True),
        sa.Column("trace_format", sa.String(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("plugins", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("wall_s", sa.Float(), nullable=True),
        sa.Column("sim_end_s", sa.Float(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run")),
    )

    op.create_table(
        "request",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        *_run_fk("request"),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("tenant", sa.String(), nullable=True),
        sa.Column("worker_id", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("arrival_s", sa.Float(), nullable=False),
        sa.Column("scheduled_s", sa.Float(), nullable=True),
        sa.Column("first_token_s", sa.Float(), nullable=True),
        sa.Column("finish_s", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("cache_hit", sa.String(), nullable=True),
        sa.Column("num_preemptions", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("guardian_verdict", sa.String(), nullable=True),
        sa.Column("ttft_s", sa.Float(), nullable=True),
        sa.Column("tpot_s", sa.Float(), nullable=True),
        sa.Column("e2e_s", sa.Float(), nullable=True),
        sa.Column("queue_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request")),
        sa.UniqueConstraint("run_id", "request_id", name=op.f("uq_request_run_id_request_id")),
    )

    op.create_table(
        "decision",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        *_run_fk("decision"),
        sa.Column("time_s", sa.Float(), nullable=False),
        sa.Column("plugin", sa.String(), nullable=False),
        sa.Column("hook", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("action", sa.String(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("is_error", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision")),
    )
    op.create_index(op.f("ix_decision_run_id_hook_time_s"), "decision", ["run_id", "hook", "time_s"])

    op.create_table(
        "metric_sample",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        *_run_fk("metric_sample"),
        sa.Column("time_s", sa.Float(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_sample")),
    )
    op.create_index(op.f("ix_metric_sample_run_id_name_time_s"), "metric_sample", ["run_id", "name", "time_s"])

    op.create_table(
        "worker_event",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        *_run_fk("worker_event"),
        sa.Column("time_s", sa.Float(), nullable=False),
        sa.Column("worker_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_event")),
    )
    op.create_index(op.f("ix_worker_event_run_id_time_s"), "worker_event", ["run_id", "time_s"])


def downgrade() -> None:
    op.drop_table("worker_event")
    op.drop_table("metric_sample")
    op.drop_table("decision")
    op.drop_table("request")
    op.drop_table("run")
