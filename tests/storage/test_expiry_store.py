"""Points expiry and birthdays in the database, on SQLite and PostgreSQL: the job's
ledger sums against the lot model for members with random histories (before and after
lots began), the expiry written once per lot, the reminders recorded once; a birthday
registered once a year, the gift paid once per year, the greeting waiting until told."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games import expiry as rules
from storage import birthdays, expiry, ledger, repo
from storage.db import Database
from storage.models import ExpiryNotice, LedgerEntry, LedgerKind, Member, PointsLotEpoch

TZ = ZoneInfo("Asia/Shanghai")
EPOCH_DAY = date(2026, 1, 10)


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), TZ).astimezone(UTC)


def cutoff(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), TZ)


async def test_sums_match_the_lot_model_and_expire_once(db: Database) -> None:
    rnd = random.Random(7)
    users = list(range(1, 9))
    models = {u: rules.Lots() for u in users}
    async with db.transaction() as s:
        await s.execute(update(PointsLotEpoch).values(lots_from=at(EPOCH_DAY, 0)))
        for u in users:
            await repo.upsert_member(s, repo.UserInfo(u, f"M{u}"))
    # Before the epoch: a history whose balance becomes one lot of the epoch day.
    async with db.transaction() as s:
        for u in users:
            for i in range(rnd.randint(0, 4)):
                day = EPOCH_DAY - timedelta(days=30 - i)
                await ledger.award(s, user_id=u, amount=rnd.randint(1, 40),
                                   kind=LedgerKind.checkin, key=f"old:{u}:{i}", now=at(day))
            bal = await _balance(s, u)
            if bal:
                models[u].earn(EPOCH_DAY, bal)
    day = EPOCH_DAY
    for n in range(60):
        day += timedelta(days=rnd.randint(0, 2))
        async with db.transaction() as s:
            for u in users:
                if rnd.random() < 0.6:
                    amount = rnd.randint(1, 30)
                    await ledger.award(s, user_id=u, amount=amount, kind=LedgerKind.checkin,
                                       key=f"e:{u}:{n}", now=at(day))
                    models[u].earn(day, amount)
                balance = await _balance(s, u)
                if balance and rnd.random() < 0.4:
                    amount = rnd.randint(1, balance)
                    await ledger.spend(s, user_id=u, amount=amount, kind=LedgerKind.redeem,
                                       key=f"s:{u}:{n}", now=at(day, 13))
                    models[u].spend(amount)
        if n % 10 == 9:  # the daily job, N = 12 days, run twice (a restart)
            through = rules.last_expired_day(day, 12)
            lot_days = rules.reminder_days(day, 12, 3)
            cuts = {d: cutoff(d) for d in rules.cutoffs(through, lot_days)}
            for _ in range(2):
                async with db.transaction() as s:
                    lots_from = await expiry.epoch(s)
                    await expiry.lock_members(s, users)
                    plans = [
                        rules.plan(sums, through, lot_days)
                        for sums in await expiry.sums(s, cuts, users=users, lots_from=lots_from)
                    ]
                    for plan in plans:
                        await expiry.expire(s, plan, now=at(day, 0))
                    await expiry.record_reminders(s, plans, 12, now=at(day, 0))
            for u in users:
                models[u].expire(through)
        # The sums over the ledger say what the model has left, for every lot day.
        days = [EPOCH_DAY + timedelta(days=k) for k in range(-3, (day - EPOCH_DAY).days + 1)]
        async with db.transaction(readonly=True) as s:
            lots_from = await expiry.epoch(s)
            found = {
                x.user_id: x
                for x in await expiry.sums(s, {d: cutoff(d) for d in days}, users=users,
                                           lots_from=lots_from)
            }
            for u in users:
                assert models[u].balance == await _balance(s, u)
                if u in found:
                    for d in days:
                        assert rules.left(found[u].credits[d], found[u].debits) == (
                            models[u].left_through(d)
                        ), (u, d)
    async with db.transaction(readonly=True) as s:
        assert (await ledger.check_invariant(s)).ok
        expired = await s.scalar(
            select(func.count()).where(col(LedgerEntry.kind) == LedgerKind.expire)
        )
        notices = await s.scalar(select(func.count()).select_from(ExpiryNotice))
    assert expired and notices  # the run had lots to expire and to remind of


async def _balance(s: AsyncSession, user_id: int) -> int:
    value = await s.scalar(select(col(Member.balance)).where(col(Member.user_id) == user_id))
    return int(value or 0)


async def test_birthday_registered_paid_once_greeting_waits(db: Database) -> None:
    now = at(date(2026, 3, 1))
    async with db.transaction() as s:
        await repo.upsert_member(s, repo.UserInfo(5, "Five"))
        first = await birthdays.register(s, 5, "02-29", today=date(2026, 3, 1), now=now)
        again = await birthdays.register(s, 5, "03-01", today=date(2026, 3, 2), now=now)
        assert await birthdays.register(s, 6, "03-01", today=date(2026, 3, 2), now=now) is None
    assert first is not None and first.changed
    assert again is not None and not again.changed and again.next_change == date(2027, 3, 1)
    for _ in range(2):
        async with db.transaction() as s:
            due = await birthdays.celebrating(s, ("02-28", "02-29"), 2027)
            paid = await birthdays.pay(s, due, year=2027, points=50, now=now)
    assert paid == []  # the second time: already paid
    async with db.transaction() as s:
        [waiting] = await birthdays.waiting(s, 5)
        assert (waiting.year, waiting.points) == (2027, 50)
        assert await birthdays.waiting(s) == []  # not linked: only /start delivers it
        await birthdays.greeted(s, 5, 2027)
        assert await birthdays.waiting(s, 5) == []
        assert (await ledger.check_invariant(s)).ok
