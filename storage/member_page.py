"""What the members' page (F15) reads: the member's ponds, their ledger page by page, their
check-in days of a month. Plain read-only queries over the caller's session.

History pages are keyed by ledger id (`before`), not by offset: the index
`(user_id, id)` finds each page directly, and entries written while the member scrolls
never shift a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    SERVED_TRUST,
    Checkin,
    LedgerEntry,
    Member,
    Membership,
    Pond,
    PondStatus,
)
from storage.repo import GONE

_seat = Membership.__table__  # type: ignore[attr-defined]
_pond = Pond.__table__  # type: ignore[attr-defined]
_entry = LedgerEntry.__table__  # type: ignore[attr-defined]
_checkin = Checkin.__table__  # type: ignore[attr-defined]
_member = Member.__table__  # type: ignore[attr-defined]

PAGE = 50


@dataclass(frozen=True, slots=True)
class PondChoice:
    chat_id: int
    title: str
    timezone: str


@dataclass(frozen=True, slots=True)
class HistoryLine:
    id: int
    delta: int
    balance_after: int
    kind: str
    chat_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CheckinDay:
    day: date
    makeup: bool


async def ponds_of(session: AsyncSession, user_id: int) -> list[PondChoice]:
    """The served ponds the member is in (not left), the most recently active first."""
    rows = await session.execute(
        select(_pond.c.chat_id, _pond.c.title, _pond.c.timezone)
        .select_from(_seat.join(_pond, _pond.c.chat_id == _seat.c.chat_id))
        .where(
            _seat.c.user_id == user_id,
            _seat.c.status.not_in(GONE),
            _pond.c.status == PondStatus.active.value,
            _pond.c.trust.in_([t.value for t in SERVED_TRUST]),
        )
        .order_by(_seat.c.last_seen_at.desc(), _pond.c.chat_id)
    )
    return [PondChoice(int(r.chat_id), r.title, r.timezone) for r in rows]


async def history(
    session: AsyncSession, user_id: int, *, before: int | None = None, limit: int = PAGE
) -> list[HistoryLine]:
    """The member's ledger entries, newest first, `limit` of them with ids below
    `before` (None: from the newest)."""
    query = select(
        _entry.c.id, _entry.c.delta, _entry.c.balance_after, _entry.c.kind, _entry.c.chat_id,
        _entry.c.created_at,
    ).where(_entry.c.user_id == user_id)
    if before is not None:
        query = query.where(_entry.c.id < before)
    rows = await session.execute(query.order_by(_entry.c.id.desc()).limit(limit))
    return [
        HistoryLine(int(r.id), int(r.delta), int(r.balance_after), r.kind,
                    None if r.chat_id is None else int(r.chat_id), r.created_at)
        for r in rows
    ]


async def checkin_days(
    session: AsyncSession, user_id: int, first: date, last: date
) -> list[CheckinDay]:
    """The member's check-in days from `first` to `last` (included), in order. A day is
    the pond's local day it was made for (check-ins are shop-wide, one a day)."""
    rows = await session.execute(
        select(_checkin.c.day, _checkin.c.makeup)
        .where(_checkin.c.user_id == user_id, _checkin.c.day >= first, _checkin.c.day <= last)
        .order_by(_checkin.c.day)
    )
    return [CheckinDay(r.day, bool(r.makeup)) for r in rows]


async def dm_linked(session: AsyncSession, user_id: int) -> bool:
    """Whether the member's private chat is linked (they sent /start and did not block)."""
    found = await session.scalar(select(_member.c.dm_linked).where(_member.c.user_id == user_id))
    return bool(found)
