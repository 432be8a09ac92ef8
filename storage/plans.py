"""Sales plans (F11/F12): what `/plan` stores and `/review` compares a campaign with.

Every /plan is a row of `sales_plan` (the history stays); the one in force for a scope is
its latest (highest id). A pond's scope is its chat id; a global operator's /plan in their
private chat is shop-wide (`SHOP_WIDE`, 0) and is what a pond without a plan of its own
follows. The command message is the row's `source_key`: a redelivered /plan stores
nothing a second time — and, being older, never wins over a later /plan either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage.dialect import insert_for
from storage.models import SalesPlan

SHOP_WIDE = 0  # the scope of a shop-wide plan (as a shop-wide campaign's)


@dataclass(frozen=True, slots=True)
class StoredPlan:
    sales: int
    per_buyer: int
    shop_wide: bool  # the shop's plan, followed by a pond without its own
    set_at: datetime


async def save_plan(
    session: AsyncSession,
    scope: int,
    sales: int,
    per_buyer: int,
    *,
    set_by: int | None,
    source_key: str,
    now: datetime,
) -> bool:
    """Store a /plan once per command; True when this call stored it."""
    stmt = insert_for(session, SalesPlan.__table__).values(  # type: ignore[attr-defined]
        chat_id=scope, sales=sales, per_buyer=per_buyer, set_by=set_by,
        source_key=source_key, set_at=now,
    )
    result = await session.execute(stmt.on_conflict_do_nothing(index_elements=["source_key"]))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def last_plan(session: AsyncSession, chat_id: int) -> StoredPlan | None:
    """The pond's latest plan, else the shop's latest, else None."""
    own_first = case((col(SalesPlan.chat_id) == SHOP_WIDE, 1), else_=0)
    row = (
        await session.execute(
            select(SalesPlan)
            .where(col(SalesPlan.chat_id).in_([chat_id, SHOP_WIDE]))
            .order_by(own_first, col(SalesPlan.id).desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    return StoredPlan(row.sales, row.per_buyer, row.chat_id == SHOP_WIDE, row.set_at)
