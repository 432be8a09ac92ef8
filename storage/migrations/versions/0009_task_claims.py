"""Scheduler claims carry their owner and a heartbeat.

A running task records which process instance runs it (`owner`), the token of that run
(`claim`, so a run that was taken over cannot record its outcome over the new one) and
when the owner last said it was alive (`heartbeat_at`). A claim whose heartbeat went
stale is taken over by the running scheduler within seconds, not after a lease.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("scheduled_task") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("claim", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", UTC, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scheduled_task") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("claim")
        batch.drop_column("owner")
