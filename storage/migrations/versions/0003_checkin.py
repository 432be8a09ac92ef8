"""Daily check-in: check-ins, streaks, make-ups and boards.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# On SQLite an INTEGER PRIMARY KEY is the 64-bit rowid; elsewhere a BIGINT sequence.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("member") as batch:
        batch.add_column(sa.Column("last_checkin_day", sa.Date(), nullable=True))
    op.create_table(
        "checkin",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("makeup", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkin")),
        sa.UniqueConstraint("user_id", "day", name=op.f("uq_checkin_user_id_day")),
    )
    op.create_index(op.f("ix_checkin_chat_id_day"), "checkin", ["chat_id", "day"], unique=False)
    op.create_table(
        "checkin_board",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("posted_by", sa.BigInteger(), nullable=True),
        sa.Column("posted_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("chat_id", name=op.f("pk_checkin_board")),
    )


def downgrade() -> None:
    op.drop_table("checkin_board")
    op.drop_index(op.f("ix_checkin_chat_id_day"), table_name="checkin")
    op.drop_table("checkin")
    with op.batch_alter_table("member") as batch:
        batch.drop_column("last_checkin_day")
