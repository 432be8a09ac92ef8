"""Scheduled promotion posts, campaigns and broadcasts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# On SQLite an INTEGER PRIMARY KEY is the 64-bit rowid; elsewhere a BIGINT sequence.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "promo_post",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("author_id", sa.BigInteger(), nullable=False),
        sa.Column("preview_chat_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("run_at", UTC, nullable=False),
        sa.Column("cron", sa.String(length=120), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("text", sa.String(length=4096), nullable=False),
        sa.Column("photo_file_id", sa.String(length=255), nullable=True),
        sa.Column("button_text", sa.String(length=64), nullable=True),
        sa.Column("button_url", sa.String(length=1024), nullable=True),
        sa.Column("pin", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("confirmed_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promo_post")),
        sa.UniqueConstraint("source_key", name="uq_promo_post_source_key"),
    )
    op.create_index("ix_promo_post_state_chat_id", "promo_post", ["state", "chat_id"])
    op.create_table(
        "broadcast_delivery",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("post_id", sa.BigInteger(), nullable=False),
        sa.Column("occurrence", UTC, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcast_delivery")),
        sa.UniqueConstraint(
            "post_id", "occurrence", "chat_id", name="uq_broadcast_delivery_post_id"
        ),
    )
    op.create_index(
        "ix_broadcast_delivery_chat_id_occurrence",
        "broadcast_delivery",
        ["chat_id", "occurrence"],
    )
    op.create_table(
        "campaign",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("scope", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("sale_day", sa.Date(), nullable=False),
        sa.Column("phases", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign")),
        sa.UniqueConstraint("scope", "name", name="uq_campaign_scope"),
    )


def downgrade() -> None:
    op.drop_table("campaign")
    op.drop_index("ix_broadcast_delivery_chat_id_occurrence", table_name="broadcast_delivery")
    op.drop_table("broadcast_delivery")
    op.drop_index("ix_promo_post_state_chat_id", table_name="promo_post")
    op.drop_table("promo_post")
