"""Surveys and the members' profiles; posts and drops `to=<segment>` and their DMs.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# On SQLite an INTEGER PRIMARY KEY is the 64-bit rowid; elsewhere a BIGINT sequence.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "survey",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("source_key", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("question", sa.String(length=255), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("opened_by", sa.BigInteger(), nullable=True),
        sa.Column("opened_at", UTC, nullable=False),
        sa.Column("closes_at", UTC, nullable=False),
        sa.Column("closed_at", UTC, nullable=True),
        sa.Column("announced_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey")),
        sa.UniqueConstraint("source_key", name="uq_survey_source_key"),
    )
    with op.batch_alter_table("survey") as batch_op:
        batch_op.create_index("ix_survey_chat_id_id", ["chat_id", "id"], unique=False)
    op.create_table(
        "survey_answer",
        sa.Column("survey_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("option", sa.Integer(), nullable=False),
        sa.Column("answered_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("survey_id", "user_id", name=op.f("pk_survey_answer")),
    )
    op.create_table(
        "member_profile",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=100), nullable=False),
        sa.Column("survey_id", sa.BigInteger(), nullable=True),
        sa.Column("answered_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_member_profile")),
    )
    op.create_table(
        "segment_delivery",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("post_id", sa.BigInteger(), nullable=False),
        sa.Column("occurrence", UTC, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_delivery")),
        sa.UniqueConstraint(
            "post_id", "occurrence", "user_id", name="uq_segment_delivery_post_id"
        ),
    )
    with op.batch_alter_table("promo_post") as batch_op:
        batch_op.add_column(sa.Column("segment", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("promo_post") as batch_op:
        batch_op.drop_column("segment")
    op.drop_table("segment_delivery")
    op.drop_table("member_profile")
    op.drop_table("survey_answer")
    with op.batch_alter_table("survey") as batch_op:
        batch_op.drop_index("ix_survey_chat_id_id")
    op.drop_table("survey")
