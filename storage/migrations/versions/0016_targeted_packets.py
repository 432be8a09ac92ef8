"""Red packets of drops `to=<segment>` (F10): the packet names its segment
(`red_packet.segment`) and who may grab it (`red_packet_eligible`: the segment's members
when it dropped).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("red_packet") as batch_op:
        batch_op.add_column(sa.Column("segment", sa.String(length=16), nullable=True))
    op.create_table(
        "red_packet_eligible",
        sa.Column("packet_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("packet_id", "user_id", name=op.f("pk_red_packet_eligible")),
    )


def downgrade() -> None:
    op.drop_table("red_packet_eligible")
    with op.batch_alter_table("red_packet") as batch_op:
        batch_op.drop_column("segment")
