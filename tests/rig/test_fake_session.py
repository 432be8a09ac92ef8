from __future__ import annotations

import asyncio

import pytest
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import AnswerCallbackQuery, SendMessage
from aiogram.types import ChatMemberMember, ChatMemberOwner, Message, User

from services.clock import FakeClock
from tests.rig.fake_session import BOT_ID, FakeSession, admin, make_bot, owner

ALICE = User(id=1001, is_bot=False, first_name="Alice")


async def test_default_results_are_typed_and_numbered_per_chat() -> None:
    session = FakeSession()
    bot = make_bot(session)
    me = await bot.get_me()
    assert me.is_bot and me.id == BOT_ID == bot.id

    first = await bot.send_message(-100, "hello")
    second = await bot.send_message(-100, "again")
    other = await bot.send_message(7, "dm")
    assert isinstance(first, Message)
    assert (first.message_id, second.message_id, other.message_id) == (1, 2, 1)
    assert first.text == "hello" and first.chat.id == -100 and first.chat.type == "group"
    assert first.from_user is not None and first.from_user.id == BOT_ID
    assert other.chat.type == "private"

    edited = await bot.edit_message_text("v2", chat_id=-100, message_id=1)
    assert isinstance(edited, Message) and edited.message_id == 1 and edited.text == "v2"
    assert await bot.answer_callback_query("cb-1", text="ok") is True
    assert await bot.pin_chat_message(-100, 1) is True
    assert await bot.delete_webhook() is True

    link = await bot.create_chat_invite_link(-100, name="promo")
    assert link.invite_link.startswith("https://t.me/+") and link.creator.id == BOT_ID

    assert [type(r).__name__ for r in session.requests][:2] == ["GetMe", "SendMessage"]
    assert session.sent_texts() == ["hello", "again", "dm"]
    assert session.sent_texts(-100) == ["hello", "again"]
    assert len(session.requests_of(AnswerCallbackQuery)) == 1
    await bot.session.close()
    assert session.closed


async def test_admins_are_configured_per_chat() -> None:
    session = FakeSession()
    bot = make_bot(session)
    assert await bot.get_chat_administrators(-5) == []
    boss = User(id=1, is_bot=False, first_name="Boss")
    session.admins[-5] = [owner(boss), admin(ALICE, can_delete_messages=True)]
    admins = await bot.get_chat_administrators(-5)
    assert [a.user.id for a in admins] == [1, ALICE.id]
    assert isinstance(admins[0], ChatMemberOwner)
    assert isinstance(await bot.get_chat_member(-5, 1), ChatMemberOwner)
    member = await bot.get_chat_member(-5, 999)
    assert isinstance(member, ChatMemberMember) and member.user.id == 999


async def test_faults_become_real_aiogram_exceptions() -> None:
    session = FakeSession()
    bot = make_bot(session)

    session.fail_next("sendMessage", chat_id=-1, retry_after=7)
    with pytest.raises(TelegramRetryAfter) as retry:
        await bot.send_message(-1, "x")
    assert retry.value.retry_after == 7
    await bot.send_message(-1, "x")  # one-shot: next one succeeds

    session.fail_next(SendMessage, error_code=403)
    with pytest.raises(TelegramForbiddenError, match="kicked"):
        await bot.send_message(-2, "x")

    session.fail_next(migrate_to_chat_id=-1009)
    with pytest.raises(TelegramMigrateToChat) as migrated:
        await bot.send_message(-3, "x")
    assert migrated.value.migrate_to_chat_id == -1009

    session.fail_next(error_code=500, times=2)
    for _ in range(2):
        with pytest.raises(TelegramServerError):
            await bot.send_message(-4, "x")

    session.fail_next(error_code=400, description="Bad Request: message is not modified")
    with pytest.raises(TelegramBadRequest, match="not modified"):
        await bot.edit_message_text("same", chat_id=-4, message_id=1)

    session.fail_next(network=True)
    with pytest.raises(TelegramNetworkError):
        await bot.get_me()

    # A fault scoped to another chat does not fire here.
    session.fail_next(chat_id=-99, error_code=403)
    await bot.send_message(-4, "fine")
    assert session.sent_texts(-4) == ["fine"]
    assert session.sent_texts(-1) == ["x"]


async def test_add_result_queues_explicit_answers() -> None:
    session = FakeSession()
    bot = make_bot(session)
    session.add_result(False, method="pinChatMessage")
    assert await bot.pin_chat_message(-1, 5) is False
    assert await bot.pin_chat_message(-1, 5) is True


async def test_latency_and_times_follow_the_injected_clock() -> None:
    clock = FakeClock(start=100.0)
    session = FakeSession(latency=0.25, clock=clock)
    bot = make_bot(session)
    await asyncio.gather(bot.send_message(1, "a"), bot.send_message(2, "b"))
    await bot.send_message(3, "c")
    assert session.request_times == [100.0, 100.0, 100.25]
    assert clock.now == 100.5
    assert session.max_in_flight == 2


async def test_requests_are_checked_against_the_bot_api_spec() -> None:
    import pytest
    from aiogram.exceptions import TelegramBadRequest
    from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

    from tests.rig.fake_session import FakeSession, make_bot

    session = FakeSession()
    bot = make_bot(session)
    await bot.send_message(-100, "ok <b>bold</b>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest):
        await bot.send_message(-100, "x" * 4097)
    with pytest.raises(TelegramBadRequest):
        await bot.send_message(-100, "<b>&</b>", parse_mode="HTML")
    markup = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="签到", callback_data="x" * 65)]]
    )
    with pytest.raises(TelegramBadRequest):
        await bot.send_message(-100, "board", reply_markup=markup)
    assert len(session.violations) == 3
    assert len(session.requests) == 1
    await bot.session.close()
