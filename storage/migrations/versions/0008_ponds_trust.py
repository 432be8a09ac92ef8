"""Trust boundary: which groups are ponds of this shop, and pond operators' daily /give.

Ponds recorded before the boundary become `unchecked`: the first update from each is
checked against its admin list (a global operator among them keeps it served).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("pond") as batch:
        batch.add_column(
            sa.Column("trust", sa.String(length=16), nullable=False, server_default="unchecked")
        )
        batch.add_column(sa.Column("trusted_by", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("trust_changed_at", UTC, nullable=True))
        batch.add_column(sa.Column("stranger_notice_at", UTC, nullable=True))
    op.create_table(
        "operator_give_day",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("actor_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("given", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", "actor_id", "day", name=op.f("pk_operator_give_day")),
    )


def downgrade() -> None:
    op.drop_table("operator_give_day")
    with op.batch_alter_table("pond") as batch:
        batch.drop_column("stranger_notice_at")
        batch.drop_column("trust_changed_at")
        batch.drop_column("trusted_by")
        batch.drop_column("trust")
