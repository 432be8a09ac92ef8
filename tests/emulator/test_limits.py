"""Telegram's flood limits: 20/min per group, ~1/s per chat with bursts, 30/s overall."""

from __future__ import annotations

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramRetryAfter

from bot.emulator import Emulator, FakeClock
from bot.emulator.limits import FloodLimiter
from tests.emulator.conftest import BOB


async def test_group_gets_429_after_20_messages_a_minute(
    bot: Bot, emu: Emulator, pond: int, clock: FakeClock
) -> None:
    for i in range(20):
        await bot.send_message(pond, f"message {i}")
        clock.advance(1.0)  # the per-chat bucket stays full; only the minute counts
    with pytest.raises(TelegramRetryAfter) as info:
        await bot.send_message(pond, "one too many")
    assert info.value.retry_after == 40  # the first message leaves the window at t=60
    assert emu.stats.retry_after_by_method == {"sendMessage": 1}
    assert emu.stats.retry_after_by_chat == {pond: 1}
    clock.advance(39.5)
    with pytest.raises(TelegramRetryAfter) as info:
        await bot.send_message(pond, "still too early")
    assert info.value.retry_after == 1
    clock.advance(0.5)
    await bot.send_message(pond, "fine again")
    assert emu.stats.total_429 == 2


async def test_edits_count_but_callback_answers_and_getters_do_not(
    bot: Bot, emu: Emulator, pond: int, clock: FakeClock
) -> None:
    message = await bot.send_message(pond, "v0")
    for i in range(1, 5):
        await bot.edit_message_text(f"v{i}", chat_id=pond, message_id=message.message_id)
    with pytest.raises(TelegramRetryAfter) as info:  # burst of 5 per chat is spent
        await bot.edit_message_text("v5", chat_id=pond, message_id=message.message_id)
    assert info.value.retry_after == 1
    query_id = emu.click(pond, BOB, message.message_id, "anything")
    assert await bot.answer_callback_query(query_id, text="ok")
    await bot.get_chat(pond)
    await bot.get_chat_member_count(pond)
    clock.advance(1.0)
    await bot.edit_message_text("v5", chat_id=pond, message_id=message.message_id)
    assert emu.stats.retry_after_by_method == {"editMessageText": 1}


async def test_global_30_per_second(bot: Bot, emu: Emulator, clock: FakeClock) -> None:
    for user_id in range(1, 32):
        emu.send_message(user_id, user_id, "/start")  # each user starts the bot
    for user_id in range(1, 31):
        await bot.send_message(user_id, "hello")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(31, "hello")
    clock.advance(1.0)
    await bot.send_message(31, "hello")


async def test_limits_can_be_switched_off(bot: Bot, emu: Emulator, pond: int) -> None:
    emu.set_flood_limits(False)
    for i in range(25):
        await bot.send_message(pond, f"m{i}")
    assert emu.stats.total_429 == 0


def test_token_bucket_refills() -> None:
    clock = FakeClock()
    limiter = FloodLimiter(clock)
    for _ in range(5):
        assert limiter.check(1, is_group=False) is None
        limiter.record(1, is_group=False)
    assert limiter.check(1, is_group=False) == 1
    clock.advance(2.0)
    assert limiter.check(1, is_group=False) is None
