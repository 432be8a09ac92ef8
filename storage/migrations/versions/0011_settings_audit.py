"""Settings an operator changes: the shop-wide defaults (one row) and the audit of every
change (who, when, pond or shop-wide, key, old → new).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# On SQLite an INTEGER PRIMARY KEY is the 64-bit rowid; elsewhere a BIGINT sequence.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shop_settings",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_settings")),
    )
    op.create_table(
        "settings_audit",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("old_value", sa.String(length=600), nullable=False),
        sa.Column("new_value", sa.String(length=600), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settings_audit")),
        sa.UniqueConstraint("source_key", "key", name="uq_settings_audit_source_key"),
    )
    with op.batch_alter_table("settings_audit") as batch_op:
        batch_op.create_index("ix_settings_audit_chat_id_id", ["chat_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("settings_audit") as batch_op:
        batch_op.drop_index("ix_settings_audit_chat_id_id")

    op.drop_table("settings_audit")
    op.drop_table("shop_settings")
