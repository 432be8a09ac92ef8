"""Initial schema: ponds, members, memberships and the points ledger.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# On SQLite an INTEGER PRIMARY KEY is the 64-bit rowid; elsewhere a BIGINT sequence.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pond",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("chat_type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("migrated_to", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("chat_id", name=op.f("pk_pond")),
    )
    op.create_table(
        "member",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("username_lower", sa.String(length=64), nullable=True),
        sa.Column("first_name", sa.String(length=128), nullable=False),
        sa.Column("last_name", sa.String(length=128), nullable=False),
        sa.Column("language_code", sa.String(length=16), nullable=True),
        sa.Column("is_bot", sa.Boolean(), nullable=False),
        sa.Column("dm_linked", sa.Boolean(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("lifetime_earned", sa.BigInteger(), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_member_balance_not_negative")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_member")),
    )
    op.create_index(op.f("ix_member_username_lower"), "member", ["username_lower"], unique=False)
    op.create_table(
        "membership",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("joined_at", UTC, nullable=True),
        sa.Column("left_at", UTC, nullable=True),
        sa.Column("first_seen_at", UTC, nullable=False),
        sa.Column("last_seen_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("chat_id", "user_id", name=op.f("pk_membership")),
    )
    op.create_table(
        "ledger_entry",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("idem_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint("delta <> 0", name=op.f("ck_ledger_entry_delta_not_zero")),
        sa.CheckConstraint(
            "balance_after >= 0", name=op.f("ck_ledger_entry_balance_after_not_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entry")),
        sa.UniqueConstraint("idem_key", name=op.f("uq_ledger_entry_idem_key")),
    )
    op.create_index(
        op.f("ix_ledger_entry_user_id_id"), "ledger_entry", ["user_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ledger_entry_user_id_id"), table_name="ledger_entry")
    op.drop_table("ledger_entry")
    op.drop_table("membership")
    op.drop_index(op.f("ix_member_username_lower"), table_name="member")
    op.drop_table("member")
    op.drop_table("pond")
