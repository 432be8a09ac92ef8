"""Points expiry in the database (F14): the ledger sums the daily job reads, the
`expire` entries it writes and the reminders it records.

No lot rows: the rule and why the sums suffice are in games/expiry.py. A lot day's
credits are read as "credits created before the start of the next local day" (the
cut-off instants are worked out by the caller in the shop's timezone); the credits from
before `points_lot_epoch` count from the epoch on: what a member held then is one lot of
the epoch's day. The epoch is written by migration 0013 and moved by `switched` whenever
`points_expiry_days` is switched on (from 0 — the first time, or again after it was
off), in the transaction of the setting's change: points earned while they did not
expire never count as older than the switch-on, so the first expiry comes N days after
it, reminded as usual. The job first reads every member
with points in one aggregate (read-only), then, for the members it found something
for, reads their sums again and writes in one transaction per batch, their member rows
locked first on PostgreSQL (every ledger movement updates that row, so no spending
slips between the sums and the expiry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games import expiry as rules
from storage import ledger
from storage.dialect import insert_for
from storage.models import (
    ExpiryNotice,
    LedgerEntry,
    LedgerKind,
    Member,
    PointsLotEpoch,
)


def expire_key(user_id: int, through: date) -> str:
    return f"expire:{user_id}:{through.isoformat()}"


async def epoch(session: AsyncSession) -> datetime | None:
    """When lots began (the migration, or expiry last switched on); None: every credit
    is a lot of its own."""
    return await session.scalar(select(col(PointsLotEpoch.lots_from)).where(
        col(PointsLotEpoch.id) == 1
    ))


async def switched(session: AsyncSession, was: int, days: int, *, now: datetime) -> None:
    """`points_expiry_days` changes from `was` to `days`, in the same transaction.

    Switched on (`was` 0, `days` > 0): lots begin again at `now` (the epoch moves), so
    everything earned before is one lot earned now, expiring `days` days later. Changing
    N while on keeps the epoch: only the age changes. Any change drops the reminders
    recorded and not yet sent: they name a day that no longer holds (expiry off, the lots
    merged into the new epoch's, another N); the next daily run records the reminders
    due under the new setting. Called only for a change the command has not made before
    (a replayed command changes nothing), and a second "on" is no change at all, so a
    repeated `/settings` never moves the epoch again."""
    if was == days:
        return
    if was == 0 and days > 0:
        table = PointsLotEpoch.__table__  # type: ignore[attr-defined]
        await session.execute(
            insert_for(session, table)
            .values(id=1, lots_from=now)
            .on_conflict_do_update(index_elements=["id"], set_={"lots_from": now})
        )
    await session.execute(delete(ExpiryNotice).where(col(ExpiryNotice.sent_at).is_(None)))


async def sums(
    session: AsyncSession,
    cutoffs: Mapping[date, datetime],
    *,
    users: Sequence[int] | None = None,
    lots_from: datetime | None = None,
) -> list[rules.MemberSums]:
    """Per member with points (or of `users`): credits through each lot day of
    `cutoffs` (lot day -> the UTC instant its next local day starts) and all debits."""
    entry = LedgerEntry.__table__  # type: ignore[attr-defined]
    days = sorted(cutoffs)
    columns: list[Any] = [
        func.sum(case((and_(entry.c.delta > 0, entry.c.created_at < cutoffs[d]), entry.c.delta),
                      else_=0)).label(f"c{i}")
        for i, d in enumerate(days)
    ]
    debits = func.sum(case((entry.c.delta < 0, -entry.c.delta), else_=0)).label("debits")
    query = select(entry.c.user_id, debits, *columns).group_by(entry.c.user_id)
    if users is None:
        holders = select(col(Member.user_id)).where(col(Member.balance) > 0)
        query = query.where(entry.c.user_id.in_(holders))
    else:
        query = query.where(entry.c.user_id.in_(list(users)))
    out: list[rules.MemberSums] = []
    for row in (await session.execute(query)).all():
        credits = {
            d: 0 if lots_from is not None and cutoffs[d] <= lots_from else int(row[2 + i] or 0)
            for i, d in enumerate(days)
        }
        out.append(rules.MemberSums(int(row[0]), credits, int(row[1] or 0)))
    return out


async def lock_members(session: AsyncSession, users: Sequence[int]) -> None:
    """On PostgreSQL, hold the members' rows until the transaction ends (see above)."""
    if session.get_bind().dialect.name != "postgresql" or not users:
        return
    await session.execute(
        select(col(Member.user_id))
        .where(col(Member.user_id).in_(sorted(users)))
        .order_by(col(Member.user_id))
        .with_for_update()
    )


async def expire(session: AsyncSession, plan: rules.Plan, *, now: datetime) -> bool:
    """Write the plan's expiry (once per member and lot day); True if written now."""
    if plan.expire <= 0:
        return False
    move = await ledger.spend(
        session,
        user_id=plan.user_id,
        amount=plan.expire,
        kind=LedgerKind.expire,
        key=expire_key(plan.user_id, plan.through),
        ref=f"lots through {plan.through.isoformat()}",
        now=now,
    )
    return move.applied


@dataclass(frozen=True, slots=True)
class Reminder:
    """One member's reminder: lot day -> (points, the day they expire)."""

    user_id: int
    lots: dict[date, tuple[int, date]]
    first_name: str
    language_code: str | None
    dm_linked: bool


async def record_reminders(
    session: AsyncSession, plans: Sequence[rules.Plan], days: int, *, now: datetime
) -> int:
    """Record the plans' reminders not recorded before (one per member and lot), in two
    statements; how many were new."""
    wanted = [(p.user_id, day, points) for p in plans for day, points in p.reminders.items()]
    if not wanted:
        return 0
    notice = ExpiryNotice.__table__  # type: ignore[attr-defined]
    known = set(
        (int(u), d)
        for u, d in (
            await session.execute(
                select(notice.c.user_id, notice.c.lot_day).where(
                    notice.c.user_id.in_(sorted({u for u, _, _ in wanted})),
                    notice.c.lot_day.in_(sorted({d for _, d, _ in wanted})),
                )
            )
        ).all()
    )
    rows = [
        {"user_id": u, "lot_day": d, "expires_on": rules.expires_on(d, days), "points": points,
         "created_at": now}
        for u, d, points in wanted
        if (u, d) not in known
    ]
    if rows:
        await session.execute(insert(notice), rows)
    return len(rows)


async def unsent(session: AsyncSession, today: date, user_id: int | None = None) -> list[Reminder]:
    """Reminders recorded and not yet answered in a linked DM, for lots not expired yet."""
    query = (
        select(
            col(ExpiryNotice.user_id), col(ExpiryNotice.lot_day), col(ExpiryNotice.points),
            col(ExpiryNotice.expires_on), col(Member.first_name), col(Member.language_code),
            col(Member.dm_linked),
        )
        .join(Member, col(Member.user_id) == col(ExpiryNotice.user_id))
        .where(col(ExpiryNotice.sent_at).is_(None), col(ExpiryNotice.expires_on) > today)
        .where(col(Member.dm_linked).is_(True))
        .order_by(col(ExpiryNotice.user_id), col(ExpiryNotice.lot_day))
    )
    if user_id is not None:
        query = query.where(col(ExpiryNotice.user_id) == user_id)
    grouped: dict[int, Reminder] = {}
    for uid, day, points, on, name, lang, linked in (await session.execute(query)).all():
        r = grouped.get(int(uid))
        if r is None:
            r = grouped[int(uid)] = Reminder(int(uid), {}, str(name), lang, bool(linked))
        r.lots[day] = (int(points), on)
    return list(grouped.values())


async def reminded(
    session: AsyncSession, user_id: int, lot_days: Sequence[date], now: datetime
) -> None:
    """The reminder of these lots reached the member's DM."""
    await session.execute(
        update(ExpiryNotice)
        .where(
            col(ExpiryNotice.user_id) == user_id,
            col(ExpiryNotice.lot_day).in_(list(lot_days)),
            col(ExpiryNotice.sent_at).is_(None),
        )
        .values(sent_at=now)
    )
