"""Birthdays in the database (F10): registering one, paying the day's gifts, the
greetings waiting for a member's private chat.

The birthday is the person's (`member.birthday`, `MM-DD`): one per member, shop-wide,
like their wallet. The gift is a ledger credit of kind `birthday` keyed
`birthday:<user>:<year>`, without a pond (it is paid in the private chat), so a member
is paid once a year whatever they change and however often the job runs. The credit's
transaction also sets `member.birthday_greeting` to the year: the greeting waits there
until its DM is answered (the job sends it when the DM is linked, `/start` otherwise),
so a crash between the payment and the greeting loses neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games import birthday as rules
from storage import ledger
from storage.models import LedgerEntry, LedgerKind, Member


def gift_key(user_id: int, year: int) -> str:
    return f"birthday:{user_id}:{year}"


@dataclass(frozen=True, slots=True)
class Registered:
    """What `/birthday` did: `changed` False when it was refused (`next_change` says from
    when a change is allowed) or the same date was given again (`same`)."""

    birthday: str
    changed: bool
    same: bool = False
    next_change: date | None = None


async def register(
    session: AsyncSession, user_id: int, birthday: str, *, today: date, now: datetime
) -> Registered | None:
    """Set the member's birthday (`MM-DD`, validated by `games.birthday.parse`) unless it
    was set less than a year ago; None for a member the bot does not know. `today` is
    the shop's local day."""
    row = (
        await session.execute(
            select(col(Member.birthday), col(Member.birthday_set_at))
            .where(col(Member.user_id) == user_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        return None
    old, set_at = row
    if old == birthday:
        return Registered(birthday, changed=False, same=True)
    if old is not None and set_at is not None:
        set_on = set_at.date()
        if not rules.may_change(set_on, today):
            return Registered(old, changed=False, next_change=rules.next_change(set_on))
    await session.execute(
        update(Member)
        .where(col(Member.user_id) == user_id)
        .values(birthday=birthday, birthday_set_at=now)
    )
    return Registered(birthday, changed=True)


async def celebrating(
    session: AsyncSession, birthdays: Sequence[str], year: int
) -> list[int]:
    """Members whose birthday is one of `birthdays` (the `MM-DD`s celebrated today) and
    who have not been paid this `year`."""
    users = [
        int(u)
        for u in (
            await session.execute(
                select(col(Member.user_id))
                .where(col(Member.birthday).in_(list(birthdays)), col(Member.is_bot).is_(False))
                .order_by(col(Member.user_id))
            )
        ).scalars()
    ]
    if not users:
        return []
    keys = {gift_key(u, year): u for u in users}
    paid = set(
        (
            await session.execute(
                select(col(LedgerEntry.idem_key)).where(col(LedgerEntry.idem_key).in_(list(keys)))
            )
        ).scalars()
    )
    return [u for k, u in keys.items() if k not in paid]


async def pay(
    session: AsyncSession, users: Sequence[int], *, year: int, points: int, now: datetime
) -> list[int]:
    """Pay this year's gift to each of `users` (once per member and year) and leave their
    greeting waiting; returns the members paid now."""
    if not users or points <= 0:
        return []
    moves = await ledger.award_many(
        session,
        [
            ledger.Award(u, points, LedgerKind.birthday, gift_key(u, year), ref=f"birthday {year}")
            for u in users
        ],
        now=now,
    )
    paid = [m.user_id for m in moves if m.applied]
    if paid:
        await session.execute(
            update(Member).where(col(Member.user_id).in_(paid)).values(birthday_greeting=year)
        )
    return paid


@dataclass(frozen=True, slots=True)
class Greeting:
    """A greeting waiting for its DM: the member, the year and the points paid."""

    user_id: int
    year: int
    points: int
    first_name: str
    language_code: str | None
    dm_linked: bool


async def waiting(session: AsyncSession, user_id: int | None = None) -> list[Greeting]:
    """The greetings paid and not yet answered in their DM (of one member, or all whose
    DM is linked)."""
    query = select(
        col(Member.user_id), col(Member.birthday_greeting), col(Member.first_name),
        col(Member.language_code), col(Member.dm_linked),
    ).where(col(Member.birthday_greeting).is_not(None))
    if user_id is None:
        query = query.where(col(Member.dm_linked).is_(True))
    else:
        query = query.where(col(Member.user_id) == user_id)
    rows = [
        (int(u), int(y or 0), str(n), lang, bool(dm))
        for u, y, n, lang, dm in (await session.execute(query.order_by(col(Member.user_id)))).all()
    ]
    if not rows:
        return []
    keys = [gift_key(u, y) for u, y, *_ in rows]
    points = {
        str(k): int(d)
        for k, d in (
            await session.execute(
                select(col(LedgerEntry.idem_key), col(LedgerEntry.delta)).where(
                    col(LedgerEntry.idem_key).in_(keys)
                )
            )
        ).all()
    }
    return [
        Greeting(u, y, points.get(gift_key(u, y), 0), n, lang, dm)
        for u, y, n, lang, dm in rows
    ]


async def greeted(session: AsyncSession, user_id: int, year: int) -> None:
    """The greeting of `year` reached the member's DM (idempotent)."""
    await session.execute(
        update(Member)
        .where(col(Member.user_id) == user_id, col(Member.birthday_greeting) == year)
        .values(birthday_greeting=None)
    )


async def birthday_of(session: AsyncSession, user_id: int) -> tuple[str | None, datetime | None]:
    row = (
        await session.execute(
            select(col(Member.birthday), col(Member.birthday_set_at)).where(
                col(Member.user_id) == user_id
            )
        )
    ).first()
    return (None, None) if row is None else (row[0], row[1])
