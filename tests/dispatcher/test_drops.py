"""Scheduled red-packet drops (F6) through the real Dispatcher, with the scheduler on a
clock the test moves: `/redpacket every 0 20 * * * 100 10` makes one packet a day at 20:00
in the pond's time, also when a firing runs again (a retry, a run taken over after a
crash); `phase=warmup` fires on warm-up days only, and never without a campaign (which
`/promo list` says); a time missed past the grace window is recorded missed, one within
it fires late once; a pond admin's drops count against their daily give cap; `/promo
cancel` stops a drop; bad input changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram.methods import SendMessage
from aiogram.types import Chat, Message, User
from sqlalchemy import func, select, update

from scheduler.core import Scheduler, latest_time
from storage import drops, repo
from storage.db import Database
from storage.models import (
    OperatorGiveDay,
    PromoPost,
    RedPacket,
    ScheduledTask,
    TaskState,
)
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, OPERATOR_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person
from tests.rig.fake_session import BOT_ID, FakeSession

# Tuesday 2026-10-20, 12:00 in Shanghai.
T0 = datetime(2026, 10, 20, 4, 0, tzinfo=UTC)
MEMBER_ID = 555
OTHER_GROUP = -1009999999999


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Rig:
    def __init__(self, h: Harness, db: Database, clock: Clock, scheduler: Scheduler) -> None:
        self.h, self.db, self.clock, self.scheduler = h, db, clock, scheduler

    @property
    def session(self) -> FakeSession:
        return self.h.session

    def sent(self) -> list[Any]:
        return [m for m in self.session.delivered_of(SendMessage) if m.chat_id == GROUP_ID]

    def packet_posts(self) -> list[Any]:
        """The packets' posts: messages with the 🧧 grab button."""
        return [
            m
            for m in self.sent()
            if m.reply_markup is not None
            and any(
                (b.callback_data or "").startswith("rp:")
                for row in m.reply_markup.inline_keyboard
                for b in row
            )
        ]

    async def say(self, who: GroupClient, text: str) -> str:
        before = len(self.sent())
        await who.send(text)
        await self.h.settle()
        said = self.sent()[before:]
        return said[-1].text if said else ""

    async def tick(self, to: datetime) -> None:
        self.clock.now = to
        await self.scheduler.sweep()
        await self.scheduler.sweep()
        await self.h.settle()

    async def packets(self) -> list[RedPacket]:
        async with self.db.transaction(readonly=True) as s:
            rows = await s.execute(select(RedPacket).order_by(RedPacket.id))  # type: ignore[arg-type]
            return list(rows.scalars())

    async def drop(self) -> PromoPost:
        async with self.db.transaction(readonly=True) as s:
            rows = await s.execute(select(PromoPost).order_by(PromoPost.id))  # type: ignore[arg-type]
            return list(rows.scalars())[-1]

    async def task(self, drop_id: int | None) -> ScheduledTask:
        assert drop_id is not None
        async with self.db.transaction(readonly=True) as s:
            task = await s.get(ScheduledTask, drops.drop_key(drop_id))
        assert task is not None
        return task


@pytest.fixture
async def rig(bot_db: Database) -> AsyncIterator[Rig]:
    clock = Clock()
    scheduler = Scheduler(bot_db, clock=clock)
    async with running(bot_db, scheduler) as h:
        yield Rig(h, bot_db, clock, scheduler)


@pytest.fixture
def group() -> Chat:
    return group_chat(GROUP_ID, "测试鱼塘")


def local(day: str, hm: str = "20:00") -> datetime:
    """A Shanghai wall time as UTC."""
    return datetime.fromisoformat(f"{day}T{hm}:00+08:00").astimezone(UTC)


async def test_a_daily_drop_makes_one_packet_a_day_at_20_local(rig: Rig, group: Chat) -> None:
    admin = rig.h.member(group, person(ADMIN_ID, "Admin"))
    said = await rig.say(admin, "/redpacket every 0 20 * * * 100 10")
    assert said.startswith("⏰"), said
    drop = await rig.drop()
    assert (await rig.task(drop.id)).run_at == local("2026-10-20")
    assert await rig.packets() == []
    await rig.tick(local("2026-10-20", "19:59"))
    assert rig.packet_posts() == []
    await rig.tick(local("2026-10-20"))
    [packet] = await rig.packets()
    assert packet.shop_funded and packet.total == 100 and packet.shares == 10
    assert packet.funder_id == ADMIN_ID and packet.message_id is not None
    assert packet.source_key == drops.packet_key(drop.id, local("2026-10-20"))  # type: ignore[arg-type]
    [post] = rig.packet_posts()
    assert f"#{packet.id}" in post.text
    # The firing runs again, as after a crash right after it made the packet (its task
    # taken over and due at once): no second packet, no second post.
    async with rig.db.transaction() as s:
        await s.execute(
            update(ScheduledTask)
            .where(ScheduledTask.key == drops.drop_key(drop.id))  # type: ignore[arg-type]
            .values(state=TaskState.pending, run_at=local("2026-10-20", "20:01"))
        )
    await rig.tick(local("2026-10-20", "20:01"))
    await rig.tick(local("2026-10-20", "23:00"))
    assert len(await rig.packets()) == 1 and len(rig.packet_posts()) == 1
    assert (await rig.task(drop.id)).run_at == local("2026-10-21")
    # Next day, once more, once.
    await rig.tick(local("2026-10-21"))
    await rig.tick(local("2026-10-21", "20:02"))
    assert len(await rig.packets()) == 2 and len(rig.packet_posts()) == 2
    # Counted against the pond admin's give cap, day by day.
    async with rig.db.transaction(readonly=True) as s:
        given = (await s.execute(select(OperatorGiveDay.given))).scalars().all()  # type: ignore[call-overload]
    assert list(given) == [100, 100]
    listing = await rig.say(admin, "/promo list")
    assert f"#{drop.id}" in listing and "2026-10-22 20:00" in listing, listing
    assert f"#{(await rig.packets())[-1].id}" in listing


async def test_a_warm_up_drop_fires_on_warm_up_days_only(rig: Rig, group: Chat) -> None:
    op = rig.h.member(group, person(OPERATOR_ID, "Op"))
    said = await rig.say(op, "/redpacket every 0 20 * * * 30 3 phase=预热")
    assert said.startswith("⏰"), said
    drop = await rig.drop()
    listing = await rig.say(op, "/promo list")
    assert "does not fire" in listing or "不会发" in listing, listing
    await rig.tick(local("2026-10-20"))
    assert await rig.packets() == []  # no campaign: never
    assert "📅" in await rig.say(op, "/campaign 双十一 11-11")  # warm-up 11-01..11-10
    listing = await rig.say(op, "/promo list")
    assert f"#{drop.id}" in listing and "2026-11-01 20:00" in listing, listing
    day = local("2026-10-21")
    while day <= local("2026-11-12"):
        await rig.tick(day)
        day += timedelta(days=1)
    made = await rig.packets()
    days = [p.created_at.replace(tzinfo=UTC).astimezone(UTC) for p in made]
    assert days == [local(f"2026-11-{d:02d}") for d in range(1, 11)]
    assert len(rig.packet_posts()) == 10
    # Days outside the phase leave no record: the last outcomes are the packets.
    outcomes = (await rig.task(drop.id)).payload["outcomes"]
    assert [o["what"] for o in outcomes] == ["sent"] * drops.KEPT_OUTCOMES
    # A global operator's drops are not capped.
    async with rig.db.transaction(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(OperatorGiveDay)) == 0


async def test_missed_past_the_grace_window_and_late_within_it(rig: Rig, group: Chat) -> None:
    admin = rig.h.member(group, person(ADMIN_ID, "Admin"))
    await rig.say(admin, "/redpacket every 0 20 * * * 100 10 equal")
    drop = await rig.drop()
    # The bot is down at 20:00 and back at 20:30: more than 10 minutes late.
    await rig.tick(local("2026-10-20", "20:30"))
    assert await rig.packets() == []
    task = await rig.task(drop.id)
    assert task.run_at == local("2026-10-21")
    assert [o["what"] for o in task.payload["outcomes"]] == ["missed"]
    listing = await rig.say(admin, "/promo list")
    assert "missed" in listing or "错过" in listing, listing
    # Next day back at 20:07: within the grace window, sent late, once.
    await rig.tick(local("2026-10-21", "20:07"))
    await rig.tick(local("2026-10-21", "20:09"))
    [packet] = await rig.packets()
    assert packet.source_key == drops.packet_key(drop.id, local("2026-10-21"))  # type: ignore[arg-type]
    assert len(rig.packet_posts()) == 1
    # Down for two days: the first time missed is on record, the one within grace fires.
    await rig.tick(local("2026-10-23", "20:05"))
    assert len(await rig.packets()) == 2
    outcomes = (await rig.task(drop.id)).payload["outcomes"]
    assert [(o["what"], o["at"]) for o in outcomes[-2:]] == [
        ("missed", local("2026-10-22").isoformat()),
        ("sent", local("2026-10-23").isoformat()),
    ]


async def test_cancel_stops_a_drop_and_a_one_off_fires_once(rig: Rig, group: Chat) -> None:
    admin = rig.h.member(group, person(ADMIN_ID, "Admin"))
    await rig.say(admin, "/redpacket every 0 20 * * * 100 10")
    daily = await rig.drop()
    said = await rig.say(admin, f"/promo cancel {daily.id}")
    assert said.startswith("🗑") and "红包" in said, said
    assert (await rig.task(daily.id)).state == TaskState.cancelled
    said = await rig.say(admin, "/redpacket at +2h 50 5 pwd=发财")
    assert said.startswith("⏰"), said
    once = await rig.drop()
    await rig.tick(T0 + timedelta(hours=2))
    await rig.tick(T0 + timedelta(hours=2, minutes=5))
    await rig.tick(local("2026-10-20"))  # the cancelled daily drop's time
    [packet] = await rig.packets()
    assert packet.password == "发财" and packet.total == 50
    assert (await rig.drop()).state == "sent" and once.id == (await rig.drop()).id
    listing = await rig.say(admin, "/promo list")
    assert f"#{daily.id}" not in listing and f"#{once.id} " not in listing


async def test_a_pond_admins_drops_count_against_the_give_cap(rig: Rig, group: Chat) -> None:
    async with rig.db.transaction() as s:
        await repo.upsert_pond(s, GROUP_ID, title="t", chat_type="supergroup")
        await repo.change_pond_settings(s, GROUP_ID, operator_give_daily_cap=150)
    admin = rig.h.member(group, person(ADMIN_ID, "Admin"))
    said = await rig.say(admin, "/redpacket every 0 20 * * * 200 10")
    assert said.startswith("⛔") and "150" in said, said  # could never go out
    await rig.say(admin, "/redpacket every 0 20 * * * 100 10")
    first = await rig.drop()
    await rig.say(admin, "/redpacket every 0 20 * * * 100 5")
    second = await rig.drop()
    await rig.tick(local("2026-10-20"))
    assert len(await rig.packets()) == 1  # 100 + 100 is over 150
    outcomes = [
        (await rig.task(d.id)).payload["outcomes"][-1]["what"] for d in (first, second)
    ]
    assert sorted(outcomes) == ["over_cap", "sent"]
    listing = await rig.say(admin, "/promo list")
    assert "150" in listing, listing


async def test_bad_input_and_members_change_nothing(rig: Rig, group: Chat) -> None:
    admin = rig.h.member(group, person(ADMIN_ID, "Admin"))
    for command in (
        "/redpacket at 2026-10-19 20:00 100 10",  # past
        "/redpacket every 0 20 * * 100 10",  # 4 cron fields
        "/redpacket every 0 25 * * * 100 10",  # hour 25
        "/redpacket every 0 20 * * * 100 100000",  # too many shares
        "/redpacket every 0 20 * * * 5 10",  # shares over points
        "/redpacket every 0 20 * * * 100 10 phase=someday",
        "/redpacket at +1h 100 10 phase=warmup",  # a phase is for recurring drops
        "/redpacket at +1h",
    ):
        said = await rig.say(admin, command)
        assert said.startswith(("⚠️", "⛔")), (command, said)
    member = rig.h.member(group, person(MEMBER_ID, "Mia"))
    said = await rig.say(member, "/redpacket every 0 20 * * * 100 10")
    assert said.startswith("⛔") or "operator" in said.lower() or "管理" in said, said
    async with rig.db.transaction(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(PromoPost)) == 0
        assert await s.scalar(select(func.count()).select_from(ScheduledTask)) == 0
    # A plain /redpacket still works after the drops' router.
    said = await rig.say(admin, "/redpacket 100 10")
    assert len(rig.packet_posts()) == 1


async def test_drops_are_outside_the_marketing_frequency_cap(rig: Rig, group: Chat) -> None:
    admin = rig.h.member(group, person(ADMIN_ID, "Admin"))
    await rig.say(admin, "/redpacket every 0 20 * * * 100 10")
    await rig.say(admin, "/redpacket at 2026-10-21 20:30 100 10")
    # A post the next evening passes the cap (drops are not counted) …
    said = await rig.say(admin, "/promo at 2026-10-21 20:00 今晚直播")
    assert not said.startswith("⛔"), said
    ok = next(
        b.callback_data
        for m in reversed(rig.sent())
        if m.reply_markup is not None
        for row in m.reply_markup.inline_keyboard
        for b in row
        if (b.callback_data or "").startswith("pp:ok:")
    )
    message = Message(
        message_id=77,
        date=rig.h.now,
        chat=group,
        from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"),
        text="👀",
    )
    await admin.click(message, ok)
    await rig.h.settle()
    # … and the drops still fire beside it; a second post that week is capped.
    said = await rig.say(admin, "/promo at 2026-10-22 20:00 又一条")
    assert said.startswith("⛔"), said
    await rig.tick(local("2026-10-20"))
    assert len(await rig.packets()) == 1


async def test_an_anonymous_admins_drop_and_a_redelivered_command(rig: Rig, group: Chat) -> None:
    anon = rig.h.member(group, User(id=1087968824, is_bot=True, first_name="Group"))
    msg = await anon.send("/redpacket at +1h 40 4", sender_chat=group)
    await rig.h.settle()
    drop = await rig.drop()
    assert drop.author_id == GROUP_ID and drop.kind == "drop"
    # The same command delivered again (as by a new process) schedules nothing more.
    said = len(rig.sent())
    await anon.resend(msg, rig.h.next_update_id())
    await rig.h.settle()
    assert len(rig.sent()) == said
    async with rig.db.transaction(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(PromoPost)) == 1
    await rig.tick(T0 + timedelta(hours=1))
    [packet] = await rig.packets()
    assert packet.funder_id is None and packet.funder_name == group.title
    # The group's own allowance counts, like a /redpacket of an anonymous admin.
    async with rig.db.transaction(readonly=True) as s:
        rows = (await s.execute(select(OperatorGiveDay.actor_id, OperatorGiveDay.given))).all()  # type: ignore[call-overload]
    assert [tuple(r) for r in rows] == [(GROUP_ID, 40)]


def test_latest_time_of_a_crontab() -> None:
    at = local("2026-10-20", "20:00")
    assert latest_time("0 20 * * *", "Asia/Shanghai", at) == at
    assert latest_time("0 20 * * *", "Asia/Shanghai", at + timedelta(minutes=3)) == at
    assert latest_time("0 20 * * *", "Asia/Shanghai", at - timedelta(seconds=1)) == at - timedelta(
        days=1
    )
    # Fridays (crontab's 5), from a Tuesday: the last one.
    assert latest_time("0 20 * * fri", "Asia/Shanghai", at) == local("2026-10-16")
    assert latest_time("0 0 1 1 *", "UTC", at) == datetime(2026, 1, 1, tzinfo=UTC)
    assert latest_time("* * * * *", "UTC", at + timedelta(seconds=59)) == at


async def test_a_drop_follows_its_pond_to_the_supergroup(rig: Rig, group: Chat) -> None:
    admin = rig.h.member(group, person(ADMIN_ID, "Admin"))
    await rig.say(admin, "/redpacket at +1h 30 3")
    async with rig.db.transaction() as s:
        await repo.migrate_pond(s, GROUP_ID, OTHER_GROUP)
    await rig.tick(T0 + timedelta(hours=1))
    [packet] = await rig.packets()
    assert packet.chat_id == OTHER_GROUP
    posts = [m for m in rig.session.delivered_of(SendMessage) if m.chat_id == OTHER_GROUP]
    assert len(posts) == 1 and f"#{packet.id}" in posts[0].text
