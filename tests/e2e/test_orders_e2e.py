"""Purchases in the real bot process against the emulator: a typed /order moves a member
up a tier with a DM at once; `pondbot import orders`, run beside the bot, leaves its
tier notices in the database and the running bot sends them within seconds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, BOB, OPERATOR, POND, ROOT, BotProcess

pytestmark = pytest.mark.e2e


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or "")


def pondbot(proc: BotProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=proc.env, cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False,
    )


async def test_tier_notices_for_typed_and_imported_orders(
    emu: Emulator, bot_process: BotProcess, tmp_path: Path
) -> None:
    emu.send_message(BOB, BOB, "/start")  # Bob's DM is linked; Alice's is not
    await emu.wait_for_message(BOB, timeout=20)
    emu.send_message(POND, BOB, "大家好")
    emu.send_message(POND, ALICE, "hi")
    emu.send_message(POND, OPERATOR, "/order @bob_b 0.01 E-1")
    await emu.wait_for_message(POND, has("E-1"), timeout=20)
    await emu.wait_for_message(BOB, has("VIP1"), timeout=20)
    await bot_process.idle()

    orders = tmp_path / "orders.csv"
    orders.write_text(
        f"order_no,user_id,amount\nE-1,{BOB},0.01\nE-2,{BOB},299.99\nE-3,{ALICE},5\n",
        encoding="utf-8-sig",
    )
    r = await asyncio.to_thread(pondbot, bot_process, "import", "orders", str(orders))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "imported 2, already recorded 1"
    # ¥300.00 in all: the running bot finds the import's notice and tells Bob.
    dm = await emu.wait_for_message(BOB, has("VIP2"), timeout=30, since=0)
    assert "¥300.00" in dm["text"]
    again = await asyncio.to_thread(pondbot, bot_process, "import", "orders", str(orders))
    assert again.stdout.strip() == "imported 0, already recorded 3"
    assert bot_process.balances() == {BOB: 299, ALICE: 5}
    assert bot_process.query("SELECT user_id, tier, lifetime_spent_cents FROM member "
                             "WHERE lifetime_spent_cents > 0 ORDER BY user_id") == [
        (ALICE, "VIP1", 500), (BOB, "VIP2", 30000)
    ]
    assert not any(e["kind"] == "bot_message" and e["chat_id"] == ALICE for e in emu.events)
    assert bot_process.invariant_ok()
