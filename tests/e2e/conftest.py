"""End-to-end rig: the real `pondbot run` process against the local Bot API emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.rig.bot_process import OPERATOR, BotProcess

ROOT = Path(__file__).resolve().parents[2]
OWNER, ALICE, BOB, CAROL = 2001, 2002, 2003, 2004
POND = -1002000000001
OTHER_POND = -1002000000002


async def until(check: Any, within: float, bot: BotProcess) -> Any:
    """Poll `check` until it gives something; past `within` seconds fail with the bot's log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (found := check()):
        assert loop.time() < deadline, bot.logs()[-3000:]
        await asyncio.sleep(0.05)
    return found


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        yield emulator
        emulator.assert_no_violations()


@pytest.fixture
def pond(emu: Emulator) -> int:
    emu.add_user(OWNER, "店主", username="shop_owner")
    emu.add_user(ALICE, "Alice <b>&</b> 🐟", username="alice")
    emu.add_user(BOB, "Bob", username="bob_b")
    emu.add_user(CAROL, "Carol", username="carol")
    emu.add_user(OPERATOR, "Operator", username="operator")
    # The shop's operator (OPERATOR_IDS) is an admin: the group is a pond of the shop.
    emu.create_group(POND, "E2E Pond", members=[ALICE, BOB, CAROL], admins=[OWNER, OPERATOR])
    return POND


@pytest.fixture
async def bot_process(emu: Emulator, pond: int, tmp_path: Path) -> AsyncIterator[BotProcess]:
    proc = BotProcess(emu, tmp_path)
    await proc.start()
    emu.add_bot_to_group(pond, OWNER, as_admin=True)
    await emu.wait_for_message(pond, timeout=20, since=0)  # the welcome
    try:
        yield proc
    finally:
        await proc.stop()
        assert emu.token not in proc.logs(), "the bot token reached the logs"
        assert emu.token.split(":")[1] not in proc.logs()
