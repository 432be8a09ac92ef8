"""The shop (items, coupon codes, redemptions), the lottery (prizes, draws) and
purchases (orders, each member's lifetime spend).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# On SQLite an INTEGER PRIMARY KEY is the 64-bit rowid; elsewhere a BIGINT sequence.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "lottery_draw",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("free_slot", sa.Integer(), nullable=True),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("prize_id", sa.BigInteger(), nullable=True),
        sa.Column("prize_name", sa.String(length=128), nullable=False),
        sa.Column("won_points", sa.BigInteger(), nullable=False),
        sa.Column("redemption_id", sa.BigInteger(), nullable=True),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lottery_draw")),
        sa.UniqueConstraint("source_key", name="uq_lottery_draw_source_key"),
        sa.UniqueConstraint("user_id", "day", "free_slot", name="uq_lottery_draw_user_id"),
    )
    with op.batch_alter_table("lottery_draw") as batch_op:
        batch_op.create_index("ix_lottery_draw_user_id_id", ["user_id", "id"], unique=False)

    op.create_table(
        "lottery_prize",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("stock", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("won", sa.Integer(), nullable=False),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint(
            "stock IS NULL OR stock >= 0", name=op.f("ck_lottery_prize_stock_not_negative")
        ),
        sa.CheckConstraint("weight > 0", name=op.f("ck_lottery_prize_weight_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lottery_prize")),
        sa.UniqueConstraint("source_key", name="uq_lottery_prize_source_key"),
    )
    op.create_table(
        "purchase_order",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("order_no", sa.String(length=100), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("paid_at", UTC, nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_purchase_order_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_order")),
        sa.UniqueConstraint("order_no", name="uq_purchase_order_order_no"),
    )
    with op.batch_alter_table("purchase_order") as batch_op:
        batch_op.create_index("ix_purchase_order_paid_at", ["paid_at"], unique=False)
        batch_op.create_index(
            "ix_purchase_order_user_id_paid_at", ["user_id", "paid_at"], unique=False
        )

    op.create_table(
        "redemption",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("cash_cents", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("via_draw", sa.Boolean(), nullable=False),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("delivered_at", UTC, nullable=True),
        sa.Column("fulfilled_at", UTC, nullable=True),
        sa.Column("refunded_at", UTC, nullable=True),
        sa.Column("handled_by", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemption")),
        sa.UniqueConstraint("source_key", name="uq_redemption_source_key"),
    )
    with op.batch_alter_table("redemption") as batch_op:
        batch_op.create_index("ix_redemption_item_id_user_id", ["item_id", "user_id"], unique=False)
        batch_op.create_index("ix_redemption_user_id_status", ["user_id", "status"], unique=False)

    op.create_table(
        "shop_code",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("redemption_id", sa.BigInteger(), nullable=True),
        sa.Column("generated", sa.Boolean(), nullable=False),
        sa.Column("added_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_code")),
        sa.UniqueConstraint("item_id", "code", name="uq_shop_code_item_id"),
    )
    with op.batch_alter_table("shop_code") as batch_op:
        batch_op.create_index("ix_shop_code_item_id_state", ["item_id", "state"], unique=False)

    op.create_table(
        "shop_item",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("cash_cents", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.BigInteger(), nullable=False),
        sa.Column("pool", sa.Boolean(), nullable=False),
        sa.Column("per_member_limit", sa.Integer(), nullable=False),
        sa.Column("active_from", sa.Date(), nullable=True),
        sa.Column("active_until", sa.Date(), nullable=True),
        sa.Column("on_sale", sa.Boolean(), nullable=False),
        sa.Column("redeemed", sa.Integer(), nullable=False),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.CheckConstraint("cash_cents >= 0", name=op.f("ck_shop_item_cash_not_negative")),
        sa.CheckConstraint("price >= 0", name=op.f("ck_shop_item_price_not_negative")),
        sa.CheckConstraint("stock >= 0", name=op.f("ck_shop_item_stock_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_item")),
        sa.UniqueConstraint("source_key", name="uq_shop_item_source_key"),
    )
    with op.batch_alter_table("member") as batch_op:
        batch_op.add_column(
            sa.Column("lifetime_spent_cents", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("member") as batch_op:
        batch_op.drop_column("lifetime_spent_cents")

    op.drop_table("shop_item")
    with op.batch_alter_table("shop_code") as batch_op:
        batch_op.drop_index("ix_shop_code_item_id_state")

    op.drop_table("shop_code")
    with op.batch_alter_table("redemption") as batch_op:
        batch_op.drop_index("ix_redemption_user_id_status")
        batch_op.drop_index("ix_redemption_item_id_user_id")

    op.drop_table("redemption")
    with op.batch_alter_table("purchase_order") as batch_op:
        batch_op.drop_index("ix_purchase_order_user_id_paid_at")
        batch_op.drop_index("ix_purchase_order_paid_at")

    op.drop_table("purchase_order")
    op.drop_table("lottery_prize")
    with op.batch_alter_table("lottery_draw") as batch_op:
        batch_op.drop_index("ix_lottery_draw_user_id_id")

    op.drop_table("lottery_draw")
