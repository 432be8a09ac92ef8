"""Injected faults become aiogram's real exceptions."""

from __future__ import annotations

import pytest
from aiogram import Bot
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)

from bot.emulator import Emulator
from tests.emulator.conftest import ALICE, BOB, make_bot


async def test_faults_raise_matching_exceptions(bot: Bot, emu: Emulator, pond: int) -> None:
    emu.inject_fault("sendMessage", kind="429", retry_after=7)
    with pytest.raises(TelegramRetryAfter) as info:
        await bot.send_message(pond, "x")
    assert info.value.retry_after == 7
    assert emu.stats.retry_after_by_chat == {pond: 1}

    emu.inject_fault(chat_id=pond, kind="403", times=2)
    for _ in range(2):
        with pytest.raises(TelegramForbiddenError):
            await bot.send_message(pond, "x")
    await bot.send_message(pond, "works again")

    emu.inject_fault("sendMessage", kind="500")
    with pytest.raises(TelegramServerError):
        await bot.send_message(pond, "x")
    emu.inject_fault("getChat", kind="502")
    with pytest.raises(TelegramServerError):
        await bot.get_chat(pond)
    emu.assert_no_violations()


async def test_migrate_fault_moves_the_group(bot: Bot, emu: Emulator) -> None:
    emu.add_user(ALICE, "Alice")
    emu.create_group(-4242, "Small group", supergroup=False, members=[BOB], admins=[ALICE])
    emu.add_bot_to_group(-4242, ALICE)
    emu.inject_fault("sendMessage", chat_id=-4242, kind="migrate", migrate_to=-1004242)
    with pytest.raises(TelegramMigrateToChat) as info:
        await bot.send_message(-4242, "x")
    assert info.value.migrate_to_chat_id == -1004242
    assert set(emu.chats[-1004242].members) == set(emu.chats[-4242].members)
    with pytest.raises(TelegramMigrateToChat):  # the old id stays migrated
        await bot.send_message(-4242, "x")
    message = await bot.send_message(-1004242, "hello supergroup")
    assert message.chat.type == "supergroup"
    texts = [e.get("kind") for e in emu.transcript(-4242)]
    assert "migrate" in texts


async def test_timeout_fault(emu: Emulator, pond: int) -> None:
    tg = make_bot(emu, timeout=0.3)
    try:
        emu.inject_fault("sendMessage", kind="timeout", hang=5)
        with pytest.raises(TelegramNetworkError):
            await tg.send_message(pond, "x")
        await tg.send_message(pond, "after the timeout")
    finally:
        await tg.session.close()


async def test_html_error_page_and_reset_faults(bot: Bot, emu: Emulator, pond: int) -> None:
    """Telegram's front end answers with an HTML page during incidents, or drops the
    connection: aiogram raises ClientDecodeError / TelegramNetworkError, not a JSON error."""
    emu.inject_fault("sendMessage", kind="html502")
    with pytest.raises(ClientDecodeError):
        await bot.send_message(pond, "x")
    emu.inject_fault("getUpdates", kind="html502")
    with pytest.raises(ClientDecodeError):
        await bot.get_updates(timeout=0)
    emu.inject_fault("getChat", kind="reset")
    with pytest.raises(TelegramNetworkError):
        await bot.get_chat(pond)
    await bot.send_message(pond, "works again")
    assert emu.stats.errors[502] == 2
    emu.assert_no_violations()
