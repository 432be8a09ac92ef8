"""What the emulator records for an audit (bench/soak.py): 429s of its own flood limiter
apart from injected ones, every answer attempt per callback query, and when each update
was delivered and confirmed."""

from __future__ import annotations

import pytest
from aiogram import Bot
from aiogram.exceptions import ClientDecodeError, TelegramBadRequest, TelegramRetryAfter

from bot.emulator import Emulator, FakeClock
from tests.emulator.conftest import BOB, drain


async def test_flood_429s_are_told_apart_from_injected_ones(
    bot: Bot, emu: Emulator, pond: int, clock: FakeClock
) -> None:
    emu.inject_fault("sendMessage", kind="429", retry_after=2)
    emu.inject_fault("getChat", kind="html502")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(pond, "injected")
    with pytest.raises(ClientDecodeError):
        await bot.get_chat(pond)
    for i in range(5):  # the per-chat burst
        await bot.send_message(pond, f"message {i}")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(pond, "too fast")
    assert emu.stats.total_429 == 2
    assert emu.stats.flood_429 == 1 and emu.stats.flood_429_by_chat == {pond: 1}
    assert emu.stats.injected == {"429": 1, "html502": 1}
    assert emu.stats.injected_by_method == {"sendMessage": 1, "getChat": 1}
    assert [e["origin"] for e in emu.errors] == ["fault", "flood"]
    assert emu.errors[-1]["at"] == clock.now


async def test_every_answer_attempt_is_recorded(
    bot: Bot, emu: Emulator, pond: int, clock: FakeClock
) -> None:
    message = await bot.send_message(pond, "tap", reply_markup={  # type: ignore[arg-type]
        "inline_keyboard": [[{"text": "ok", "callback_data": "ok"}]]})
    query_id = emu.click(pond, BOB, message.message_id, "ok")
    await bot.answer_callback_query(query_id, text="done")
    clock.advance(1)
    with pytest.raises(TelegramBadRequest):
        await bot.answer_callback_query(query_id, text="again")
    record = emu.callback_queries[query_id]
    assert record.attempts == [clock.now - 1, clock.now]
    assert record.answer is not None and record.answer["text"] == "done"


async def test_delivery_and_confirmation_times(
    bot: Bot, emu: Emulator, pond: int, clock: FakeClock
) -> None:
    await drain(bot)
    emu.send_message(pond, BOB, "hi")
    update_id = emu.events[-1]["update_id"]
    assert emu.oldest_pending_update == update_id
    clock.advance(2)
    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == [update_id]
    clock.advance(3)
    await bot.get_updates(offset=update_id + 1, timeout=0)
    assert emu.delivered_at[update_id] == clock.now - 3
    assert emu.confirmed_at[update_id] == clock.now
    assert emu.oldest_pending_update is None


async def test_blocking_and_unblocking_give_updates_aiogram_parses(
    bot: Bot, emu: Emulator, pond: int
) -> None:
    await drain(bot)
    emu.send_message(BOB, BOB, "/start")
    emu.block_bot(BOB)
    emu.block_bot(BOB, blocked=False)
    updates = await bot.get_updates(timeout=0)
    changes = [u.my_chat_member for u in updates if u.my_chat_member is not None]
    assert [(c.old_chat_member.status, c.new_chat_member.status) for c in changes] == [
        ("member", "kicked"), ("kicked", "member")]
