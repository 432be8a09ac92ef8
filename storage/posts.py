"""What the games' posts have in common in the database.

A game (a vote, a guess-the-price round) that closed while its result post could not be
sent — the bot stopped between the close's commit and the send — is found again at the
next start by its result stamp: still null on a closed game.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession


async def closed_unannounced(
    session: AsyncSession, table: Table, stamp: str, since: datetime
) -> list[int]:
    """Ids of `table`'s games closed since `since` whose result post was never recorded
    as sent (its column `stamp` still null), oldest first."""
    rows = await session.execute(
        select(table.c.id)
        .where(table.c.state == "closed", table.c[stamp].is_(None), table.c.closed_at >= since)
        .order_by(table.c.id)
    )
    return [int(i) for i in rows.scalars().all() if i is not None]
