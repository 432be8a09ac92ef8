from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.emulator import Emulator, FakeClock

ALICE, BOB, CAROL = 101, 102, 103
POND = -1001234567890


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def emu(clock: FakeClock) -> AsyncIterator[Emulator]:
    async with Emulator(clock=clock) as emulator:
        yield emulator


def make_bot(emu: Emulator, timeout: float = 10.0) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(emu.url), timeout=timeout)
    return Bot(emu.token, session=session)


@pytest.fixture
async def bot(emu: Emulator) -> AsyncIterator[Bot]:
    tg = make_bot(emu)
    try:
        yield tg
    finally:
        await tg.session.close()


@pytest.fixture
def pond(emu: Emulator) -> int:
    """A supergroup "Pond Demo" with Alice (creator), Bob and Carol, and the bot as admin."""
    emu.add_user(ALICE, "Alice", username="alice")
    emu.add_user(BOB, "Bob")
    emu.add_user(CAROL, "Carol", language_code="zh-hans")
    emu.create_group(POND, "Pond Demo", members=[BOB, CAROL], admins=[ALICE])
    emu.add_bot_to_group(POND, ALICE)
    return POND


async def drain(tg: Bot) -> int:
    """Confirm every queued update; returns the next offset."""
    updates = await tg.get_updates(timeout=0)
    offset = updates[-1].update_id + 1 if updates else 0
    if updates:
        await tg.get_updates(offset=offset, timeout=0)
    return offset
