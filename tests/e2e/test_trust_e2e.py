"""The real bot process against the emulator: a stranger's group is no pond of the shop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, BOB, OPERATOR, POND, BotProcess

pytestmark = pytest.mark.e2e

MALLORY = 2666
STRANGERS = -1002000000666


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or "")


def calls_to(emu: Emulator, chat_id: int) -> list[str]:
    """The bot's requests aimed at the chat, except reading its admin list."""
    return [
        c["method"] for c in emu.calls
        if str(c["params"].get("chat_id")) == str(chat_id)
        and c["method"] != "getChatAdministrators"
    ]


async def test_a_strangers_group_gets_one_notice_and_nothing_else(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.add_user(MALLORY, "Mallory", username="mallory")
    emu.create_group(STRANGERS, "Mallory's group", members=[ALICE, BOB], admins=[MALLORY])
    emu.add_bot_to_group(STRANGERS, MALLORY, as_admin=True)
    notice = await emu.wait_for_message(STRANGERS, has(str(STRANGERS)), timeout=20, since=0)
    assert "/ponds approve" in notice["text"]

    emu.send_message(POND, ALICE, "hi")
    for text in (f"/give {MALLORY} 1000000", "/give @alice 500", "/take @alice 1",
                 "/redpacket 100 5", "/board"):
        emu.send_message(STRANGERS, MALLORY, text)
    emu.send_message(STRANGERS, BOB, "/checkin")
    emu.send_message(STRANGERS, ALICE, "签到")
    emu.send_message(POND, BOB, "/checkin")  # the shop's pond is served meanwhile
    await bot_process.idle()
    await asyncio.sleep(1.0)  # anything the bot would still say there has been sent
    assert calls_to(emu, STRANGERS) == ["sendMessage"]  # the one notice
    assert bot_process.query("SELECT COUNT(*) FROM ledger_entry WHERE chat_id = ?",
                             STRANGERS) == [(0,)]
    assert set(bot_process.balances()) == {BOB}  # only Bob's check-in in the pond
    assert bot_process.invariant_ok()

    # The shop's owner approves it from a private chat: it is a pond from now on.
    emu.send_message(OPERATOR, OPERATOR, f"/ponds approve {STRANGERS}")
    await emu.wait_for_message(OPERATOR, has("✅"), timeout=20)
    emu.send_message(STRANGERS, ALICE, "/checkin")
    await bot_process.idle()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while ALICE not in bot_process.balances():
        assert loop.time() < deadline, "the approved pond did not credit the check-in"
        await asyncio.sleep(0.05)
    emu.send_message(OPERATOR, OPERATOR, "/ponds")
    listing = await emu.wait_for_message(OPERATOR, has(str(STRANGERS)), timeout=20)
    assert str(POND) in listing["text"]
