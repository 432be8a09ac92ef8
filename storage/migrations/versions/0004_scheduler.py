"""Durable scheduled tasks (the database is the source of truth for what is scheduled).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scheduled_task",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("run_at", UTC, nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("catch_up", sa.Boolean(), nullable=False),
        sa.Column("grace_seconds", sa.Integer(), nullable=False),
        sa.Column("cron", sa.String(length=120), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_at", UTC, nullable=True),
        sa.Column("finished_at", UTC, nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_scheduled_task")),
    )
    op.create_index("ix_scheduled_task_state_run_at", "scheduled_task", ["state", "run_at"])


def downgrade() -> None:
    op.drop_index("ix_scheduled_task_state_run_at", table_name="scheduled_task")
    op.drop_table("scheduled_task")
