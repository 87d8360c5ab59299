"""Each request's priority and asked output length: ``request.priority``, ``request.max_output_tokens``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 00:00:00

* ``request.priority``: the request's priority class (the trace's ``priority``, the API's), which
  the priority policies (``priority-continuous-batching``, ``priority-classes``) act on; evaluating
  them needed the export joined back to the trace. NULL on rows stored before this revision.
* ``request.max_output_tokens``: the tokens it was to generate (simulated: the trace's output length; live: the
  ``max_tokens`` asked), beside ``output_tokens``, those generated: a rejected or cut-off request's row said 0
  and nothing of what the trace asked. NULL on rows stored before this revision.

A plain nullable ``ADD COLUMN``: no table rebuild on SQLite, no rewrite on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("request", sa.Column("priority", sa.Integer(), nullable=True))
    op.add_column("request", sa.Column("max_output_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("request", "max_output_tokens")
    op.drop_column("request", "priority")
