"""Red packets through the real Dispatcher: creation and limits, member funding and
refunds, password packets, hostile buttons, expiry on a fake clock, replays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import Chat, Message, User
from sqlalchemy import event, func, select

from handlers.red_packet import RedPacketCB
from scheduler.core import Scheduler, TaskRun
from storage import ledger, red_packets, repo
from storage.db import Database
from storage.models import Job, LedgerEntry, RedPacket, ScheduledTask, TaskState
from tests.dispatcher.conftest import GROUP_ID, OPERATOR_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person
from tests.rig.fake_session import BOT_ID, FakeSession

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Pond:
    """A harness whose scheduler runs on a clock the test moves."""

    def __init__(self, h: Harness, db: Database, clock: Clock, scheduler: Scheduler) -> None:
        self.h = h
        self.db = db
        self.clock = clock
        self.scheduler = scheduler

    @property
    def session(self) -> FakeSession:
        return self.h.session

    async def packet(self, packet_id: int | None = None) -> RedPacket:
        async with self.db.transaction(readonly=True) as s:
            stmt = select(RedPacket).order_by(RedPacket.id.desc())  # type: ignore[union-attr]
            if packet_id is not None:
                stmt = select(RedPacket).where(RedPacket.id == packet_id)  # type: ignore[arg-type]
            row = (await s.execute(stmt)).scalars().first()
        assert row is not None
        return row

    async def post_of(self, packet: RedPacket, chat: Chat) -> Message:
        """The packet's message as Telegram would hand it back with a click."""
        assert packet.message_id is not None
        return Message(
            message_id=packet.message_id,
            date=self.h.now,
            chat=chat,
            from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"),
            text="🧧",
        )

    async def click(self, who: GroupClient, message: Message, data: str) -> str:
        """Click and return the toast (exactly one answer per query, checked here)."""
        qid = await who.click(message, data)
        answers = [
            a for a in self.session.requests_of(AnswerCallbackQuery) if a.callback_query_id == qid
        ]
        assert len(answers) == 1, f"query {qid} answered {len(answers)} times"
        return answers[0].text or ""

    async def balance(self, user_id: int) -> int:
        async with self.db.transaction(readonly=True) as s:
            member = await repo.get_member(s, user_id)
        return 0 if member is None else member.balance

    async def entries(self, kind: str) -> list[LedgerEntry]:
        async with self.db.transaction(readonly=True) as s:
            rows = await s.execute(select(LedgerEntry).where(LedgerEntry.kind == kind))  # type: ignore[arg-type]
            return list(rows.scalars().all())

    async def invariant_ok(self) -> bool:
        async with self.db.transaction(readonly=True) as s:
            return (await ledger.check_invariant(s)).ok

    def edits(self) -> list[EditMessageText]:
        return self.session.delivered_of(EditMessageText)


@pytest.fixture
async def pond(bot_db: Database) -> AsyncIterator[Pond]:
    clock = Clock()
    scheduler = Scheduler(bot_db, clock=clock)
    async with running(bot_db, scheduler) as h:
        yield Pond(h, bot_db, clock, scheduler)


@pytest.fixture
def group() -> Chat:
    return group_chat(GROUP_ID, "测试鱼塘 <b>&</b>")


async def drop(p: Pond, who: GroupClient, text: str) -> RedPacket:
    await who.send(text)
    await p.h.settle()
    return await p.packet()


async def test_operator_packet_grabbed_exactly_and_the_luckiest_shown(
    pond: Pond, group: Chat
) -> None:
    op = pond.h.member(group, person(OPERATOR_ID, "Op"))
    packet = await drop(pond, op, "/redpacket 100 5")
    assert packet.shop_funded and packet.total == 100 and packet.shares == 5
    [post] = [m for m in pond.session.delivered_of(SendMessage) if m.reply_markup is not None]
    assert "100" in post.text and "0/5" in post.text
    assert post.reply_markup.inline_keyboard[0][0].callback_data == f"rp:{packet.id}"  # type: ignore[union-attr]
    msg = await pond.post_of(packet, group)
    members = [pond.h.member(group, person(10 + i, f"M<{i}>")) for i in range(6)]
    toasts = [await pond.click(m, msg, f"rp:{packet.id}") for m in members]
    assert all("🎉" in t for t in toasts[:5]), toasts
    assert "All gone" in toasts[5] or "抢完" in toasts[5] or "领完" in toasts[5]
    gains = {m.user.id: await pond.balance(m.user.id) for m in members}
    assert sum(gains.values()) == 100 and all(gains[10 + i] >= 1 for i in range(5))
    assert gains[15] == 0
    await pond.h.settle()
    final = pond.edits()[-1]
    assert final.reply_markup is None  # no button once it is over
    assert "M&lt;0&gt;" in final.text and "👑" in final.text
    best = max(range(5), key=lambda i: (gains[10 + i], -i))
    assert f"M&lt;{best}&gt; — {gains[10 + best]} 👑" in final.text
    # Its expiry task was cancelled with the last grab.
    async with pond.db.transaction(readonly=True) as s:
        task = await s.get(ScheduledTask, red_packets.expiry_task_key(packet.id))
    assert task is not None and task.state == TaskState.cancelled
    assert await pond.invariant_ok()


async def test_late_clicks_on_a_finished_packet_cost_no_database(pond: Pond, group: Chat) -> None:
    op = pond.h.member(group, person(OPERATOR_ID, "Op"))
    packet = await drop(pond, op, "/redpacket 2 2 equal")
    msg = await pond.post_of(packet, group)
    a, b, c = (pond.h.member(group, person(20 + i, f"P{i}")) for i in range(3))
    for m in (a, b, c):
        await m.send("hi")  # known members: the tracking middleware has nothing to write
    assert "🎉" in await pond.click(a, msg, f"rp:{packet.id}")
    assert "🎉" in await pond.click(b, msg, f"rp:{packet.id}")
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    other = group_chat(-1009999999999, "Other pond")
    eve = pond.h.member(other, person(52, "Eve"))
    await eve.send("hi")
    elsewhere = await pond.post_of(packet, other)
    event.listen(pond.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        gone = await pond.click(c, msg, f"rp:{packet.id}")
        again = await pond.click(a, msg, f"rp:{packet.id}")
        foreign = await pond.click(eve, elsewhere, f"rp:{packet.id}")
    finally:
        event.remove(pond.db.engine.sync_engine, "before_cursor_execute", count)
    assert statements == []
    assert gone != again and "🎉" not in gone  # "all gone" vs "already grabbed"
    assert foreign not in (gone, again) and "🎉" not in foreign
    # Not a packet id the shortcut may read: the routers refuse it as before.
    for data in (f"rp:{packet.id}:1", "rp:²", f"rp:+{packet.id}"):
        assert "🎉" not in await pond.click(c, msg, data)
    with pytest.raises(ValueError, match="twice"):
        pond.h.dp["shortcuts"].register("rp", pond.h.dp["shortcuts"].__call__)
    assert await pond.balance(20) == 1 and await pond.balance(21) == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("/redpacket", "/redpacket &lt;total&gt;"),
        ("/redpacket 100", "/redpacket &lt;total&gt;"),
        ("/redpacket abc 5", "whole numbers"),
        ("/redpacket 100 -5", "positive"),
        ("/redpacket 0 5", "positive"),
        ("/redpacket 3 5", "at least 1 point"),
        ("/redpacket 100001 5", "100000"),
        ("/redpacket 1000 201", "200"),
        ("/redpacket 100 5 lucky", "/redpacket &lt;total&gt;"),
        ("/redpacket 100 5 for=soon", "30s"),
        ("/redpacket 100 5 for=8d", "168"),
        ("/redpacket 100 5 pwd=", "password"),
        ("/redpacket 100 5 pwd=" + "x" * 40, "32"),
        ("/redpacket 100 5 random random", "/redpacket &lt;total&gt;"),
    ],
)
async def test_bad_arguments_get_the_usage_and_change_nothing(
    pond: Pond, group: Chat, text: str, needle: str
) -> None:
    op = pond.h.member(group, person(OPERATOR_ID, "Op"))
    # English texts: the pond speaks English for this check.
    await op.send("hi")
    async with pond.db.transaction() as s:
        from sqlalchemy import update

        from storage.models import Pond as PondRow

        await s.execute(update(PondRow).where(PondRow.chat_id == GROUP_ID).values(language="en"))  # type: ignore[arg-type]
    dp_tracking = pond.h.dp["tracking"]
    dp_tracking.forget_pond(GROUP_ID)
    await op.send(text)
    await pond.h.settle()
    [answer] = pond.h.replies(GROUP_ID)
    assert answer.startswith("⚠️") and needle in answer, answer
    assert "Usage: /redpacket" in answer
    async with pond.db.transaction(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(RedPacket)) == 0


async def test_full_width_digits_and_options(pond: Pond, group: Chat) -> None:
    op = pond.h.member(group, person(OPERATOR_ID, "Op"))
    packet = await drop(pond, op, "/redpacket １０ ３ EQUAL pwd=ＨＥＬＬＯ for=2h")
    assert (packet.total, packet.shares, packet.mode, packet.password) == (10, 3, "equal", "hello")
    assert packet.expires_at == T0 + timedelta(hours=2)


async def test_member_funded_packet_debits_refunds_once_and_funder_cannot_grab(
    pond: Pond, group: Chat
) -> None:
    op = pond.h.member(group, person(OPERATOR_ID, "Op"))
    mei = pond.h.member(group, person(31, "Mei", "meimei"))
    bob = pond.h.member(group, person(32, "Bob"))
    await mei.send("hi")
    await op.send("/give @meimei 50")
    await pond.h.settle()
    # Not enough points: refused, nothing written.
    await mei.send("/redpacket 60 3")
    await pond.h.settle()
    assert "50" in pond.h.replies(GROUP_ID)[-1] and pond.h.replies(GROUP_ID)[-1].startswith("⚠️")
    async with pond.db.transaction(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(RedPacket)) == 0
    packet = await drop(pond, mei, "/redpacket 30 3 for=1h")
    assert not packet.shop_funded and packet.funder_id == 31
    assert await pond.balance(31) == 20
    msg = await pond.post_of(packet, group)
    own = await pond.click(mei, msg, f"rp:{packet.id}")
    assert "own" in own or "自己" in own
    assert "🎉" in await pond.click(bob, msg, f"rp:{packet.id}")
    got = await pond.balance(32)
    assert 1 <= got <= 28

    # Time passes: the expiry runs (twice, as after a crash mid-job) and refunds once.
    pond.clock.now = T0 + timedelta(hours=1, seconds=1)
    await pond.scheduler.sweep()
    job = pond.scheduler.jobs[Job.red_packet_expire]
    run = TaskRun(
        red_packets.expiry_task_key(packet.id), Job.red_packet_expire, {"packet_id": packet.id},
        GROUP_ID, packet.expires_at, pond.clock.now,
    )
    await job(run)
    await job(run)
    await pond.h.settle()
    assert await pond.balance(31) == 20 + (30 - got)
    refunds = await pond.entries("red_packet_refund")
    assert [(e.user_id, e.delta) for e in refunds] == [(31, 30 - got)]
    closed = await pond.packet(packet.id)
    assert closed.state == "expired" and closed.refunded == 30 - got
    final = pond.edits()[-1]
    assert final.reply_markup is None and str(30 - got) in final.text
    # A click after the end changes nothing and says so.
    late = pond.h.member(group, person(33, "Late"))
    assert "🎉" not in await pond.click(late, msg, f"rp:{packet.id}")
    assert await pond.balance(33) == 0
    assert await pond.invariant_ok()


async def test_expired_while_down_refused_then_refunded_on_sweep(pond: Pond, group: Chat) -> None:
    op = pond.h.member(group, person(OPERATOR_ID, "Op"))
    mei = pond.h.member(group, person(31, "Mei", "meimei"))
    await mei.send("hi")
    await op.send("/give @meimei 10")
    await pond.h.settle()
    packet = await drop(pond, mei, "/redpacket 10 2 for=30s")
    msg = await pond.post_of(packet, group)
    pond.clock.now = T0 + timedelta(days=3)  # the bot was down for days
    bob = pond.h.member(group, person(32, "Bob"))
    toast = await pond.click(bob, msg, f"rp:{packet.id}")
    assert "🎉" not in toast
    assert await pond.balance(32) == 0
    await pond.scheduler.sweep()
    await pond.scheduler.sweep()
    assert await pond.balance(31) == 10
    assert len(await pond.entries("red_packet_refund")) == 1


async def test_password_packet_is_grabbed_by_typing_it(pond: Pond, group: Chat) -> None:
    op = pond.h.member(group, person(OPERATOR_ID, "Op"))
    packet = await drop(pond, op, "/redpacket 20 2 pwd=芝麻开门")
    msg = await pond.post_of(packet, group)
    alice = pond.h.member(group, person(41, "Alice"))
    bob = pond.h.member(group, person(42, "Bob"))
    carol = pond.h.member(group, person(43, "Carol"))
    toast = await pond.click(alice, msg, f"rp:{packet.id}")
    assert "芝麻开门" in toast and await pond.balance(41) == 0
    await alice.send("芝麻")  # not the password
    await op.send("芝麻开门")  # the funder
    assert await pond.balance(41) == 0 and await pond.balance(OPERATOR_ID) == 0
    await alice.send("芝麻开门")
    await alice.send(" 芝麻开门 ")  # again: one grab per member
    assert 1 <= await pond.balance(41) <= 19
    await bob.send("芝麻开门")
    await carol.send("芝麻开门")  # all gone by now
    await pond.h.settle()
    assert await pond.balance(41) + await pond.balance(42) == 20
    assert await pond.balance(43) == 0
    final = pond.edits()[-1]
    assert "Alice" in final.text and "Bob" in final.text and final.reply_markup is None
    # No group message per grab beyond the quiet confirmations of a calm pond.
    sent = pond.session.delivered_of(SendMessage)
    chatter = [m for m in sent if m.reply_markup is None]
    assert len(chatter) <= 2 and all(m.disable_notification for m in chatter)
    assert await pond.invariant_ok()


async def test_forged_stale_and_cross_chat_buttons_change_nothing(
    pond: Pond, group: Chat
) -> None:
    op = pond.h.member(group, person(OPERATOR_ID, "Op"))
    packet = await drop(pond, op, "/redpacket 10 2")
    msg = await pond.post_of(packet, group)
    alice = pond.h.member(group, person(51, "Alice"))
    other = group_chat(-1009999999999, "Other pond")
    eve = pond.h.member(other, person(52, "Eve"))
    elsewhere = await pond.post_of(packet, other)
    assert "🎉" not in await pond.click(eve, elsewhere, f"rp:{packet.id}")  # another chat
    same_chat_other_msg = msg.model_copy(update={"message_id": msg.message_id + 1000})
    assert "🎉" not in await pond.click(alice, same_chat_other_msg, f"rp:{packet.id}")
    for data in ("rp:999999", "rp:abc", "rp:", "rp:-1", f"rp:{2**70}", "rp:1:2"):
        assert "🎉" not in await pond.click(alice, msg, data)
    bot_user = User(id=777_001, is_bot=True, first_name="Spam bot")
    assert "🎉" not in await pond.click(pond.h.member(group, bot_user), msg, f"rp:{packet.id}")
    assert await pond.balance(51) == 0 and await pond.balance(52) == 0
    assert (await pond.packet(packet.id)).taken == 0
    assert len(RedPacketCB(id=2**63 - 1).pack().encode()) <= 64


async def test_redelivered_command_makes_one_packet_and_one_debit(
    pond: Pond, group: Chat
) -> None:
    op = pond.h.member(group, person(OPERATOR_ID, "Op"))
    mei = pond.h.member(group, person(31, "Mei", "meimei"))
    await mei.send("hi")
    await op.send("/give @meimei 40")
    msg = mei.message("/redpacket 30 3")
    await asyncio.gather(*(mei.resend(msg, pond.h.next_update_id()) for _ in range(5)))
    await pond.h.settle()
    async with pond.db.transaction(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(RedPacket)) == 1
    assert await pond.balance(31) == 10
    posts = [m for m in pond.session.delivered_of(SendMessage) if m.reply_markup is not None]
    assert len(posts) == 1


async def test_members_may_be_barred_and_bots_cannot_send(pond: Pond, group: Chat) -> None:
    mei = pond.h.member(group, person(31, "Mei", "meimei"))
    await mei.send("hi")
    async with pond.db.transaction() as s:
        await repo.change_pond_settings(s, GROUP_ID, redpacket_members_may_send=False)
    await mei.send("/redpacket 1 1")
    anon = await mei.send("/redpacket 1 1", sender_chat=Chat(id=-100777, type="channel"))
    await pond.h.settle()
    replies = pond.h.replies(GROUP_ID)
    assert replies[0].startswith("⛔") and replies[1].startswith("⚠️")
    assert anon.message_id
    async with pond.db.transaction(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(RedPacket)) == 0
