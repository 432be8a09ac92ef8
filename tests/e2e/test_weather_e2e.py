"""Telegram trouble is weather: the real bot process rides out HTML 502 pages, 5xx
answers and dropped connections on every kind of call, and loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, BOB, CAROL, OWNER, BotProcess

pytestmark = pytest.mark.e2e


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or "")


def checkins(proc: BotProcess, user_id: int) -> int:
    [(n,)] = proc.query(
        "SELECT COUNT(*) FROM ledger_entry WHERE user_id = ? AND kind = 'checkin'", user_id
    )
    return int(str(n))


async def until(predicate: Any, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


async def test_html_pages_and_5xx_neither_stop_the_bot_nor_lose_work(
    emu: Emulator, pond: int, tmp_path: Path
) -> None:
    # Telegram's front end is having a bad minute as the bot starts.
    emu.inject_fault("getMe", kind="html502", times=1)
    emu.inject_fault("deleteWebhook", kind="reset", times=1)
    emu.inject_fault("getUpdates", kind="html502", times=3)
    emu.inject_fault("setMyCommands", kind="500", times=1)
    proc = BotProcess(emu, tmp_path)
    await proc.start()  # polling after three HTML pages, without waiting for the commands
    try:
        emu.add_bot_to_group(pond, OWNER, as_admin=True)
        await emu.wait_for_message(pond, timeout=20, since=0)  # the welcome

        # One reply meets an HTML 502 page: it is sent again, once.
        emu.inject_fault("sendMessage", chat_id=pond, kind="html502", times=1)
        emu.send_message(pond, BOB, "/help")
        await emu.wait_for_message(pond, has("/points"), timeout=20)
        emu.send_message(pond, ALICE, "/checkin")
        await proc.idle(within=30)
        await until(lambda: checkins(proc, ALICE) == 1, 20, "Alice's check-in not credited")

        # The connection is dropped under a long poll, twice.
        emu.inject_fault("getUpdates", kind="reset", times=2)
        await asyncio.sleep(0.5)
        emu.send_message(pond, CAROL, "签到")
        await proc.idle(within=30)
        await until(lambda: checkins(proc, CAROL) == 1, 20, "Carol's check-in not credited")

        # The command menu got through after its 500, in the background.
        await until(lambda: len(emu.commands) >= 4, 30, "setMyCommands never retried")
        assert proc.proc is not None and proc.proc.returncode is None  # never exited
    finally:
        assert await proc.stop() == 0
    helps = [m for m in emu.messages_in(pond) if "/points" in str(m.get("text") or "")]
    assert len(helps) == 1  # the /help reply went out once
    assert checkins(proc, ALICE) == 1 and checkins(proc, CAROL) == 1
    assert proc.invariant_ok()
    logs = proc.logs()
    assert logs.count("getUpdates failed") >= 5  # one line a failure ...
    assert "getMe failed" in logs and "deleteWebhook failed" in logs
    assert "Traceback" not in logs  # ... and no traceback for any of them
    assert "<html>" not in logs
    assert emu.token not in logs and emu.token.split(":")[1] not in logs
