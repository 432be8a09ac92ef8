"""Sales plans: every `/plan <sales> <per_buyer>` an operator set, per pond or shop-wide
(`chat_id` 0), the latest of each the target `/review` compares a campaign with.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# On SQLite an INTEGER PRIMARY KEY is the 64-bit rowid; elsewhere a BIGINT sequence.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sales_plan",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("sales", sa.Integer(), nullable=False),
        sa.Column("per_buyer", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.BigInteger(), nullable=True),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("set_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sales_plan")),
        sa.UniqueConstraint("source_key", name="uq_sales_plan_source_key"),
    )
    with op.batch_alter_table("sales_plan") as batch_op:
        batch_op.create_index("ix_sales_plan_chat_id_id", ["chat_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sales_plan") as batch_op:
        batch_op.drop_index("ix_sales_plan_chat_id_id")

    op.drop_table("sales_plan")
