"""Points expiry in the real bot process against the emulator: the day's expiry run is
due when the bot starts (it was down at 00:05), expires what is left of a lot 40 days
old and records the reminder of a lot that expires in 5 days — whose DM Telegram holds
back (a 429 of a minute) — and the bot is killed with SIGKILL. Started again with the
day's run due once more, it expires nothing a second time and the reminder goes out
once; a further restart changes nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, OPERATOR, BotProcess, until

pytestmark = pytest.mark.e2e

SHANGHAI = ZoneInfo("Asia/Shanghai")


async def away_from_midnight() -> None:
    """Not within three minutes of Shanghai's midnight: one local day throughout."""
    while True:
        now = datetime.now(SHANGHAI)
        if (now + timedelta(minutes=3)).date() == now.date():
            return
        await asyncio.sleep(10)


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def reminders(emu: Emulator) -> list[str]:
    return [str(m.get("text")) for m in emu.messages_in(ALICE) if "⏳" in str(m.get("text"))]


def expiries(bot: BotProcess) -> list[tuple[object, ...]]:
    return bot.query("SELECT user_id, delta FROM ledger_entry WHERE kind = 'expire'")


def write(bot: BotProcess, sql: str, *args: object) -> None:
    con = sqlite3.connect(bot.db_path, timeout=30)
    with con:
        con.execute(sql, args)
    con.close()


def due_again(bot: BotProcess) -> None:
    """The day's run due now, as for a bot that was down at its time (a run the kill
    left `running` is taken over at the start anyway)."""
    write(bot, "UPDATE scheduled_task SET run_at = ? WHERE key = 'points.expiry' "
          "AND state = 'pending'", stamp(datetime.now(UTC) - timedelta(hours=1)))


async def test_a_lot_expiring_across_a_kill_expires_once_and_is_reminded_once(
    emu: Emulator, bot_process: BotProcess
) -> None:
    await away_from_midnight()
    emu.send_message(ALICE, ALICE, "/start")
    await emu.wait_for_message(ALICE, timeout=20)
    emu.send_message(OPERATOR, OPERATOR, "/start")
    await emu.wait_for_message(OPERATOR, timeout=20)
    emu.send_message(OPERATOR, OPERATOR,
                     "/settings points_expiry_days=30 points_expiry_reminder_days=7")
    await emu.wait_for_message(OPERATOR, lambda m: "points_expiry_days" in str(m.get("text")),
                               timeout=20)
    await bot_process.idle()
    assert await bot_process.stop() == 0
    # Alice's history: 100 points 40 days ago, 30 points 25 days ago (lots began long ago).
    now = datetime.now(UTC)
    write(bot_process, "UPDATE points_lot_epoch SET lots_from = '2020-01-01 00:00:00.000000'")
    for key, points, days in (("old", 100, 40), ("newer", 30, 25)):
        write(
            bot_process,
            "INSERT INTO ledger_entry (user_id, delta, balance_after, kind, ref, idem_key, "
            "created_at) VALUES (?, ?, ?, 'checkin', '', ?, ?)",
            ALICE, points, points if key == "old" else 130, key, stamp(now - timedelta(days=days)),
        )
    write(bot_process, "UPDATE member SET balance = 130, lifetime_earned = 130 WHERE user_id = ?",
          ALICE)
    due_again(bot_process)
    emu.inject_fault("sendMessage", chat_id=ALICE, kind="429", retry_after=60, times=5)
    await bot_process.start()
    await until(lambda: expiries(bot_process), 30, bot_process)
    await until(
        lambda: any(
            c["method"] == "sendMessage" and not c.get("ok")
            and str(c["params"].get("chat_id")) == str(ALICE)
            for c in emu.calls
        ),
        20,
        bot_process,
    )
    bot_process.kill()  # the expiry committed, the reminder recorded, its DM not out
    assert await bot_process.wait() == -9
    emu.clear_faults()
    assert reminders(emu) == []
    due_again(bot_process)
    await bot_process.start()
    [reminder] = await until(lambda: reminders(emu), 30, bot_process)
    expires_on = (datetime.now(SHANGHAI) + timedelta(days=5)).date().isoformat()
    assert "30" in reminder and expires_on in reminder
    await until(
        lambda: bot_process.query(
            "SELECT 1 FROM scheduled_task WHERE key = 'points.expiry' AND state = 'pending' "
            "AND run_at > ?", stamp(datetime.now(UTC))),
        30,
        bot_process,
    )
    assert await bot_process.stop() == 0  # a restart after that: nothing again
    await bot_process.start()
    await asyncio.sleep(1.5)
    await bot_process.idle()
    assert len(reminders(emu)) == 1
    assert expiries(bot_process) == [(ALICE, -100)]
    assert bot_process.query("SELECT balance FROM member WHERE user_id = ?", ALICE) == [(30,)]
    assert bot_process.query(
        "SELECT points, sent_at IS NOT NULL FROM points_expiry_notice WHERE user_id = ?", ALICE
    ) == [(30, 1)]
    assert bot_process.invariant_ok()
