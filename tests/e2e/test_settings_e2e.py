"""`/settings` in the real bot process against the emulator: a change pays at the next
check-in without a restart, a bad value and a member's attempt change nothing, a
redelivered command is audited once, and a new time zone moves the pond's day at once
(New York's, or another zone's when New York is on Shanghai's day)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from bot.emulator import Emulator
from games.checkin import local_day
from tests.e2e.conftest import ALICE, BOB, CAROL, OPERATOR, POND, BotProcess
from tests.e2e.test_undo_e2e import update_of

pytestmark = pytest.mark.e2e


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or "")


async def zone_on_another_day() -> str:
    """A time zone whose day is not Shanghai's for the next minute (New York's when it
    can be): a check-in after the change shows which day the pond is on. Around
    Shanghai's midnight no zone is, for a minute: then it waits."""
    zones = ("America/New_York", "Pacific/Kiritimati", "Asia/Tokyo", "Pacific/Pago_Pago")
    while True:
        now = datetime.now(UTC)
        for zone in zones:
            if all(
                local_day(now + timedelta(seconds=s), zone)
                != local_day(now + timedelta(seconds=s), "Asia/Shanghai")
                for s in (0, 60)
            ):
                return zone
        await asyncio.sleep(20)


async def test_settings_take_effect_at_once_and_refusals_change_nothing(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.send_message(POND, ALICE, "签到")
    await emu.wait_for_message(POND, has("+5"), timeout=20)  # the pond is known: cached

    change = emu.send_message(POND, OPERATOR, "/settings checkin_base=8")
    await emu.wait_for_message(POND, has("→"), timeout=20)
    emu.send_message(POND, BOB, "签到")  # (in a busy minute the board shows it)
    await bot_process.idle()
    assert bot_process.balances()[BOB] == 8

    emu.send_message(POND, OPERATOR, "/settings checkin_base=8000000 vote_points=3")
    await emu.wait_for_message(POND, has("checkin_base"), timeout=20)
    emu.send_message(POND, CAROL, "/settings checkin_base=1")
    await emu.wait_for_message(POND, has("⛔"), timeout=20)
    emu.replay([update_of(emu, change)])  # Telegram delivers the change again
    await bot_process.idle()

    zone = await zone_on_another_day()
    emu.send_message(POND, OPERATOR, f"/settings timezone={zone}")
    await emu.wait_for_message(POND, has(zone), timeout=20)
    emu.send_message(POND, CAROL, "签到")
    await bot_process.idle()

    assert bot_process.query(
        "SELECT chat_id, key, old_value, new_value, actor_id FROM settings_audit ORDER BY id"
    ) == [
        (POND, "checkin_base", "5", "8", OPERATOR),
        (POND, "timezone", "Asia/Shanghai", zone, OPERATOR),
    ]
    [(stored,)] = bot_process.query("SELECT settings FROM pond WHERE chat_id = ?", POND)
    assert stored == '{"checkin_base": 8}'  # the bad pair changed nothing, vote_points neither
    [(day,)] = bot_process.query("SELECT day FROM checkin WHERE user_id = ?", CAROL)
    now = datetime.now(UTC)
    assert date.fromisoformat(str(day)) == local_day(now, zone) != local_day(now, "Asia/Shanghai")
    assert bot_process.balances() == {ALICE: 5, BOB: 8, CAROL: 8}
    assert bot_process.invariant_ok()
