"""Promotion posts, campaigns and the planner through the real Dispatcher, with the
scheduler on a clock the test moves: preview → confirm → the post fires once; who may
confirm; list and cancel; cron in the pond's timezone; the frequency cap; campaign phases
and placeholders; broadcasts; a crash in the middle of a broadcast; /plan."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageText,
    PinChatMessage,
    SendMessage,
    SendPhoto,
    TelegramMethod,
)
from aiogram.types import Chat, Message, PhotoSize, User
from sqlalchemy import func, select, update

from scheduler import promo as promo_jobs
from scheduler.core import Scheduler, TaskRun
from scheduler.deps import JobDeps
from services.i18n import make_i18n
from services.outbox import Outbox
from storage import promo as store
from storage import repo
from storage.db import Database
from storage.models import (
    BroadcastDelivery,
    Pond,
    PondTrust,
    PromoPost,
    PromoState,
    ScheduledTask,
    TaskState,
)
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, OPERATOR_ID, OWNER_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person, private_chat
from tests.rig.fake_session import BOT_ID, FakeSession, make_bot

# Tuesday 2026-10-20, 12:00 in Shanghai.
T0 = datetime(2026, 10, 20, 4, 0, tzinfo=UTC)
OTHER_GROUP = -1009999999999
MEMBER_ID = 555


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

    def sent(self, chat_id: int, kind: type[TelegramMethod[Any]] = SendMessage) -> list[Any]:
        return [m for m in self.session.delivered_of(kind) if m.chat_id == chat_id]

    def buttons(self, chat_id: int) -> list[str]:
        """Callback data of the last message with buttons in `chat_id`."""
        for m in reversed(self.sent(chat_id)):
            if m.reply_markup is not None:
                return [b.callback_data for row in m.reply_markup.inline_keyboard for b in row]
        raise AssertionError("no message with buttons")

    async def click(self, who: GroupClient, data: str, chat: Chat | None = None) -> str:
        """Click a button on a bot message in `chat` (default: the clicker's chat); the
        toast. Exactly one answer per query, checked here."""
        message = Message(
            message_id=77,
            date=self.h.now,
            chat=chat or who.chat,
            from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"),
            text="👀",
        )
        qid = await who.click(message, data)
        answers = [
            a for a in self.session.requests_of(AnswerCallbackQuery) if a.callback_query_id == qid
        ]
        assert len(answers) == 1, f"query {qid} answered {len(answers)} times"
        await self.h.settle()
        return answers[0].text or ""

    async def say(self, who: GroupClient, text: str, **kw: Any) -> str:
        before = len(self.sent(who.chat.id))
        await who.send(text, **kw)
        await self.h.settle()
        said = self.sent(who.chat.id)[before:]
        return said[-1].text if said else ""

    async def tick(self, to: datetime) -> None:
        """Move the clock and run what is due (a post, then its delivery)."""
        self.clock.now = to
        await self.scheduler.sweep()
        await self.scheduler.sweep()
        await self.h.settle()

    async def posts(self) -> list[PromoPost]:
        async with self.db.transaction(readonly=True) as s:
            return list((await s.execute(select(PromoPost).order_by(PromoPost.id))).scalars())  # type: ignore[arg-type]

    async def task(self, key: str) -> ScheduledTask | None:
        async with self.db.transaction(readonly=True) as s:
            return await s.get(ScheduledTask, key)

    async def tasks(self) -> int:
        async with self.db.transaction(readonly=True) as s:
            return int(await s.scalar(select(func.count()).select_from(ScheduledTask)) or 0)

    async def deliveries(self) -> list[BroadcastDelivery]:
        async with self.db.transaction(readonly=True) as s:
            rows = await s.execute(select(BroadcastDelivery).order_by(BroadcastDelivery.id))  # type: ignore[arg-type]
            return list(rows.scalars())


@pytest.fixture
async def rig(bot_db: Database) -> AsyncIterator[Rig]:
    clock = Clock()
    scheduler = Scheduler(bot_db, clock=clock)
    async with running(bot_db, scheduler) as h:
        yield Rig(h, bot_db, clock, scheduler)


@pytest.fixture
def group() -> Chat:
    return group_chat(GROUP_ID, "测试鱼塘 <b>&</b>")


def local(day: str, hm: str = "20:00") -> datetime:
    """A Shanghai wall time as UTC."""
    return datetime.fromisoformat(f"{day}T{hm}:00+08:00").astimezone(UTC)


# -- preview, confirm, fire ------------------------------------------------------------------


async def test_preview_then_only_the_author_confirms_and_the_post_fires_once(
    rig: Rig, group: Chat
) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    alice = rig.h.member(group, person(MEMBER_ID, "Alice"))
    await rig.say(
        boss,
        "/promo at 2026-10-20 20:00 双十一 <b>预告</b> & 福利\n[去店铺](https://shop.example.com/a?b=1)",
    )
    [post] = await rig.posts()
    assert post.state == PromoState.draft and post.run_at == local("2026-10-20")
    assert await rig.tasks() == 0  # a preview schedules nothing
    preview, control = rig.sent(GROUP_ID)[-2:]
    # The preview is the post as members will see it, escaped once, with its URL button.
    assert preview.text == "双十一 &lt;b&gt;预告&lt;/b&gt; &amp; 福利"
    assert preview.reply_markup.inline_keyboard[0][0].url == "https://shop.example.com/a?b=1"
    assert f"#{post.id}" in control.text and "2026-10-20 20:00" in control.text
    ok, no = rig.buttons(GROUP_ID)
    assert ok == f"pp:ok:{post.id}" and no == f"pp:no:{post.id}"

    # Another member, even a group admin who didn't write it, cannot confirm.
    assert "⛔" in await rig.click(alice, ok)
    owner_ = rig.h.member(group, person(OWNER_ID, "Owner"))
    assert "⛔" in await rig.click(owner_, ok)
    assert await rig.tasks() == 0
    assert "✅" in await rig.click(boss, ok)
    again = await rig.click(boss, ok)
    assert "✅" not in again  # a double click changes nothing
    task = await rig.task(store.post_key(post.id))  # type: ignore[arg-type]
    assert task is not None and task.run_at == local("2026-10-20") and not task.catch_up
    assert task.grace_seconds == 600
    [edit] = rig.session.delivered_of(EditMessageText)
    assert "✅" in edit.text and edit.reply_markup is None

    await rig.tick(local("2026-10-20", "19:59"))
    assert len(rig.sent(GROUP_ID)) == 2
    await rig.tick(local("2026-10-20"))
    posted = rig.sent(GROUP_ID)[2:]
    assert [m.text for m in posted] == ["双十一 &lt;b&gt;预告&lt;/b&gt; &amp; 福利"]
    assert posted[0].reply_parameters is None  # a post, not a reply
    for _ in range(3):
        await rig.tick(local("2026-10-21"))
    assert len(rig.sent(GROUP_ID)) == 3  # fired once
    [d] = await rig.deliveries()
    assert d.state == "sent" and d.message_id is not None
    assert (await rig.posts())[0].state == PromoState.sent


async def test_an_anonymous_admins_post_is_confirmed_by_any_operator(rig: Rig, group: Chat) -> None:
    anon = rig.h.member(group, User(id=1087968824, is_bot=True, first_name="Group"))
    await anon.send("/promo at +1h 匿名管理员的预告", sender_chat=group)
    await rig.h.settle()
    [post] = await rig.posts()
    assert post.author_id == GROUP_ID and post.preview_chat_id == GROUP_ID
    ok, _no = rig.buttons(GROUP_ID)
    alice = rig.h.member(group, person(MEMBER_ID, "Alice"))
    assert "⛔" in await rig.click(alice, ok)
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    assert "✅" in await rig.click(boss, ok)


async def test_a_post_follows_its_pond_to_the_supergroup(rig: Rig, group: Chat) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    post = await schedule(rig, boss, "/promo at +1h 升级后照发")
    async with rig.db.transaction() as s:
        await repo.migrate_pond(s, GROUP_ID, OTHER_GROUP)
    await rig.tick(T0 + timedelta(hours=1))
    assert [m.text for m in rig.sent(OTHER_GROUP)] == ["升级后照发"]
    [d] = await rig.deliveries()
    assert d.chat_id == OTHER_GROUP and d.state == "sent" and d.post_id == post.id


async def test_discard_and_replayed_command(rig: Rig, group: Chat) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    cmd = await boss.send("/promo at +2h 新品上架")
    await rig.h.settle()
    said = len(rig.sent(GROUP_ID))
    await boss.resend(cmd, update_id=rig.h.next_update_id())  # Telegram delivers it again
    await rig.h.settle()
    assert len(rig.sent(GROUP_ID)) == said and len(await rig.posts()) == 1
    _ok, no = rig.buttons(GROUP_ID)
    assert "✅" not in await rig.click(boss, no)
    assert (await rig.posts())[0].state == PromoState.discarded
    assert "✅" not in await rig.click(boss, _ok)  # too late to confirm a discarded draft
    assert await rig.tasks() == 0


async def test_preview_goes_to_a_linked_dm_and_buttons_only_work_there(
    rig: Rig, group: Chat
) -> None:
    op_user = person(OPERATOR_ID, "Op")
    op_dm = rig.h.member(private_chat(op_user), op_user)
    await rig.say(op_dm, "/start")
    op = rig.h.member(group, op_user)
    notice = await rig.say(op, "/promo at +1h pin 今晚8点直播")
    assert "👀" in notice
    [post] = await rig.posts()
    assert post.preview_chat_id == OPERATOR_ID and post.chat_id == GROUP_ID and post.pin
    ok, _no = rig.buttons(OPERATOR_ID)
    # The same button data pressed on a message in the group is refused.
    assert "✅" not in await rig.click(op, ok, chat=group)
    assert "✅" in await rig.click(op_dm, ok)
    await rig.tick(T0 + timedelta(hours=1))
    [sent] = [m for m in rig.sent(GROUP_ID) if m.text == "今晚8点直播"]
    assert sent.reply_parameters is None
    [pin] = rig.session.delivered_of(PinChatMessage)
    assert pin.chat_id == GROUP_ID


async def test_photo_post_is_a_photo_with_caption_and_pin_failure_is_ignored(
    rig: Rig, group: Chat
) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    photo = Message(
        message_id=5,
        date=rig.h.now,
        chat=group,
        from_user=person(ADMIN_ID, "Admin"),
        photo=[
            PhotoSize(file_id="small", file_unique_id="s", width=90, height=90),
            PhotoSize(file_id="big-file-id", file_unique_id="b", width=900, height=900),
        ],
    )
    too_long = "字" * 1100
    assert "1024" in await rig.say(boss, f"/promo at +1h {too_long}", reply_to=photo)
    await rig.say(boss, "/promo at +1h pin 新款到货", reply_to=photo)
    [preview] = rig.sent(GROUP_ID, SendPhoto)
    assert preview.photo == "big-file-id" and preview.caption == "新款到货"
    ok, _no = rig.buttons(GROUP_ID)
    assert "✅" in await rig.click(boss, ok)
    rig.session.fail_next(
        "pinChatMessage", error_code=400, description="Bad Request: not enough rights"
    )
    await rig.tick(T0 + timedelta(hours=1))
    photos = rig.sent(GROUP_ID, SendPhoto)
    assert len(photos) == 2 and photos[1].photo == "big-file-id"
    [d] = await rig.deliveries()
    assert d.state == "sent"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("/promo", "/promo at"),
        ("/promo at", "/promo at"),
        ("/promo at 2026-10-19 20:00 过去的", "⚠️"),
        ("/promo at 2026-13-01 20:00 x", "YYYY-MM-DD"),
        ("/promo at tomorrow 文字", "YYYY-MM-DD"),
        ("/promo at +2x 文字", "+30m"),
        ("/promo at +400d 文字", "⚠️"),
        ("/promo at +2h", "⚠️"),
        ("/promo at +2h pin", "⚠️"),
        ("/promo every 0 25 * * * 文字", "crontab"),
        ("/promo every 0 20 * * 文字", "crontab"),
        ("/promo at +2h 文字\n[按钮](javascript:alert(1))", "https://"),
        ("/promo at +2h 文字\n[按钮](https://)", "https://"),
        ("/promo cancel abc", "/promo cancel 12"),
        ("/promo frobnicate", "/promo at"),
        ("/promo at +2h " + "长" * 4100, "4096"),
    ],
)
async def test_bad_input_gets_a_short_error_and_changes_nothing(
    rig: Rig, group: Chat, text: str, needle: str
) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    said = await rig.say(boss, text)
    assert said.startswith("⚠️") and needle in said, said
    assert len(said) < 1200
    assert await rig.posts() == [] and await rig.tasks() == 0


async def test_members_may_not_use_operator_tools(rig: Rig, group: Chat) -> None:
    alice = rig.h.member(group, person(MEMBER_ID, "Alice"))
    for text in ("/promo at +1h hi", "/promo list", "/campaign 双十一 11-11", "/plan 200 5"):
        assert "⛔" in await rig.say(alice, text)
    assert await rig.posts() == []


# -- list, cancel, cron ---------------------------------------------------------------------


async def schedule(rig: Rig, who: GroupClient, text: str) -> PromoPost:
    await rig.say(who, text)
    ok, _no = rig.buttons(who.chat.id)
    toast = await rig.click(who, ok)
    assert "✅" in toast, toast
    return (await rig.posts())[-1]


async def test_list_and_cancel(rig: Rig, group: Chat) -> None:
    async with rig.db.transaction() as s:  # no cap here: this test is about list/cancel
        await repo.upsert_pond(s, GROUP_ID, title="t", chat_type="supergroup")
        await repo.change_pond_settings(s, GROUP_ID, promo_cap_days=0)
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    first = await schedule(rig, boss, "/promo at 2026-10-21 09:30 早安 第一条")
    second = await schedule(rig, boss, "/promo every 0 20 * * 5 周五 <直播>")
    listing = await rig.say(boss, "/promo list")
    assert f"#{first.id}" in listing and "2026-10-21 09:30" in listing
    assert f"#{second.id}" in listing and "2026-10-23 20:00" in listing  # next Friday
    assert "&lt;直播&gt;" in listing
    said = await rig.say(boss, f"/promo cancel {first.id}")
    assert "🗑" in said
    task = await rig.task(store.post_key(first.id))  # type: ignore[arg-type]
    assert task is not None and task.state == TaskState.cancelled
    listing = await rig.say(boss, "/promo list")
    assert f"#{first.id}" not in listing and f"#{second.id}" in listing
    assert "⚠️" in await rig.say(boss, f"/promo cancel {first.id}")  # already cancelled
    assert "⚠️" in await rig.say(boss, "/promo cancel 999")
    # An operator of another pond cannot cancel this pond's post.
    other = rig.h.member(group_chat(OTHER_GROUP, "Other"), person(OPERATOR_ID, "Op"))
    assert "⚠️" in await rig.say(other, f"/promo cancel {second.id}")
    await rig.tick(local("2026-10-21", "09:30"))
    assert not any("第一条" in m.text for m in rig.sent(GROUP_ID) if m.reply_parameters is None)


async def test_cron_runs_in_the_ponds_timezone(rig: Rig, bot_db: Database) -> None:
    ny = group_chat(OTHER_GROUP, "NY pond")
    async with bot_db.transaction() as s:
        await repo.upsert_pond(
            s,
            OTHER_GROUP,
            title="NY pond",
            chat_type="supergroup",
            default_timezone="America/New_York",
        )
    op = rig.h.member(ny, person(OPERATOR_ID, "Op"))
    post = await schedule(rig, op, "/promo every 0 20 * * 5 Friday live")
    first = datetime(2026, 10, 24, 0, 0, tzinfo=UTC)  # Fri 2026-10-23 20:00 EDT
    task = await rig.task(store.post_key(post.id))  # type: ignore[arg-type]
    assert task is not None and task.run_at == first
    # Crontab's 5 is Friday (the scheduler library would read it as Saturday).
    assert task.cron == "0 20 * * fri" and task.timezone == "America/New_York"
    await rig.tick(first)
    assert [m.text for m in rig.sent(OTHER_GROUP) if m.text == "Friday live"] == ["Friday live"] * 2
    task = await rig.task(store.post_key(post.id))  # type: ignore[arg-type]
    assert task is not None and task.run_at == datetime(2026, 10, 31, 0, 0, tzinfo=UTC)
    await rig.tick(task.run_at)
    # After the switch back to standard time (Nov 1): 20:00 EST is 01:00 UTC.
    task = await rig.task(store.post_key(post.id))  # type: ignore[arg-type]
    assert task is not None and task.run_at == datetime(2026, 11, 7, 1, 0, tzinfo=UTC)


# -- frequency cap and campaigns ---------------------------------------------------------


async def test_frequency_cap_refuses_with_the_next_allowed_time(rig: Rig, group: Chat) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    await schedule(rig, boss, "/promo at 2026-10-21 20:00 第一条")
    said = await rig.say(boss, "/promo at 2026-10-24 20:00 第二条")
    assert said.startswith("⛔"), said
    assert "7" in said and "2026-10-21 20:00" in said and "2026-10-28 20:00" in said
    assert len(await rig.posts()) == 1
    # Before the first post too: the next time that keeps a week on both sides.
    said = await rig.say(boss, "/promo at 2026-10-20 21:00 早一点")
    assert "2026-10-28 20:00" in said
    # At the next allowed time it passes.
    await schedule(rig, boss, "/promo at 2026-10-28 20:00 第二条")
    # A campaign's warm-up lifts the cap: 11-01..11-10 for an 11-11 sale.
    assert "📅" in await rig.say(boss, "/campaign 双十一 11-11")
    await schedule(rig, boss, "/promo at 2026-11-02 20:00 预热一")
    await schedule(rig, boss, "/promo at 2026-11-03 20:00 预热二")
    said = await rig.say(boss, "/promo at 2026-10-30 20:00 蓄势期")  # build-up: capped
    assert said.startswith("⛔") and "2026-11-01 00:00" in said  # when warm-up begins


async def test_a_recurring_post_skips_the_days_over_the_cap(rig: Rig, group: Chat) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    await rig.say(boss, "/campaign 双十一 11-11")
    post = await schedule(rig, boss, "/promo every 0 20 * * * 每日{phase}：还有{days_left}天")
    day = local("2026-10-20")
    while day <= local("2026-11-02"):
        await rig.tick(day)
        day += timedelta(days=1)
    texts = [
        m.text
        for m in rig.sent(GROUP_ID)
        if m.text.startswith("每日") and m.reply_parameters is None  # not the preview
    ]
    # 10-20 and 10-27 in build-up (a week apart), then every day of the warm-up.
    assert texts == [
        "每日蓄势：还有22天",
        "每日蓄势：还有15天",
        "每日预热：还有10天",
        "每日预热：还有9天",
    ]
    rows = await rig.deliveries()
    assert [r.state for r in rows].count("capped") == 14 - 4
    assert {r.post_id for r in rows} == {post.id}


async def test_campaign_timeline_phase_edit_and_placeholders(rig: Rig, group: Chat) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    shown = await rig.say(boss, "/campaign 双十一 11-11")
    assert "2026-11-11" in shown
    for days in ("09-01..10-31", "11-01..11-10", "11-12..11-14"):
        assert days in shown, shown
    assert "▶️ 蓄势" in shown  # 10-20 is in the build-up
    shown = await rig.say(boss, "/campaign 双十一 phase 预热 10-25..11-10")
    assert "10-25..11-10" in shown
    assert "⚠️" in await rig.say(boss, "/campaign 双十一 phase 预热 11-10..10-25")
    assert "⚠️" in await rig.say(boss, "/campaign 双十一 phase 收尾 11-12..11-13")
    assert "⚠️" in await rig.say(boss, "/campaign 双十一 13-40")
    assert "⚠️" in await rig.say(boss, "/campaign 618 phase 预热 06-01..06-17")  # no such one
    post = await schedule(
        rig,
        boss,
        "/promo at 2026-10-26 20:00 {campaign}{phase}：还有{days_left}天（{date}）{优惠} {x",
    )
    overview = await rig.say(boss, "/campaign")
    assert f"#{post.id} 10-26 20:00" in overview
    await rig.tick(local("2026-10-26"))
    preview, sent = [m for m in rig.sent(GROUP_ID) if m.text.startswith("双十一")]
    assert preview.reply_parameters is not None  # rendered for its own day, 10-26
    assert sent.text == preview.text == "双十一预热：还有16天（11-11）{优惠} {x"
    assert "🗑" in await rig.say(boss, "/campaign 双十一 delete")
    assert "📅" in await rig.say(boss, "/campaign")  # none left: says how to make one


async def test_placeholder_without_campaign_warns_in_the_preview(rig: Rig, group: Chat) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    await rig.say(boss, "/promo at +1h 还有{days_left}天")
    control = rig.sent(GROUP_ID)[-1].text
    assert "⚠️" in control and "/campaign" in control


# -- broadcasts ----------------------------------------------------------------------------


async def seed_ponds(
    db: Database, ids: list[int], *, inactive: frozenset[int] = frozenset()
) -> None:
    """Ponds of the shop (approved by a global operator), some of them inactive."""
    async with db.transaction() as s:
        for chat_id in ids:
            await repo.upsert_pond(s, chat_id, title=f"P{chat_id}", chat_type="supergroup")
            await repo.set_trust(s, chat_id, PondTrust.approved, actor_id=OPERATOR_ID)
        await s.execute(
            update(Pond).where(Pond.chat_id.in_(list(inactive))).values(status="inactive")  # type: ignore[attr-defined]
        )


async def test_broadcast_from_the_operators_dm_reaches_every_active_pond(rig: Rig) -> None:
    ponds = [-1005000000000 - i for i in range(6)]
    await seed_ponds(rig.db, ponds, inactive=frozenset({ponds[1]}))
    op_user = person(OPERATOR_ID, "Op")
    dm = rig.h.member(private_chat(op_user), op_user)
    await rig.say(dm, "/start")
    rig.session.fail_next("sendMessage", chat_id=ponds[2], error_code=403)
    rig.session.fail_next("sendMessage", chat_id=ponds[3], retry_after=1)
    post = await schedule(rig, dm, "/promo at +10m 全店大促")
    assert post.chat_id is None
    await rig.tick(T0 + timedelta(minutes=10))
    got = {p: [m.text for m in rig.sent(p)] for p in ponds}
    assert got[ponds[1]] == [] and got[ponds[2]] == []  # inactive; kicked (403)
    for p in (ponds[0], ponds[3], ponds[4], ponds[5]):
        assert got[p] == ["全店大促"], (p, got[p])
    states = {d.chat_id: d.state for d in await rig.deliveries()}
    assert ponds[1] not in states and states[ponds[2]] == "skipped"
    assert [states[p] for p in (ponds[0], ponds[3], ponds[4], ponds[5])] == ["sent"] * 4
    report = rig.sent(OPERATOR_ID)[-1].text
    assert "📣" in report and "4" in report
    # Operators of a pond cannot broadcast: in a group, a post is for that pond only.


async def fired_to_eight_ponds(rig: Rig, first: int) -> tuple[list[int], PromoPost]:
    """Eight ponds the shop serves; a post to all of them, scheduled by the operator in
    the DM, has just fired: one pending delivery per pond."""
    ponds = [first - i for i in range(8)]
    await seed_ponds(rig.db, ponds)
    op_user = person(OPERATOR_ID, "Op")
    dm = rig.h.member(private_chat(op_user), op_user)
    post = await schedule(rig, dm, "/promo at +10m 只发一次")
    rig.clock.now = T0 + timedelta(minutes=10)
    await rig.scheduler.sweep()
    return ponds, post


async def test_crash_mid_broadcast_resumes_without_a_second_copy(rig: Rig) -> None:
    ponds, post = await fired_to_eight_ponds(rig, -1006000000000)
    assert post.id is not None
    occurrence = rig.clock.now
    async with rig.db.transaction() as s:
        # A run that died: three rows handed to the outbox. The first two requests were
        # issued (the first reached its pond), their answers never recorded; the third
        # still waited in the outbox's queue.
        dead = await store.claim_deliveries(s, post.id, occurrence, 3)
        for c in dead[:2]:
            assert await store.mark_sending(s, c.delivery_id, c.claim)
    await rig.h.outbox.call(SendMessage(chat_id=dead[0].pond.chat_id, text="只发一次"))
    await rig.scheduler.sweep()  # the delivery task runs (as after a restart)
    await rig.h.settle()
    copies = {p: [m.text for m in rig.sent(p)].count("只发一次") for p in ponds}
    assert all(n <= 1 for n in copies.values()), copies
    assert copies[dead[1].pond.chat_id] == 0  # of unknown fate: not resent
    assert copies[dead[2].pond.chat_id] == 1  # never issued: sent now
    assert sum(copies.values()) == 8 - 1
    states = {d.chat_id: d.state for d in await rig.deliveries()}
    assert [states[c.pond.chat_id] for c in dead] == ["unknown", "unknown", "sent"]
    assert list(states.values()).count("sent") == 6
    await rig.tick(T0 + timedelta(hours=1))
    assert sum([m.text for m in rig.sent(p)].count("只发一次") for p in ponds) == 7


async def test_a_run_killed_with_messages_queued_resends_exactly_those(rig: Rig) -> None:
    """A delivery run dies (SIGKILL) while its outbox holds one request on the wire and
    the rest of its window queued: the next run sends the queued ones, once, and leaves
    the one on the wire `unknown`."""
    ponds, post = await fired_to_eight_ponds(rig, -1006100000000)
    assert post.id is not None
    [task] = [t for t in await all_tasks(rig) if t.job == "promo.deliver"]

    # The dying process: its Telegram never answers, one request at a time.
    wire = FakeSession(latency=3600)
    dying = Outbox(make_bot(wire), concurrency=1)
    await dying.start()
    deps = JobDeps(db=rig.db, outbox=dying, i18n=make_i18n())
    run = TaskRun(task.key, task.job, dict(task.payload), task.chat_id, task.run_at, rig.clock.now)
    doomed = asyncio.create_task(promo_jobs.deliver_post(deps, run))

    async def states() -> Counter[str]:
        return Counter(d.state for d in await rig.deliveries())

    for _ in range(500):
        if len(wire.requests) == 1 and (await states())["pending"] == 0:
            break
        await asyncio.sleep(0.01)
    assert await states() == {"sending": 1, "queued": 7}
    [on_the_wire] = wire.requests
    doomed.cancel()  # killed: nothing more is recorded
    with contextlib.suppress(asyncio.CancelledError):
        await doomed
    await dying.stop(drain_timeout=0)

    await rig.scheduler.sweep()  # taken over
    await rig.h.settle()
    lost = getattr(on_the_wire, "chat_id", None)
    copies = {p: [m.text for m in rig.sent(p)].count("只发一次") for p in ponds}
    assert copies == {p: int(p != lost) for p in ponds}
    assert {d.chat_id: d.state for d in await rig.deliveries()} == {
        p: "unknown" if p == lost else "sent" for p in ponds
    }
    await rig.tick(T0 + timedelta(hours=1))
    assert sum(copies.values()) == sum(
        [m.text for m in rig.sent(p)].count("只发一次") for p in ponds
    )


async def all_tasks(rig: Rig) -> list[ScheduledTask]:
    async with rig.db.transaction(readonly=True) as s:
        return list((await s.execute(select(ScheduledTask))).scalars())  # type: ignore[arg-type]


# -- /plan --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "buyers", "low", "mid", "high"),
    [("200 5", 40, 48, 50, 52), ("201 5", 41, 50, 52, 54), ("１０ ３", 4, 5, 5, 6)],
)
async def test_plan(
    rig: Rig, group: Chat, args: str, buyers: int, low: int, mid: int, high: int
) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    said = await rig.say(boss, f"/plan {args}")
    assert f"<b>{buyers}</b>" in said and f"{low}–{high}" in said
    assert re.search(rf"[≈约] ?{mid}\b", said), said


async def test_plan_bad_input(rig: Rig, group: Chat) -> None:
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    for args in ("", "200", "0 5", "200 0", "a b", "200 5 7"):
        said = await rig.say(boss, f"/plan {args}".strip())
        assert "/plan" in said and "&lt;" in said
