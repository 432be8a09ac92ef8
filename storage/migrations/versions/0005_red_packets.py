"""Red packets and their grabs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# On SQLite an INTEGER PRIMARY KEY is the 64-bit rowid; elsewhere a BIGINT sequence.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "red_packet",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("funder_id", sa.BigInteger(), nullable=True),
        sa.Column("funder_name", sa.String(length=128), nullable=False),
        sa.Column("shop_funded", sa.Boolean(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("shares", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("password", sa.String(length=64), nullable=True),
        sa.Column("taken", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("refunded", sa.BigInteger(), nullable=False),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("closed_at", UTC, nullable=True),
        sa.CheckConstraint(
            "taken >= 0 AND taken <= shares", name=op.f("ck_red_packet_taken_in_range")
        ),
        sa.CheckConstraint(
            "total >= shares AND shares >= 1", name=op.f("ck_red_packet_share_at_least_one")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_red_packet")),
        sa.UniqueConstraint("source_key", name="uq_red_packet_source_key"),
    )
    op.create_index("ix_red_packet_chat_id_state", "red_packet", ["chat_id", "state"])
    op.create_table(
        "red_packet_share",
        sa.Column("packet_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("grabbed_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("packet_id", "seq", name=op.f("pk_red_packet_share")),
        sa.UniqueConstraint(
            "packet_id", "user_id", name="uq_red_packet_share_packet_id_user_id"
        ),
    )


def downgrade() -> None:
    op.drop_table("red_packet_share")
    op.drop_index("ix_red_packet_chat_id_state", table_name="red_packet")
    op.drop_table("red_packet")
