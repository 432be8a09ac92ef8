"""The emulator as its own process, driven over HTTP by EmulatorClient."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.emulator import EmulatorClient, render_transcript
from bot.emulator.client import EmulatorControlError

POND = -1002000


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.emulator", "--host", "127.0.0.1", "--port", "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        second = (await asyncio.wait_for(process.stdout.readline(), 5)).decode().strip()
        assert first.startswith("EMULATOR_URL=http://127.0.0.1:")
        yield first.split("=", 1)[1], second.split("=", 1)[1]
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_client_drives_a_separate_process(served: tuple[str, str]) -> None:
    url, token = served
    tg = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(url)))
    async with EmulatorClient(url) as emu:
        try:
            await emu.add_user(1, "Alice")
            await emu.add_user(2, "Bob")
            await emu.create_group(POND, "Pond Demo", members=[2], admins=[1])
            await emu.add_bot_to_group(POND, 1)
            await emu.set_flood_limits(True)

            updates = await tg.get_updates(timeout=1)
            assert [u.event_type for u in updates] == ["my_chat_member", "message"]
            offset = updates[-1].update_id + 1

            sent = await emu.send_message(POND, 2, "/points")
            updates = await tg.get_updates(offset=offset, timeout=1)
            assert updates[0].message is not None
            assert updates[0].message.message_id == sent["message_id"]

            reply = await tg.send_message(
                POND, "你有 <b>50</b> 积分", parse_mode="HTML",
                reply_markup=InlineKeyboardMarkup(
                    inline_keyboard=[[InlineKeyboardButton(text="签到", callback_data="ci")]]
                ),
            )
            found = await emu.wait_for_message(POND, contains="50")
            assert found["message_id"] == reply.message_id
            found = await emu.wait_for_message(
                POND, lambda m: "reply_markup" in m, since=0
            )
            assert found["text"] == "你有 50 积分"

            query_id = await emu.click(POND, 2, reply.message_id, "ci")
            await tg.answer_callback_query(query_id, text="+12")
            answer = await emu.wait_callback_answer(query_id, timeout=2)
            assert answer is not None and answer["text"] == "+12"

            with pytest.raises(TelegramBadRequest):
                await tg.send_message(POND, "<b>&</b>", parse_mode="HTML")
            violations = await emu.violations()
            assert len(violations) == 1 and violations[0]["method"] == "sendMessage"
            with pytest.raises(AssertionError):
                await emu.assert_no_violations()

            await emu.inject_fault("sendMessage", kind="429", retry_after=2)
            with pytest.raises(TelegramRetryAfter):
                await tg.send_message(POND, "x")
            stats = await emu.stats()
            assert stats["retry_after_by_method"] == {"sendMessage": 1}

            text = await emu.render(POND)
            assert "[Pond Demo] Bob: /points" in text
            assert "   ↳ toast to Bob: +12" in text
            assert render_transcript(await emu.events()) == await emu.render()

            with pytest.raises(EmulatorControlError):
                await emu.send_message(-1, 2, "no such chat")
        finally:
            await tg.session.close()


def test_render_transcript_lines() -> None:
    events = [
        {"kind": "user_message", "chat_title": "Pond Demo", "user_name": "Alice",
         "text": "/points"},
        {"kind": "bot_message", "chat_title": "Pond Demo", "text": None,
         "raw_text": "你有 <b>50</b> 积分 &amp; 1 张券", "parse_mode": "HTML",
         "reply_markup": {"inline_keyboard": [[{"text": "签到", "callback_data": "c"},
                                               {"text": "规则", "url": "https://x"}]]}},
        {"kind": "edit", "message_id": 7, "text": "你有 62 积分"},
        {"kind": "callback_answer", "user_name": "Bob", "text": "+12"},
        {"kind": "callback_answer", "user_name": "Bob", "text": "No!", "show_alert": True},
    ]
    assert render_transcript(events).splitlines() == [
        "[Pond Demo] Alice: /points",
        "[Pond Demo] 🤖 bot: 你有 50 积分 & 1 张券",
        "    [签到] [规则]",
        "   ↳ edited #7: 你有 62 积分",
        "   ↳ toast to Bob: +12",
        "   ↳ alert to Bob: No!",
    ]
