"""Points expiry: earning lots, spent first in first out, expired by a daily job; and
the members' birthdays.

Lots are not rows: a lot is a member's earnings of one local day, and what is left of
the lots before a day is worked out from the ledger (games/expiry.py). The balances held
before this revision become one lot earned now: `points_lot_epoch` records the moment.
`points_expiry_notice` holds the one reminder per member and lot. `member` gains the
birthday (`MM-DD`), when it was set, and the year whose greeting waits for the DM.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC as _UTC
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("member") as batch_op:
        batch_op.add_column(sa.Column("birthday", sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column("birthday_set_at", UTC, nullable=True))
        batch_op.add_column(sa.Column("birthday_greeting", sa.Integer(), nullable=True))
        batch_op.create_index("ix_member_birthday", ["birthday"], unique=False)
    epoch = op.create_table(
        "points_lot_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("lots_from", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_lot_epoch")),
    )
    op.bulk_insert(epoch, [{"id": 1, "lots_from": datetime.now(_UTC)}])
    op.create_table(
        "points_expiry_notice",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("lot_day", sa.Date(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("sent_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("user_id", "lot_day", name=op.f("pk_points_expiry_notice")),
    )


def downgrade() -> None:
    op.drop_table("points_expiry_notice")
    op.drop_table("points_lot_epoch")
    with op.batch_alter_table("member") as batch_op:
        batch_op.drop_index("ix_member_birthday")
        batch_op.drop_column("birthday_greeting")
        batch_op.drop_column("birthday_set_at")
        batch_op.drop_column("birthday")
