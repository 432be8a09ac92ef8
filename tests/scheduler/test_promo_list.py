"""`/promo list` through the real Dispatcher shows operators the scheduled work that needs
them besides the posts: a run whose process went silent, a task retrying after failures
(its next attempt and the error, short), one that gave up — in a pond that pond's, in an
operator's DM every pond's and the broadcasts'."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiogram.methods import SendMessage
from sqlalchemy import update

from scheduler.core import Scheduler, TaskRun
from services.i18n import make_i18n
from services.texts.promo import task_label
from storage.db import Database
from storage.migrate import aupgrade
from storage.models import ScheduledTask, TaskState
from tests.dispatcher.conftest import GROUP_ID, OPERATOR_ID, running
from tests.rig.client import group_chat, person, private_chat

T0 = datetime(2026, 10, 20, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
OTHER_POND = -1009999999999


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def bot_db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'pond.db'}"
    await aupgrade(url)
    db = Database(url)
    yield db
    await db.dispose()


async def test_promo_list_shows_stuck_retrying_and_failed_work(bot_db: Database) -> None:
    clock = Clock()
    scheduler = Scheduler(bot_db, clock=clock, max_attempts=3)
    async with running(bot_db, scheduler) as h:
        calls = 0

        async def telegram_away(run: TaskRun) -> None:
            nonlocal calls
            calls += 1
            raise ConnectionError("Cannot connect to host api.telegram.org:443")

        scheduler.jobs["guess.close"] = telegram_away  # the real job's Telegram is away
        group = group_chat(GROUP_ID, "测试鱼塘")
        op = h.member(group, person(OPERATOR_ID, "Op"))
        await op.send("/help")  # the pond is registered
        await h.settle()
        await scheduler.schedule(
            T0, "guess.close", "guess.close:7", {"round_id": 7}, chat_id=GROUP_ID
        )
        await scheduler.schedule(
            T0, "guess.close", "guess.close:8", {"round_id": 8}, chat_id=OTHER_POND
        )
        await scheduler.schedule(
            T0, "red_packet.expire", "red_packet.expire:3", {"packet_id": 3}, chat_id=GROUP_ID
        )
        await scheduler.schedule(
            T0 + timedelta(days=1), "vote.close", "vote.close:4", {"vote_id": 4}, chat_id=GROUP_ID
        )
        assert await scheduler.run_now("guess.close:7") == TaskState.pending
        for _ in range(3):
            await scheduler.run_now("guess.close:8")
            clock.now += timedelta(minutes=1)
        async with bot_db.transaction() as session:  # a process died running the packet's
            await session.execute(
                update(ScheduledTask)
                .where(ScheduledTask.key == "red_packet.expire:3")  # type: ignore[arg-type]
                .values(state="running", owner="gone:1:x", claim="c", heartbeat_at=T0)
            )

        await op.send("/promo list")
        await h.settle()
        here = [m.text for m in h.session.delivered_of(SendMessage) if m.chat_id == GROUP_ID][-1]
        print("\n" + here)
        assert "红包 #3 退款" in here
        assert "猜价格第 #7 轮开奖" in here and "12:00" in here  # next attempt, pond's time
        assert "ConnectionError" in here
        assert "#8" not in here and "投票" not in here  # another pond's; a healthy task

        me = person(OPERATOR_ID, "Op")
        dm = h.member(private_chat(me), me)
        await dm.send("/promo list")
        await h.settle()
        everywhere = [
            m.text for m in h.session.delivered_of(SendMessage) if m.chat_id == OPERATOR_ID
        ][-1]
        assert "#8" in everywhere and "3" in everywhere.split("#8")[1]
        assert "#7" in everywhere and "#3" in everywhere
    assert calls == 4


async def test_promo_list_names_a_drop_task_in_trouble(bot_db: Database) -> None:
    clock = Clock()
    scheduler = Scheduler(bot_db, clock=clock)
    async with running(bot_db, scheduler) as h:
        group = group_chat(GROUP_ID, "测试鱼塘")
        op = h.member(group, person(OPERATOR_ID, "Op"))
        await op.send("/help")  # the pond is registered
        await h.settle()
        await scheduler.schedule(
            T0, "red_packet.drop", "red_packet.drop:7", {"post_id": 7}, chat_id=GROUP_ID
        )
        async with bot_db.transaction() as session:  # it gave up after its retries
            await session.execute(
                update(ScheduledTask)
                .where(ScheduledTask.key == "red_packet.drop:7")  # type: ignore[arg-type]
                .values(state=TaskState.failed, finished_at=T0, attempts=3,
                        last_error="ConnectionError: Telegram is away")
            )
        await op.send("/promo list")
        await h.settle()
        here = [m.text for m in h.session.delivered_of(SendMessage) if m.chat_id == GROUP_ID][-1]
        assert "定时红包 #7" in here and "red_packet.drop" not in here

    i18n = make_i18n("zh")
    with i18n.context(), i18n.use_locale("en"):
        assert task_label("red_packet.drop", {"post_id": 7}, "red_packet.drop:7") == (
            "red-packet drop #7"
        )
