"""Guess-the-price rounds, votes and invite links.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# On SQLite an INTEGER PRIMARY KEY is the 64-bit rowid; elsewhere a BIGINT sequence.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "guess_round",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("open_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("source_key", sa.String(length=64), nullable=False),
        sa.Column("product", sa.String(length=255), nullable=False),
        sa.Column("photo_file_id", sa.String(length=255), nullable=True),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("prize", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("max_winners", sa.Integer(), nullable=False),
        sa.Column("tolerance_cents", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("guessers", sa.Integer(), nullable=False),
        sa.Column("winners", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("opened_by", sa.BigInteger(), nullable=True),
        sa.Column("opened_at", UTC, nullable=False),
        sa.Column("closes_at", UTC, nullable=False),
        sa.Column("closed_at", UTC, nullable=True),
        sa.Column("revealed_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guess_round")),
        sa.UniqueConstraint("open_chat_id", name="uq_guess_round_open_chat_id"),
        sa.UniqueConstraint("source_key", name="uq_guess_round_source_key"),
    )
    op.create_index("ix_guess_round_chat_id_id", "guess_round", ["chat_id", "id"])
    op.create_table(
        "price_guess",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("round_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cents", sa.BigInteger(), nullable=False),
        sa.Column("won", sa.Boolean(), nullable=False),
        sa.Column("source_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_guess")),
        sa.UniqueConstraint("round_id", "user_id", "attempt", name="uq_price_guess_round_id"),
        sa.UniqueConstraint("source_key", name="uq_price_guess_source_key"),
    )
    op.create_table(
        "vote",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("source_key", sa.String(length=64), nullable=False),
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
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vote")),
        sa.UniqueConstraint("source_key", name="uq_vote_source_key"),
    )
    op.create_index("ix_vote_chat_id_id", "vote", ["chat_id", "id"])
    op.create_table(
        "vote_ballot",
        sa.Column("vote_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("option", sa.Integer(), nullable=False),
        sa.Column("cast_at", UTC, nullable=False),
        sa.Column("changed_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("vote_id", "user_id", name=op.f("pk_vote_ballot")),
    )
    op.create_table(
        "invite_link",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("link", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("chat_id", "user_id", name=op.f("pk_invite_link")),
        sa.UniqueConstraint("link", name="uq_invite_link_link"),
    )
    op.create_table(
        "referral",
        sa.Column("newcomer_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("referrer_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("joined_at", UTC, nullable=False),
        sa.Column("credited_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("newcomer_id", name=op.f("pk_referral")),
    )
    op.create_index(
        "ix_referral_referrer_id_chat_id", "referral", ["referrer_id", "chat_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_referral_referrer_id_chat_id", table_name="referral")
    op.drop_table("referral")
    op.drop_table("invite_link")
    op.drop_table("vote_ballot")
    op.drop_index("ix_vote_chat_id_id", table_name="vote")
    op.drop_table("vote")
    op.drop_table("price_guess")
    op.drop_index("ix_guess_round_chat_id_id", table_name="guess_round")
    op.drop_table("guess_round")
