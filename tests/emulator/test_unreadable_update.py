"""A batch aiogram cannot read does not stop polling: the updates that can be read on
their own are handled, the one that cannot is logged once with its id and skipped."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.types import Message

from bot.emulator import Emulator
from bot.polling import poll
from tests.emulator.conftest import BOB, CAROL


async def test_an_unreadable_update_is_skipped_and_the_rest_handled(
    bot: Bot, emu: Emulator, pond: int, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    router = Router()

    @router.message()
    async def record(message: Message) -> None:
        if message.text:  # not the service message of the bot joining
            seen.append(message.text)

    dp = Dispatcher()
    dp.include_router(router)
    emu.send_message(pond, BOB, "before")
    bad = emu.inject_update({"message": {"message_id": 1, "date": "not a date",
                                          "chat": {"id": pond, "type": "supergroup"}}})
    emu.send_message(pond, CAROL, "after")
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO):
        task = asyncio.create_task(
            poll(dp, bot, allowed_updates=["message"], stop=stop, poll_timeout=1, backoff=0.01)
        )
        for _ in range(200):
            if emu.pending_updates == 0 and len(seen) == 2:
                break
            await asyncio.sleep(0.02)
        emu.send_message(pond, BOB, "later")
        for _ in range(200):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert seen == ["before", "after", "later"]
    assert emu.pending_updates == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert f"update {bad['update_id']} cannot be read" in errors[0] and "skipped" in errors[0]
