"""Points expiry (SPEC F14) with the real scheduler job on a real SQLite file: the lots
are spent first in first out, what is left of a lot N days old expires once (also when
the run is taken over after a crash, or run again after a restart), the reminder goes
out once, R days before, saying how many points expire on which day, and the balances
from before lots began count as one lot of that moment. Expiry switched on by the shop's
operator long after lots began (or on again after it was off) takes nothing at once: what
was earned before is one lot of the switch-on; a new N while on keeps the lots' days."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select, update
from sqlmodel import col

from scheduler.core import Scheduler
from scheduler.members import ensure_tasks
from storage import ledger
from storage.db import Database
from storage.models import (
    ExpiryNotice,
    Job,
    LedgerEntry,
    LedgerKind,
    Member,
    PointsLotEpoch,
    ScheduledTask,
    ShopSettings,
    TaskState,
)
from tests.dispatcher.conftest import OPERATOR_ID, running
from tests.rig.client import Harness, person, private_chat

ALICE, BOB = 601, 602
TZ = "Asia/Shanghai"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 5) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC) - timedelta(hours=8)


@asynccontextmanager
async def bot(db: Database, clock: Clock) -> AsyncIterator[tuple[Harness, Scheduler]]:
    scheduler = Scheduler(db, clock=clock)
    async with running(db, scheduler) as h:
        h.dp["clock"] = clock
        await ensure_tasks(scheduler, timezone=TZ, language="zh")
        yield h, scheduler


async def setup_shop(db: Database, clock: Clock, epoch: datetime) -> None:
    async with db.transaction() as s:
        await s.execute(update(PointsLotEpoch).values(lots_from=epoch))
        s.add(ShopSettings(id=1, settings={
            "points_expiry_days": 30, "points_expiry_reminder_days": 7,
        }))
    async with bot(db, clock) as (h, _):
        for uid in (ALICE, BOB):
            user = person(uid, f"U{uid}")
            await h.member(private_chat(user), user).send("/start")
        await h.settle()


async def earn(db: Database, uid: int, amount: int, at: datetime, key: str) -> None:
    async with db.transaction() as s:
        await ledger.award(s, user_id=uid, amount=amount, kind=LedgerKind.checkin, key=key, now=at)


async def spend(db: Database, uid: int, amount: int, at: datetime, key: str) -> None:
    async with db.transaction() as s:
        await ledger.spend(s, user_id=uid, amount=amount, kind=LedgerKind.redeem, key=key, now=at)


async def expiries(db: Database) -> list[tuple[int, int, str]]:
    async with db.transaction(readonly=True) as s:
        rows = await s.execute(
            select(col(LedgerEntry.user_id), col(LedgerEntry.delta), col(LedgerEntry.idem_key))
            .where(col(LedgerEntry.kind) == LedgerKind.expire)
            .order_by(col(LedgerEntry.id))
        )
        return [(int(u), int(d), str(k)) for u, d, k in rows.all()]


async def balance(db: Database, uid: int) -> int:
    async with db.transaction(readonly=True) as s:
        member = await s.get(Member, uid)
        assert member is not None
        return member.balance


def reminders(h: Harness, uid: int) -> list[str]:
    return [t for t in h.replies(uid) if t.startswith("⏳")]


async def run_on(h: Harness, scheduler: Scheduler, clock: Clock, when: datetime) -> None:
    clock.now = when
    assert await scheduler.run_now(Job.points_expiry) == TaskState.pending
    await h.settle()


async def test_lots_expire_fifo_once_across_a_takeover_and_a_restart_reminded_once(
    bot_db: Database,
) -> None:
    clock = Clock(local(2026, 2, 20, 12))
    await setup_shop(bot_db, clock, epoch=local(2026, 1, 1, 0, 0))
    await earn(bot_db, ALICE, 100, local(2026, 3, 1, 10), "e1")
    await spend(bot_db, ALICE, 30, local(2026, 3, 5, 10), "s1")  # from the 03-01 lot
    await earn(bot_db, ALICE, 40, local(2026, 3, 10, 10), "e2")
    async with bot(bot_db, clock) as (h, scheduler):
        # 03-24: the 03-01 lot expires in 7 days, 70 of it left.
        await run_on(h, scheduler, clock, local(2026, 3, 24))
        [reminder] = reminders(h, ALICE)
        assert "70" in reminder and "2026-03-31" in reminder
        assert await expiries(bot_db) == []
    # A restart the same day: the reminder is not sent again.
    async with bot(bot_db, clock) as (h, scheduler):
        async with bot_db.transaction() as s:  # the daily run due again (a catch-up)
            await s.execute(update(ScheduledTask).where(
                col(ScheduledTask.key) == Job.points_expiry).values(run_at=clock.now))
        await run_on(h, scheduler, clock, local(2026, 3, 24, 0, 30))
        assert reminders(h, ALICE) == []
        # 03-31: what is left of the 03-01 lot expires; the 03-10 lot stays.
        await run_on(h, scheduler, clock, local(2026, 3, 31))
        assert await expiries(bot_db) == [(ALICE, -70, f"expire:{ALICE}:2026-03-01")]
        assert await balance(bot_db, ALICE) == 40
        # The run taken over after a crash (its row handed back): nothing twice.
        async with bot_db.transaction() as s:
            await s.execute(update(ScheduledTask).where(
                col(ScheduledTask.key) == Job.points_expiry).values(run_at=clock.now))
        await run_on(h, scheduler, clock, local(2026, 3, 31, 0, 10))
        assert len(await expiries(bot_db)) == 1
    clock.now = local(2026, 3, 31, 8)
    async with bot(bot_db, clock) as (h, scheduler):
        async with bot_db.transaction() as s:
            await s.execute(update(ScheduledTask).where(
                col(ScheduledTask.key) == Job.points_expiry).values(run_at=clock.now))
        await run_on(h, scheduler, clock, local(2026, 3, 31, 8))
        assert len(await expiries(bot_db)) == 1
        # The 03-10 lot: reminded on 04-02, expired on 04-09.
        await run_on(h, scheduler, clock, local(2026, 4, 2))
        [reminder] = reminders(h, ALICE)
        assert "40" in reminder and "2026-04-09" in reminder
        await run_on(h, scheduler, clock, local(2026, 4, 9))
        assert [d for _, d, _ in await expiries(bot_db)] == [-70, -40]
    assert await balance(bot_db, ALICE) == 0
    async with bot_db.transaction(readonly=True) as s:
        assert (await ledger.check_invariant(s)).ok
        notices = (await s.execute(select(ExpiryNotice))).scalars().all()
        assert sorted((n.lot_day, n.points) for n in notices) == [
            (date(2026, 3, 1), 70), (date(2026, 3, 10), 40),
        ]
        assert all(n.sent_at is not None for n in notices)


async def test_balances_from_before_lots_began_are_one_lot_of_the_epoch(
    bot_db: Database,
) -> None:
    clock = Clock(local(2026, 1, 1, 12))
    await setup_shop(bot_db, clock, epoch=local(2026, 1, 1, 0, 0))
    await earn(bot_db, BOB, 80, local(2025, 11, 1, 10), "old")  # before the epoch
    await spend(bot_db, BOB, 20, local(2025, 11, 2, 10), "old-spend")
    async with bot(bot_db, clock) as (h, scheduler):
        await run_on(h, scheduler, clock, local(2026, 1, 15))  # 75 days old, but lots began 01-01
        assert await expiries(bot_db) == []
        await run_on(h, scheduler, clock, local(2026, 1, 31))
        assert await expiries(bot_db) == [(BOB, -60, f"expire:{BOB}:2026-01-01")]
    async with bot_db.transaction(readonly=True) as s:
        assert (await ledger.check_invariant(s)).ok


async def test_nothing_expires_while_the_setting_is_off(bot_db: Database) -> None:
    clock = Clock(local(2026, 1, 1, 12))
    await setup_shop(bot_db, clock, epoch=local(2025, 1, 1, 0, 0))
    async with bot_db.transaction() as s:
        await s.execute(update(ShopSettings).values(settings={}))
    await earn(bot_db, BOB, 80, local(2025, 2, 1, 10), "old")
    async with bot(bot_db, clock) as (h, scheduler):
        await run_on(h, scheduler, clock, local(2026, 1, 2))
    assert await expiries(bot_db) == []
    assert await balance(bot_db, BOB) == 80


# -- switching expiry on long after lots began -------------------------------------------

SWITCH_ON = date(2026, 2, 5)  # 400 days after lots began (the migration)


def on_day(day: date, hour: int = 0, minute: int = 5) -> datetime:
    return local(day.year, day.month, day.day, hour, minute)


def after(days: int) -> date:
    return SWITCH_ON + timedelta(days=days)


@asynccontextmanager
async def old_points(db: Database, clock: Clock) -> AsyncIterator[tuple[Harness, Scheduler]]:
    """A shop whose lots began on 2025-01-01, with expiry off, and Alice's 100 points of
    2025-02-01; the bot running, the operator in their private chat with it."""
    async with db.transaction() as s:
        await s.execute(update(PointsLotEpoch).values(lots_from=local(2025, 1, 1, 0, 0)))
    clock.now = local(2025, 1, 20, 12)
    async with bot(db, clock) as (h, scheduler):
        for uid in (ALICE, OPERATOR_ID):
            user = person(uid, f"U{uid}")
            await h.member(private_chat(user), user).send("/start")
        await h.settle()
        await earn(db, ALICE, 100, local(2025, 2, 1, 10), "old")
        yield h, scheduler


async def shop_setting(h: Harness, clock: Clock, when: datetime, args: str) -> None:
    clock.now = when
    op = person(OPERATOR_ID, "Op")
    await h.member(private_chat(op), op).send(f"/settings {args}")
    await h.settle()
    assert "✅" in h.replies(OPERATOR_ID)[-1] or "ℹ️" in h.replies(OPERATOR_ID)[-1]


async def test_expiry_switched_on_long_after_lots_began_takes_nothing_at_once(
    bot_db: Database,
) -> None:
    """Points earned while they did not expire count as earned at the switch-on: the
    next daily run expires nothing, the reminder comes 7 days before the first expiry,
    180 days after the switch-on; the command replayed or sent again moves nothing."""
    clock = Clock(local(2025, 1, 1, 12))
    async with old_points(bot_db, clock) as (h, scheduler):
        clock.now = on_day(SWITCH_ON, 12, 0)
        op = h.member(private_chat(person(OPERATOR_ID, "Op")), person(OPERATOR_ID, "Op"))
        command = op.message("/settings points_expiry_days=180")
        await op.resend(command, h.next_update_id())
        await h.settle()
        assert "points_expiry_days</code>: 0 → <b>180</b>" in h.replies(OPERATOR_ID)[-1]
        answers = len(h.replies(OPERATOR_ID))
        clock.now = on_day(after(3), 12, 0)
        await op.resend(command, h.next_update_id())  # delivered again, days later
        await h.settle()
        assert len(h.replies(OPERATOR_ID)) == answers
        await shop_setting(h, clock, on_day(after(10), 12, 0), "points_expiry_days=180")

        await run_on(h, scheduler, clock, on_day(after(1)))
        assert await expiries(bot_db) == [] and reminders(h, ALICE) == []
        assert await balance(bot_db, ALICE) == 100
        await run_on(h, scheduler, clock, on_day(after(172)))
        assert reminders(h, ALICE) == []
        await run_on(h, scheduler, clock, on_day(after(173)))  # 7 days before
        [reminder] = reminders(h, ALICE)
        assert "100" in reminder and after(180).isoformat() in reminder
        await run_on(h, scheduler, clock, on_day(after(179)))
        assert await expiries(bot_db) == []
        await run_on(h, scheduler, clock, on_day(after(180)))
        assert await expiries(bot_db) == [(ALICE, -100, f"expire:{ALICE}:{SWITCH_ON}")]
    assert await balance(bot_db, ALICE) == 0
    async with bot_db.transaction(readonly=True) as s:
        assert (await ledger.check_invariant(s)).ok


async def test_a_new_n_while_on_keeps_the_lots_days(bot_db: Database) -> None:
    clock = Clock(local(2025, 1, 1, 12))
    async with old_points(bot_db, clock) as (h, scheduler):
        await shop_setting(h, clock, on_day(SWITCH_ON, 12, 0), "points_expiry_days=180")
        await run_on(h, scheduler, clock, on_day(after(1)))
        await shop_setting(h, clock, on_day(after(30), 12, 0), "points_expiry_days=200")
        await run_on(h, scheduler, clock, on_day(after(180)))
        assert await expiries(bot_db) == []
        await run_on(h, scheduler, clock, on_day(after(193)))
        [reminder] = reminders(h, ALICE)
        assert "100" in reminder and after(200).isoformat() in reminder
        await run_on(h, scheduler, clock, on_day(after(200)))  # not 30 + 200 days
        assert await expiries(bot_db) == [(ALICE, -100, f"expire:{ALICE}:{SWITCH_ON}")]


async def test_expiry_off_then_on_again_starts_the_lots_again(bot_db: Database) -> None:
    clock = Clock(local(2025, 1, 1, 12))
    async with old_points(bot_db, clock) as (h, scheduler):
        await shop_setting(h, clock, on_day(SWITCH_ON, 12, 0), "points_expiry_days=180")
        await earn(bot_db, ALICE, 50, on_day(after(10), 10), "newer")
        await run_on(h, scheduler, clock, on_day(after(11)))
        await shop_setting(h, clock, on_day(after(100), 12, 0), "points_expiry_days=0")
        await run_on(h, scheduler, clock, on_day(after(101)))
        again = after(150)
        await shop_setting(h, clock, on_day(again, 12, 0), "points_expiry_days=180")
        for day in (after(180), after(190), again + timedelta(days=172)):
            await run_on(h, scheduler, clock, on_day(day))  # the old lots' days: nothing
        assert await expiries(bot_db) == [] and reminders(h, ALICE) == []
        await run_on(h, scheduler, clock, on_day(again + timedelta(days=173)))
        [reminder] = reminders(h, ALICE)
        assert "150" in reminder and (again + timedelta(days=180)).isoformat() in reminder
        await run_on(h, scheduler, clock, on_day(again + timedelta(days=180)))
        assert await expiries(bot_db) == [(ALICE, -150, f"expire:{ALICE}:{again}")]
