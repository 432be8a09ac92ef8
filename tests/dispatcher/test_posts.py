"""Game posts through the real Dispatcher: a handler never waits for its pond's queue,
a post's message id comes only from Telegram's answer, forged and malformed presses
change nothing, and a post that never went out comes back (redelivery, restart)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import (
    Chat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    Update,
    User,
)
from sqlalchemy import func, select, update

from bot.app import build_dispatcher, chat_refused
from bot.polling import handle_batch
from handlers.red_packet import RedPacketCB
from handlers.votes import VoteButton
from scheduler.core import Scheduler, TaskRun
from services.outbox import Limits, Outbox
from storage import red_packets, repo
from storage.db import Database
from storage.models import (
    GuessRound,
    LedgerEntry,
    Pond,
    RedPacket,
    RedPacketShare,
    Vote,
    VoteBallot,
)
from tests.dispatcher.conftest import ADMIN_ID, FAST, GROUP_ID, OPERATOR_ID, OWNER_ID
from tests.rig.client import GroupClient, Harness, group_chat, person
from tests.rig.fake_session import BOT_ID, FakeSession, admin, make_bot, owner

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POND_B = -1009876543210
BOT = User(id=BOT_ID, is_bot=True, first_name="PondBot")


@asynccontextmanager
async def served(
    db: Database, *, limits: Limits = FAST, ponds: tuple[int, ...] = (GROUP_ID,)
) -> AsyncIterator[Harness]:
    """The production dispatcher over `db` with the given outbox limits; a global
    operator is an administrator of every pond (the trust boundary serves them)."""
    session = FakeSession()
    bot = make_bot(session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))
    for chat_id in ponds:
        session.admins[chat_id] = [
            owner(person(OWNER_ID, "Owner")),
            admin(person(ADMIN_ID, "Admin", "shop_admin")),
            admin(person(OPERATOR_ID, "Op", "operator")),
        ]
    outbox = Outbox(bot, limits=limits, on_forbidden=chat_refused(db))
    scheduler = Scheduler(db, clock=lambda: T0)
    dp = build_dispatcher(
        db=db, outbox=outbox, operator_ids=frozenset({OPERATOR_ID}), scheduler=scheduler
    )
    await outbox.start()
    h = Harness(dp, bot, session, outbox)
    try:
        yield h
    finally:
        await dp["boards"].aclose()
        await dp["writer"].idle()
        await outbox.stop(drain_timeout=1)
        await bot.session.close()
    session.assert_no_violations()


@pytest.fixture
def group() -> Chat:
    return group_chat(GROUP_ID, "测试鱼塘")


async def scalar(db: Database, stmt: Any) -> Any:
    async with db.transaction(readonly=True) as s:
        return await s.scalar(stmt)


async def balance(db: Database, user_id: int) -> int:
    async with db.transaction(readonly=True) as s:
        member = await repo.get_member(s, user_id)
    return 0 if member is None else member.balance


def post_message(chat: Chat, message_id: int) -> Message:
    """A bot message as Telegram hands it back with a press."""
    return Message(message_id=message_id, date=T0, chat=chat, from_user=BOT, text="🧧")


async def toast(h: Harness, who: GroupClient, message: Message, data: str) -> str:
    """Press and return the toast (exactly one answer per press, checked here)."""
    qid = await who.click(message, data)
    answers = [a for a in h.session.requests_of(AnswerCallbackQuery) if a.callback_query_id == qid]
    assert len(answers) == 1, f"press {qid} answered {len(answers)} times"
    return answers[0].text or ""


def posts(h: Harness, mark: str, chat_id: int = GROUP_ID) -> list[SendMessage]:
    return [
        m
        for m in h.session.delivered_of(SendMessage)
        if m.chat_id == chat_id and mark in m.text
    ]


# -- the post's id comes from Telegram ---------------------------------------------------


async def test_a_press_before_the_post_is_answered_is_not_ready_and_forged_ones_are_refused(
    bot_db: Database, group: Chat
) -> None:
    async with served(bot_db) as h:
        op = h.member(group, person(OPERATOR_ID, "Op"))
        alice = h.member(group, person(1, "Alice"))
        await alice.send("/points")
        await h.settle()
        # Telegram holds the post back (a 429 for 2 s): the command is not held with it.
        h.session.fail_next("sendMessage", chat_id=GROUP_ID, retry_after=2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await op.send("/redpacket 100 5")
        assert loop.time() - started < 1.0
        packet_id = await scalar(bot_db, select(RedPacket.id))
        assert await scalar(bot_db, select(RedPacket.message_id)) is None
        data = RedPacketCB(id=packet_id).pack()

        # Before Telegram answered the post: whatever message the press names, nothing
        # is grabbed and no message is adopted as the packet's post.
        for forged in (post_message(group, 10_500), post_message(group, 1)):
            text = await toast(h, alice, forged, data)
            assert "not ready" in text or "还没准备好" in text
        assert await scalar(bot_db, select(RedPacket.message_id)) is None
        assert await scalar(bot_db, select(func.count()).select_from(LedgerEntry)) == 0

        await h.settle(within=10)
        assert len(posts(h, "🧧")) == 1
        stored = await scalar(bot_db, select(RedPacket.message_id))
        assert stored is not None
        # The id stored is the one Telegram gave the post: a press there grabs ...
        text = await toast(h, alice, post_message(group, stored), data)
        assert await balance(bot_db, 1) > 0, text
        # ... a press on another message of the pond, or from another chat, is refused.
        bob = h.member(group, person(2, "Bob"))
        other = group_chat(-100555, "Elsewhere")
        h.session.admins[-100555] = [admin(person(OPERATOR_ID, "Op", "operator"))]
        await toast(h, bob, post_message(group, stored + 1), data)
        await toast(h, h.member(other, bob.user), post_message(other, stored), data)
        await h.settle()
        assert await balance(bot_db, 2) == 0
        taken = select(func.count()).select_from(RedPacketShare).where(
            RedPacketShare.user_id.is_not(None)  # type: ignore[union-attr]
        )
        assert await scalar(bot_db, taken) == 1
        assert await scalar(bot_db, select(RedPacket.message_id)) == stored


async def test_a_vote_press_before_the_post_is_stored_changes_nothing(
    bot_db: Database, group: Chat
) -> None:
    async with served(bot_db) as h:
        op = h.member(group, person(OPERATOR_ID, "Op"))
        alice = h.member(group, person(1, "Alice"))
        await alice.send("/points")
        await h.settle()
        h.session.fail_next("sendMessage", chat_id=GROUP_ID, retry_after=2)
        await op.send("/vote 1h Q | A | B")
        vote_id = await scalar(bot_db, select(Vote.id))
        data = VoteButton(vote_id=vote_id, option=0).pack()
        text = await toast(h, alice, post_message(group, 10_777), data)
        assert "not ready" in text or "还没准备好" in text
        await h.settle(within=10)
        stored = await scalar(bot_db, select(Vote.message_id))
        assert stored is not None and stored != 10_777
        assert await scalar(bot_db, select(func.count()).select_from(VoteBallot)) == 0
        await toast(h, alice, post_message(group, 10_777), data)  # still not the post
        assert await scalar(bot_db, select(func.count()).select_from(VoteBallot)) == 0
        await toast(h, alice, post_message(group, stored), data)
        assert await scalar(bot_db, select(func.count()).select_from(VoteBallot)) == 1
        # A message that carries this very button is a post of the vote (a second one,
        # after a lost answer); one with another vote's button is not.
        def buttons(data: str) -> InlineKeyboardMarkup:
            return InlineKeyboardMarkup(
                inline_keyboard=[[InlineKeyboardButton(text="A", callback_data=data)]]
            )

        bob, carol = h.member(group, person(2, "Bob")), h.member(group, person(3, "Carol"))
        await toast(h, bob, bot_post(group, stored + 5, buttons(data)), data)
        other = VoteButton(vote_id=vote_id + 1, option=0).pack()
        await toast(h, carol, bot_post(group, stored + 6, buttons(other)), data)
        assert await scalar(bot_db, select(func.count()).select_from(VoteBallot)) == 2


MALFORMED = [
    "vt:99999999999999999999999:0",  # beyond a signed 64-bit id
    "vt:1:99",  # no such option index
    "vt:-5:0",
    "vt:1",
    "vt:x:y",
    "rp:99999999999999999999",
    "rp:0",
    "rp:abc",
    "rp:1:2",
    "pp:ok:99999999999999999999",
    "pp:ok",
    "ci:99999999999999999999999",
    "ci:",
]


async def test_malformed_and_unbounded_buttons_get_a_quiet_toast(
    bot_db: Database, group: Chat, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(bot_db) as h:
        alice = h.member(group, person(1, "Alice"))
        await alice.send("/points")
        await h.settle()
        with caplog.at_level(logging.INFO):
            for data in MALFORMED:
                text = await toast(h, alice, post_message(group, 10_001), data)
                assert "not valid" in text or "无效" in text, data
            await h.settle()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "Traceback" not in caplog.text
        assert await scalar(bot_db, select(func.count()).select_from(VoteBallot)) == 0
        assert await scalar(bot_db, select(func.count()).select_from(LedgerEntry)) == 0


# -- lost posts come back ---------------------------------------------------------------

GAMES = {
    "redpacket": ("/redpacket 100 5", RedPacket, "🧧"),
    "guessprice": ("/guessprice 199 1h 100 Test Dress", GuessRound, "Test Dress"),
    "vote": ("/vote 1h Which one? | Rose | Camellia", Vote, "Which one?"),
}


async def lose_the_post(h: Harness, group: Chat, command: str) -> Message:
    """The command is handled, the game committed, and its post never goes out (the
    same state a crash between the commit and the send leaves)."""
    h.session.fail_next(
        "sendMessage", chat_id=GROUP_ID, error_code=400, description="Bad Request: lost"
    )
    msg = await h.member(group, person(OPERATOR_ID, "Op")).send(command)
    await h.settle()
    return msg


@pytest.mark.parametrize("game", sorted(GAMES))
async def test_a_lost_post_is_posted_when_the_command_comes_again(
    bot_db: Database, group: Chat, game: str
) -> None:
    command, table, mark = GAMES[game]
    async with served(bot_db) as h:
        msg = await lose_the_post(h, group, command)
        assert posts(h, mark) == []
        assert await scalar(bot_db, select(table.message_id)) is None  # type: ignore[attr-defined]
        op = h.member(group, person(OPERATOR_ID, "Op"))
        await op.resend(msg, h.next_update_id())  # Telegram delivers the command again
        await h.settle()
        assert len(posts(h, mark)) == 1
        await op.resend(msg, h.next_update_id())  # and again: it is shown already
        await h.settle()
        assert len(posts(h, mark)) == 1
        assert await scalar(bot_db, select(func.count()).select_from(table)) == 1
        assert await scalar(bot_db, select(table.message_id)) is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize("game", sorted(GAMES))
async def test_a_lost_post_is_posted_at_start_once(
    bot_db: Database, group: Chat, game: str
) -> None:
    command, table, mark = GAMES[game]
    async with served(bot_db) as h:
        await lose_the_post(h, group, command)
        assert posts(h, mark) == []
    async with served(bot_db) as h:  # the process starts again
        await h.dp.emit_startup(bot=h.bot)
        await h.dp.emit_startup(bot=h.bot)  # twice before Telegram answered: one post
        await h.settle()
        assert len(posts(h, mark)) == 1
        assert await scalar(bot_db, select(table.message_id)) is not None  # type: ignore[attr-defined]
    async with served(bot_db) as h:  # and again: nothing left to post
        await h.dp.emit_startup(bot=h.bot)
        await h.settle()
        assert posts(h, mark) == []


# -- a busy pond stalls nobody -----------------------------------------------------------


def command(chat: Chat, user: User, text: str, update_id: int, message_id: int) -> Update:
    return Update(
        update_id=update_id,
        message=Message(
            message_id=message_id,
            date=T0,
            chat=chat,
            from_user=user,
            text=text,
            entities=[MessageEntity(type="bot_command", offset=0, length=len(text.split()[0]))],
        ),
    )


async def test_a_busy_pond_holds_up_no_other_pond_with_real_limits(
    bot_db: Database, group: Chat
) -> None:
    pond_b = group_chat(POND_B, "Pond B")
    async with served(bot_db, limits=Limits(), ponds=(GROUP_ID, POND_B)) as h:
        ids = iter(range(1, 10_000))
        batch = [
            command(group, person(10_000 + i, f"M{i}"), "/points", next(ids), 100 + i)
            for i in range(80)
        ]
        batch.append(command(group, person(OPERATOR_ID, "Op"), "/redpacket 100 5", next(ids), 500))
        batch.append(command(pond_b, person(7, "Bea"), "/help", next(ids), 600))
        batch.append(command(pond_b, person(7, "Bea"), "/checkin", next(ids), 601))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await handle_batch(h.dp, h.bot, batch)
        handled = loop.time() - started
        assert handled < 5.0  # before: minutes, behind pond A's 80 replies at 20/min

        assert await balance(bot_db, 7) > 0  # pond B's check-in is credited
        while not h.session.sent_texts(POND_B):  # and its /help is answered at once
            assert loop.time() - started < 5.0
            await asyncio.sleep(0.01)
        answered_b = loop.time() - started

        # Pond A: the packet is recorded, its post queued behind the replies; the queue
        # stays bounded (the oldest replies made room); nobody waited for it.
        assert await scalar(bot_db, select(func.count()).select_from(RedPacket)) == 1
        assert h.outbox.pending(GROUP_ID) <= Limits().max_queue_per_chat + 1
        assert h.outbox.posting("rp:1")
        limits = Limits()
        assert h.outbox.stats.dropped_full >= 80 - limits.max_queue_per_chat - limits.per_chat_burst
        stopping = loop.time()
        await h.outbox.stop(drain_timeout=2)
        stopped = loop.time() - stopping
        assert stopped < 4.0
    print(f"batch handled in {handled:.2f}s, pond B answered after {answered_b:.2f}s, "
          f"outbox stopped in {stopped:.2f}s")


# -- announcements: a closing job does not wait for the pond's queue ---------------------

CLOSINGS = {
    "guess.close": ("/guessprice 199 1h 100 Dress", GuessRound, "round_id", "revealed_at"),
    "vote.close": ("/vote 1h Which one? | Rose | Camellia", Vote, "vote_id", "announced_at"),
}


@pytest.mark.parametrize("job", sorted(CLOSINGS))
async def test_a_closing_job_does_not_wait_and_a_lost_announcement_is_made_at_start(
    bot_db: Database, group: Chat, job: str
) -> None:
    command_text, table, id_name, done_column = CLOSINGS[job]
    announced = getattr(table, done_column)
    async with served(bot_db) as h:
        await h.member(group, person(OPERATOR_ID, "Op")).send(command_text)
        await h.settle()
        game_id = await scalar(bot_db, select(table.id))  # type: ignore[attr-defined]
        before = len(h.session.delivered_of(SendMessage))
        # The pond's queue is held for half a minute: the job queues its announcement
        # and returns; the stop that follows does not wait for it either.
        h.session.fail_next("sendMessage", chat_id=GROUP_ID, retry_after=30)
        loop = asyncio.get_running_loop()
        started = loop.time()
        run = TaskRun(
            key=f"{job}:{game_id}", job=job, payload={id_name: game_id}, chat_id=GROUP_ID,
            due=T0, now=T0.replace(hour=14),
        )
        await h.dp["scheduler"].jobs[job](run)
        assert loop.time() - started < 1.0
        await h.outbox.stop(drain_timeout=1)
        assert loop.time() - started < 3.0
        assert await scalar(bot_db, select(announced)) is None
        assert len(h.session.delivered_of(SendMessage)) == before
    async with served(bot_db) as h:  # the next start makes the announcement, once
        await h.dp.emit_startup(bot=h.bot)
        await h.dp.emit_startup(bot=h.bot)
        await h.settle()
        assert len(h.session.delivered_of(SendMessage)) == 1
        assert await scalar(bot_db, select(announced)) is not None
    async with served(bot_db) as h:
        await h.dp.emit_startup(bot=h.bot)
        await h.settle()
        assert h.session.delivered_of(SendMessage) == []


async def test_a_password_grab_before_the_post_is_shown_once_the_post_is_out(
    bot_db: Database, group: Chat
) -> None:
    async with served(bot_db) as h:
        op = h.member(group, person(OPERATOR_ID, "Op"))
        alice = h.member(group, person(1, "Alice"))
        await alice.send("/points")
        await h.settle()
        h.session.fail_next("sendMessage", chat_id=GROUP_ID, retry_after=2)
        await op.send("/redpacket 100 5 pwd=老客福利")
        await alice.send("老客福利")  # a typed password needs no post
        assert await balance(bot_db, 1) > 0
        await h.settle(within=10)
        stored = await scalar(bot_db, select(RedPacket.message_id))
        assert stored is not None
        edits = [e for e in h.session.delivered_of(EditMessageText) if e.message_id == stored]
        assert edits and "1/5" in edits[-1].text


def keyboard(packet_id: int) -> InlineKeyboardMarkup:
    data = RedPacketCB(id=packet_id).pack()
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="🧧", callback_data=data)]]
    )


def bot_post(chat: Chat, message_id: int, markup: InlineKeyboardMarkup) -> Message:
    """A message of the bot's with its keyboard, as Telegram hands it back with a press."""
    return Message(
        message_id=message_id, date=T0, chat=chat, from_user=BOT, text="🧧", reply_markup=markup
    )


async def test_a_second_post_after_a_lost_answer_takes_presses_like_the_first(
    bot_db: Database, group: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered: list[int] = []
    async with served(bot_db) as h:
        # Telegram answers the post, but the process dies before the id is committed.
        async def crash(_: Any, packet_id: int, message_id: int) -> None:
            answered.append(message_id)
            raise RuntimeError("the process died here")

        monkeypatch.setattr(red_packets, "set_message", crash)
        await h.member(group, person(OPERATOR_ID, "Op")).send("/redpacket 100 5")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not answered:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
    monkeypatch.undo()
    first_id = answered[0]
    assert set(answered) == {first_id}  # tried again until the process died
    packet_id = await scalar(bot_db, select(RedPacket.id))
    assert await scalar(bot_db, select(RedPacket.message_id)) is None
    async with served(bot_db) as h:  # the next start posts it again: a second post
        await h.dp.emit_startup(bot=h.bot)
        await h.settle()
        stored = await scalar(bot_db, select(RedPacket.message_id))
        assert stored is not None and len(posts(h, "🧧")) == 1
        data = RedPacketCB(id=packet_id).pack()
        members = [h.member(group, person(i, f"M{i}")) for i in (1, 2, 3, 4)]
        for m in members:
            await m.send("/points")
        await h.settle()
        # A press on either post counts: each message carries this packet's button ...
        await toast(h, members[0], bot_post(group, first_id, keyboard(packet_id)), data)
        await toast(h, members[1], bot_post(group, stored, keyboard(packet_id)), data)
        # ... a bot message with another button, or none, is not a post of this packet.
        await toast(h, members[2], bot_post(group, first_id + 7, keyboard(packet_id + 1)), data)
        await toast(h, members[3], post_message(group, first_id + 8), data)
        await h.settle()
        assert [await balance(bot_db, i) > 0 for i in (1, 2, 3, 4)] == [True, True, False, False]
        assert await scalar(bot_db, select(RedPacket.message_id)) == stored


async def test_a_lost_post_in_a_group_no_longer_served_stays_unposted(
    bot_db: Database, group: Chat
) -> None:
    async with served(bot_db) as h:
        await lose_the_post(h, group, "/redpacket 100 5")
    async with bot_db.transaction() as s:
        await s.execute(update(Pond).where(Pond.chat_id == GROUP_ID).values(trust="revoked"))  # type: ignore[arg-type]
    async with served(bot_db) as h:
        await h.dp.emit_startup(bot=h.bot)
        await h.settle()
        assert posts(h, "🧧") == []
