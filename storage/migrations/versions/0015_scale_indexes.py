"""Indexes for ponds with many members: a pond's ledger entries in a span
(`ledger_entry(chat_id, created_at)`: `/stats`, `/review` and the active members read
them; without it each report scans the whole ledger) and a pond's lottery draws of a day
(`lottery_draw(chat_id, day)`: the day's tasks look after every member's action).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_entry") as batch_op:
        batch_op.create_index(
            "ix_ledger_entry_chat_id_created_at", ["chat_id", "created_at"], unique=False
        )
    with op.batch_alter_table("lottery_draw") as batch_op:
        batch_op.create_index("ix_lottery_draw_chat_id_day", ["chat_id", "day"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("lottery_draw") as batch_op:
        batch_op.drop_index("ix_lottery_draw_chat_id_day")
    with op.batch_alter_table("ledger_entry") as batch_op:
        batch_op.drop_index("ix_ledger_entry_chat_id_created_at")
