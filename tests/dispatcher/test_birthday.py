"""Birthdays (SPEC F10) through the real Dispatcher and the real scheduler jobs: `/birthday`
in the private chat (validated, once a year, in a group only a pointer to the DM), and
the day's greeting and gift at `birthday_hour` in the shop's timezone — once, across a
restart, 02-29 on 02-28 in a year without one, and at `/start` for a member whose private
chat was not linked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from aiogram.methods import SendMessage
from sqlalchemy import select

from scheduler.core import Scheduler
from storage import ledger
from storage.db import Database
from storage.models import Job, LedgerEntry, LedgerKind, Member
from tests.dispatcher.conftest import GROUP_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person, private_chat

ALICE = 501


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A Shanghai wall-clock time, in UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC) - timedelta(hours=8)


@asynccontextmanager
async def bot(db: Database, clock: Clock) -> AsyncIterator[tuple[Harness, Scheduler]]:
    """One run of the bot: a dispatcher and scheduler on `db`, the start-up steps done
    (the bot's configured timezone is the default, Asia/Shanghai)."""
    scheduler = Scheduler(db, clock=clock)
    async with running(db, scheduler) as h:
        h.dp["clock"] = clock
        await h.dp.emit_startup(bot=h.bot)  # the birthday router's step: the tasks are due
        yield h, scheduler


def dm(h: Harness, user_id: int = ALICE) -> GroupClient:
    user = person(user_id, "Alice")
    return h.member(private_chat(user), user)


async def gifts(db: Database) -> list[LedgerEntry]:
    async with db.transaction(readonly=True) as s:
        rows = await s.execute(
            select(LedgerEntry).where(LedgerEntry.kind == LedgerKind.birthday)  # type: ignore[arg-type]
        )
        return list(rows.scalars())


async def birthday_of(db: Database, user_id: int = ALICE) -> str | None:
    async with db.transaction(readonly=True) as s:
        member = await s.get(Member, user_id)
        return None if member is None else member.birthday


def greetings(h: Harness, user_id: int = ALICE) -> list[str]:
    return [t for t in h.replies(user_id) if "🎂" in t and "50" in t]


async def run_job(h: Harness, scheduler: Scheduler) -> None:
    await scheduler.run_now(Job.birthdays)
    await h.settle()


async def test_in_a_group_it_points_to_the_private_chat_and_changes_nothing(
    bot_db: Database,
) -> None:
    clock = Clock(local(2026, 11, 1, 12))
    async with bot(bot_db, clock) as (h, _):
        alice = h.member(group_chat(GROUP_ID, "Pond"), person(ALICE, "Alice"))
        await alice.send("/birthday 11-05")
        await h.settle()
        assert "/birthday" in h.replies(GROUP_ID)[-1]
        assert await birthday_of(bot_db) is None


async def test_registered_validated_and_changed_once_a_year(bot_db: Database) -> None:
    clock = Clock(local(2026, 3, 1, 12))
    async with bot(bot_db, clock) as (h, _):
        alice = dm(h)
        for bad in ("/birthday 13-01", "/birthday 02-30", "/birthday soon", "/birthday 11-05x"):
            await alice.send(bad)
            await h.settle()
            assert "MM-DD" in h.replies(ALICE)[-1] or "月-日" in h.replies(ALICE)[-1]
        assert await birthday_of(bot_db) is None
        await alice.send("/birthday １１月５日")  # full-width digits, Chinese form
        await h.settle()
        assert "11-05" in h.replies(ALICE)[-1]
        assert await birthday_of(bot_db) == "11-05"
        await alice.send("/birthday 12-24")  # too soon: says from when
        await h.settle()
        assert "2027-03-01" in h.replies(ALICE)[-1]
        assert await birthday_of(bot_db) == "11-05"
        await alice.send("/birthday")
        await h.settle()
        assert "11-05" in h.replies(ALICE)[-1]
        clock.now = local(2027, 3, 1, 12)  # a year on: changeable again
        await alice.send("/birthday 12-24")
        await h.settle()
        assert await birthday_of(bot_db) == "12-24"


async def test_greeting_and_gift_once_at_the_hour_also_across_a_restart(
    bot_db: Database,
) -> None:
    clock = Clock(local(2026, 11, 5, 8, 30))
    async with bot(bot_db, clock) as (h, scheduler):
        alice = dm(h)
        await alice.send("/start")
        await alice.send("/birthday 11-05")
        await run_job(h, scheduler)  # 08:30 local: not yet
        assert await gifts(bot_db) == [] and greetings(h) == []
        clock.now = local(2026, 11, 5, 9, 0)
        await run_job(h, scheduler)
        [gift] = await gifts(bot_db)
        assert gift.delta == 50 and gift.idem_key == f"birthday:{ALICE}:2026"
        assert gift.chat_id is None  # paid shop-wide, in the private chat
        assert len(greetings(h)) == 1
        clock.now = local(2026, 11, 5, 9, 5)
        await run_job(h, scheduler)
    # A restart at 10:00 the same day: the start-up catch-up runs the job at once.
    clock.now = local(2026, 11, 5, 10, 0)
    async with bot(bot_db, clock) as (h2, scheduler2):
        await run_job(h2, scheduler2)
        assert greetings(h2) == []
    assert len(await gifts(bot_db)) == 1
    async with bot_db.transaction(readonly=True) as s:
        assert (await ledger.check_invariant(s)).ok


async def test_down_at_the_hour_paid_when_back_the_same_day_and_a_lost_greeting_resent(
    bot_db: Database,
) -> None:
    clock = Clock(local(2026, 11, 4, 20))
    async with bot(bot_db, clock) as (h, _):
        alice = dm(h)
        await alice.send("/start")
        await alice.send("/birthday 11-05")
        await h.settle()
    # Down from the evening before until 15:00 on the day; the greeting's DM fails.
    clock.now = local(2026, 11, 5, 15)
    async with bot(bot_db, clock) as (h, scheduler):
        h.session.fail_next(SendMessage, chat_id=ALICE, error_code=500, times=100)
        await scheduler.run_now(Job.birthdays)
        assert len(await gifts(bot_db)) == 1
        assert greetings(h) == []
        await h.outbox.stop(drain_timeout=0.1)  # the process ends with the DM unsent
    clock.now = local(2026, 11, 5, 15, 10)
    async with bot(bot_db, clock) as (h, scheduler):
        await run_job(h, scheduler)
        assert len(greetings(h)) == 1
        await run_job(h, scheduler)
        assert len(greetings(h)) == 1
    assert len(await gifts(bot_db)) == 1


@pytest.mark.parametrize(
    ("year", "paid_on"),
    [(2027, (2, 28)), (2028, (2, 29))],  # 2027 has no 02-29, 2028 has
)
async def test_february_29_on_february_28_in_a_year_without_one(
    bot_db: Database, year: int, paid_on: tuple[int, int]
) -> None:
    clock = Clock(local(year - 1, 6, 1, 12))
    async with bot(bot_db, clock) as (h, scheduler):
        alice = dm(h)
        await alice.send("/start")
        await alice.send("/birthday 02-29")
        await h.settle()
        clock.now = local(year, 2, 28, 9, 30)
        await run_job(h, scheduler)
        if paid_on == (2, 28):
            [gift] = await gifts(bot_db)
            assert gift.idem_key == f"birthday:{ALICE}:{year}"
            assert len(greetings(h)) == 1
            clock.now = local(year, 3, 1, 9, 30)
        else:
            assert await gifts(bot_db) == []
            clock.now = local(year, 2, 29, 9, 30)
        await scheduler.run_now(Job.birthdays)  # the task's next time is past by now
        await h.settle()
        assert len(await gifts(bot_db)) == 1
        assert len(greetings(h)) == 1


async def test_unlinked_member_is_paid_and_greeted_at_the_next_start(bot_db: Database) -> None:
    clock = Clock(local(2026, 11, 5, 9, 0))
    async with bot(bot_db, clock) as (h, scheduler):
        alice = dm(h)
        await alice.send("/birthday 11-05")  # never sent /start: the DM is not linked
        await h.settle()
        async with bot_db.transaction() as s:
            member = await s.get(Member, ALICE)
            assert member is not None
            member.dm_linked = False
        await run_job(h, scheduler)
        assert len(await gifts(bot_db)) == 1
        assert greetings(h) == []
        await alice.send("/start")
        await h.settle()
        assert len(greetings(h)) == 1
        clock.now = local(2026, 11, 5, 9, 10)
        await run_job(h, scheduler)
        await alice.send("/start")
        await h.settle()
        assert len(greetings(h)) == 1
