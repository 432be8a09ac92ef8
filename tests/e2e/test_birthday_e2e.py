"""A birthday in the real bot process against the emulator, killed with SIGKILL at the
greeting: the gift paid and committed, the greeting's DM held back by Telegram (a 429
of a minute). The restarted bot greets once and pays nothing more; restarts after that
change nothing. The birthday is today in the shop's timezone (Asia/Shanghai) and
`birthday_hour=0`, so the greeting is due the moment the bot starts (its start-up
catch-up), as after a bot that was down at the hour."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, OPERATOR, BotProcess, until

pytestmark = pytest.mark.e2e

SHANGHAI = ZoneInfo("Asia/Shanghai")


def greetings(emu: Emulator) -> list[str]:
    return [
        str(m.get("text"))
        for m in emu.messages_in(ALICE)
        if "🎂" in str(m.get("text")) and "50" in str(m.get("text"))
    ]


def gifts(bot: BotProcess) -> list[tuple[object, ...]]:
    return bot.query("SELECT user_id, delta, idem_key FROM ledger_entry WHERE kind = 'birthday'")


async def a_day_ahead() -> datetime:
    """Shanghai's local time, not within two minutes of its midnight."""
    while True:
        now = datetime.now(SHANGHAI)
        if (now + timedelta(minutes=2)).date() == now.date():
            return now
        await asyncio.sleep(10)


async def test_killed_at_the_greeting_one_greeting_one_payment(
    emu: Emulator, bot_process: BotProcess
) -> None:
    today = await a_day_ahead()
    emu.send_message(ALICE, ALICE, "/start")
    await emu.wait_for_message(ALICE, timeout=20)
    emu.send_message(ALICE, ALICE, f"/birthday {today:%m-%d}")
    await emu.wait_for_message(ALICE, lambda m: "🎂" in str(m.get("text")), timeout=20)
    emu.send_message(OPERATOR, OPERATOR, "/start")
    await emu.wait_for_message(OPERATOR, timeout=20)
    emu.send_message(OPERATOR, OPERATOR, "/settings birthday_hour=0")
    await emu.wait_for_message(OPERATOR, lambda m: "birthday_hour" in str(m.get("text")),
                               timeout=20)
    await bot_process.idle()
    # Telegram holds back Alice's DMs for a minute: the greeting cannot go out.
    emu.inject_fault("sendMessage", chat_id=ALICE, kind="429", retry_after=60, times=5)
    assert await bot_process.stop() == 0
    await bot_process.start()  # the start-up catch-up: the gift is due now
    await until(lambda: gifts(bot_process), 30, bot_process)
    await until(
        lambda: any(
            c["method"] == "sendMessage" and not c.get("ok")
            and str(c["params"].get("chat_id")) == str(ALICE)
            for c in emu.calls
        ),
        20,
        bot_process,
    )
    bot_process.kill()  # the gift committed, the greeting not out
    assert await bot_process.wait() == -9
    emu.clear_faults()
    assert greetings(emu) == []
    assert bot_process.query("SELECT birthday_greeting FROM member WHERE user_id = ?", ALICE) == [
        (today.year,)
    ]
    await bot_process.start()
    await until(lambda: greetings(emu), 30, bot_process)
    assert await bot_process.stop() == 0  # a restart after that: nothing again
    await bot_process.start()
    await asyncio.sleep(1.5)
    await bot_process.idle()
    assert len(greetings(emu)) == 1
    assert gifts(bot_process) == [(ALICE, 50, f"birthday:{ALICE}:{today.year}")]
    assert bot_process.query("SELECT birthday_greeting FROM member WHERE user_id = ?", ALICE) == [
        (None,)
    ]
    assert bot_process.invariant_ok()
