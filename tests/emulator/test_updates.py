"""Long polling, redelivery, users acting in chats, and a real Dispatcher end to end."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramMigrateToChat,
)
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.emulator import ANONYMOUS_ADMIN_ID, Emulator
from tests.emulator.conftest import ALICE, BOB, CAROL, drain


async def test_long_polling_offsets_and_replay(bot: Bot, emu: Emulator, pond: int) -> None:
    offset = await drain(bot)
    poll = asyncio.create_task(bot.get_updates(offset=offset, timeout=5))
    await asyncio.sleep(0.05)
    assert not poll.done()  # held open until something happens
    emu.send_message(pond, BOB, "签到")
    emu.inject_update({"message": {"message_id": 99, "date": 0, "chat": {"id": pond,
                                   "type": "supergroup"}, "text": "raw"}})
    updates = await asyncio.wait_for(poll, 2)
    if len(updates) == 1:
        updates += await bot.get_updates(offset=updates[0].update_id + 1, timeout=1)
    assert [u.message.text for u in updates if u.message] == ["签到", "raw"]
    first, second = updates[0].update_id, updates[1].update_id
    assert second == first + 1

    # unconfirmed updates come again; confirming drops them
    again = await bot.get_updates(offset=first + 1, timeout=0)
    assert [u.update_id for u in again] == [second]
    assert await bot.get_updates(offset=second + 1, timeout=0) == []

    emu.replay([first])
    redelivered = await bot.get_updates(offset=second + 1, timeout=1)
    assert [u.update_id for u in redelivered] == [first]
    assert redelivered[0].message is not None and redelivered[0].message.text == "签到"
    assert await bot.get_updates(offset=first + 1, timeout=0) == []


async def test_second_poller_gets_conflict(bot: Bot, emu: Emulator) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=2))
    await asyncio.sleep(0.05)
    with pytest.raises(TelegramConflictError):
        await bot.get_updates(timeout=0)
    emu.inject_update({"message": {"message_id": 1, "date": 0,
                                   "chat": {"id": 5, "type": "private"}, "text": "x"}})
    assert len(await asyncio.wait_for(poll, 2)) == 1


async def test_chat_member_updates_only_when_asked_and_admin(
    bot: Bot, emu: Emulator, pond: int
) -> None:
    offset = await drain(bot)  # default allowed_updates: no chat_member
    emu.join(pond, 201)
    kinds = [u.event_type for u in await bot.get_updates(offset=offset, timeout=0)]
    assert kinds == ["message"]  # only the new_chat_members service message

    offset = await drain(bot)
    await bot.get_updates(offset=offset, timeout=0, allowed_updates=["message", "chat_member"])
    link = await bot.create_chat_invite_link(pond, name="spring")
    emu.join(pond, 202, invite_link=link.invite_link)
    updates = await bot.get_updates(offset=offset, timeout=0)
    assert [u.event_type for u in updates] == ["chat_member", "message"]
    member = updates[0].chat_member
    assert member is not None and member.invite_link is not None
    assert member.invite_link.name == "spring"
    assert (member.old_chat_member.status, member.new_chat_member.status) == ("left", "member")

    offset = updates[-1].update_id + 1
    emu.set_bot_admin(pond, admin=False)
    emu.leave(pond, 202)  # the bot is no longer an admin: no chat_member update
    kinds = [u.event_type for u in await bot.get_updates(offset=offset, timeout=0)]
    assert kinds == ["message"]  # my_chat_member was not asked for this time


async def test_user_messages_are_proper_updates(bot: Bot, emu: Emulator, pond: int) -> None:
    offset = await drain(bot)
    emu.send_message(pond, ALICE, "/points@pondbot_demo_bot now")
    emu.send_message(pond, ALICE, "hello all", sender_chat=pond)
    reply_to = emu.messages_in(pond)[-1]["message_id"]
    emu.send_message(pond, BOB, "a photo", photo=True, reply_to=reply_to)
    updates = await bot.get_updates(offset=offset, timeout=0)
    command, anonymous, photo = (u.message for u in updates)
    assert command is not None and command.entities is not None
    assert (command.entities[0].type, command.entities[0].length) == ("bot_command", 24)
    assert anonymous is not None and anonymous.from_user is not None
    assert anonymous.from_user.id == ANONYMOUS_ADMIN_ID
    assert anonymous.sender_chat is not None and anonymous.sender_chat.id == pond
    assert photo is not None and photo.photo and photo.caption == "a photo"
    assert photo.reply_to_message is not None


async def test_private_chats_need_a_start(bot: Bot, emu: Emulator) -> None:
    emu.add_user(CAROL, "Carol")
    with pytest.raises(TelegramForbiddenError, match="can't initiate conversation"):
        await bot.send_message(CAROL, "hi")
    emu.send_message(CAROL, CAROL, "/start")
    await bot.send_message(CAROL, "hi")
    emu.block_bot(CAROL)
    with pytest.raises(TelegramForbiddenError, match="blocked by the user"):
        await bot.send_message(CAROL, "hi again")


async def test_kicked_migrated_and_edits(bot: Bot, emu: Emulator, pond: int) -> None:
    message = await bot.send_message(pond, "hello")
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("hello", chat_id=pond, message_id=message.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=pond, message_id=999)
    emu.create_group(-555, "Old group", supergroup=False, members=[BOB], admins=[ALICE])
    emu.add_bot_to_group(-555, ALICE)
    emu.migrate_group(-555, -1009990000555)
    with pytest.raises(TelegramMigrateToChat) as info:
        await bot.send_message(-555, "hi")
    assert info.value.migrate_to_chat_id == -1009990000555
    await bot.send_message(-1009990000555, "hi")
    emu.remove_bot(pond, ALICE)
    with pytest.raises(TelegramForbiddenError, match="kicked"):
        await bot.send_message(pond, "anyone?")
    assert [e["method"] for e in emu.errors] == [
        "editMessageText", "editMessageText", "sendMessage", "sendMessage"
    ]
    emu.assert_no_violations()


async def test_callback_answered_once(bot: Bot, emu: Emulator, pond: int) -> None:
    message = await bot.send_message(pond, "tap", reply_markup=InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="签到", callback_data="checkin")]]))
    query_id = emu.click(pond, BOB, message.message_id, "checkin")
    forged_id = emu.click(pond, BOB, message.message_id, "give:1000")
    assert not emu.callback_queries[query_id].forged
    assert emu.callback_queries[forged_id].forged
    assert await bot.answer_callback_query(query_id, text="+12")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query_id, text="again")
    with pytest.raises(TelegramBadRequest, match="query ID is invalid"):
        await bot.answer_callback_query("424242")
    assert emu.callback_answer(query_id) == {
        "text": "+12", "show_alert": False, "url": None, "cache_time": None
    }
    assert emu.callback_answer(forged_id) is None


def build_router() -> Router:
    router = Router()

    @router.message(Command("points"))
    async def points(message: Message) -> None:
        await message.answer(
            "你有 <b>50</b> 积分",
            reply_markup=InlineKeyboardMarkup(
                inline_keyboard=[[InlineKeyboardButton(text="签到", callback_data="ci")]]
            ),
        )

    @router.callback_query(F.data == "ci")
    async def checkin(query: CallbackQuery) -> None:
        await query.answer(f"+12 for {query.from_user.first_name}")
        if isinstance(query.message, Message):
            await query.message.edit_text("你有 <b>62</b> 积分")

    return router


async def test_dispatcher_end_to_end(emu: Emulator, pond: int) -> None:
    from aiogram.client.default import DefaultBotProperties

    from tests.emulator.conftest import make_bot

    tg = make_bot(emu)
    tg.default = DefaultBotProperties(parse_mode="HTML")
    dp = Dispatcher()
    dp.include_router(build_router())
    polling = asyncio.create_task(
        dp.start_polling(tg, handle_signals=False, close_bot_session=False, polling_timeout=1)
    )
    try:
        emu.send_message(pond, BOB, "/points")
        reply = await emu.wait_for_message(pond, lambda m: "50" in m.get("text", ""))
        query_id = emu.click(pond, BOB, reply["message_id"], "ci")
        assert await emu.wait_callback_answer(query_id, timeout=5) is not None
        await emu.wait_for_event(lambda e: e["kind"] == "edit", timeout=5)
        assert emu.messages_in(pond)[-1]["text"] == "你有 62 积分"
        lines = emu.render(pond).splitlines()
        assert "[Pond Demo] Bob: /points" in lines
        assert "[Pond Demo] 🤖 bot: 你有 50 积分" in lines
        assert "    [签到]" in lines
        assert "   ↳ toast to Bob: +12 for Bob" in lines
        assert "   ↳ edited #" + str(reply["message_id"]) + ": 你有 62 积分" in lines
        emu.assert_no_violations()
        assert emu.stats.total_429 == 0
    finally:
        await dp.stop_polling()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await tg.session.close()
