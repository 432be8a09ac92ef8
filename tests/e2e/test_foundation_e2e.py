"""The real bot process against the emulator: commands, rights, replays, crashes."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, BOB, OPERATOR, OTHER_POND, OWNER, POND, ROOT, BotProcess

pytestmark = pytest.mark.e2e


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or "")


def export_members(proc: BotProcess) -> dict[int, dict[str, str]]:
    out = proc.workdir / "members.csv"
    r = subprocess.run(
        [sys.executable, "-m", "bot", "export", "members", "--out", str(out)],
        env=proc.env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert r.returncode == 0, r.stderr
    with out.open(encoding="utf-8-sig", newline="") as f:
        return {int(row["user_id"]): row for row in csv.DictReader(f)}


async def test_start_help_points_answered(emu: Emulator, bot_process: BotProcess) -> None:
    emu.send_message(ALICE, ALICE, "/start")
    await emu.wait_for_message(ALICE, has("/points"), timeout=15)
    emu.send_message(POND, BOB, "/help")
    reply = await emu.wait_for_message(POND, has("/top"), timeout=15)
    assert "/give" not in reply["text"]
    emu.send_message(POND, OWNER, "/help")
    await emu.wait_for_message(POND, has("/give"), timeout=15)
    emu.send_message(POND, ALICE, "/points")
    await emu.wait_for_message(POND, has("0"), timeout=15)
    # Operator commands are offered only to group admins.
    scopes = [c["params"].get("scope", "") for c in emu.calls if c["method"] == "setMyCommands"]
    assert any("all_chat_administrators" in str(s) for s in scopes)


async def test_give_exported_refused_for_members_and_replay_harmless(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.send_message(POND, ALICE, "大家好")
    give = emu.send_message(POND, OWNER, "/give @alice 50 thanks")
    await emu.wait_for_message(POND, has("+50"), timeout=15)
    emu.send_message(POND, BOB, "/give @bob_b 50 me too")
    await emu.wait_for_message(POND, has("⛔"), timeout=15)
    emu.send_message(POND, BOB, "/take @alice 50")
    await emu.wait_for_message(POND, has("⛔"), timeout=15)
    await bot_process.idle()
    members = export_members(bot_process)
    assert members[ALICE]["balance"] == "50"
    assert members[ALICE]["display_name"] == "Alice <b>&</b> 🐟"
    assert members.get(BOB, {}).get("balance", "0") == "0"

    # Telegram redelivers every update so far: nothing changes, nothing is said twice.
    said_before = sum(1 for e in emu.events if e["kind"] == "bot_message")
    emu.replay(sorted(emu.updates))
    await bot_process.idle()
    await asyncio.sleep(1.5)
    assert bot_process.balances() == {ALICE: 50}
    assert sum(1 for e in emu.events if e["kind"] == "bot_message") == said_before
    assert bot_process.invariant_ok()
    assert give["message_id"]


async def test_hostile_input_short_errors_and_no_change(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.send_message(POND, ALICE, "x" * 4096)
    emu.send_message(POND, OWNER, "/give @alice 10")
    await emu.wait_for_message(POND, has("+10"), timeout=15)
    bad = [
        "/give", "/give @x abc", "/give 1 -5", "/give @alice 99999999999999999999999",
        "/give @alice " + "9" * 4000, "/take @alice 11", "/give <b>&</b> 5", "/give @alice 🐟",
    ]
    for text in bad:
        emu.send_message(POND, OWNER, text)
        reply = await emu.wait_for_message(POND, timeout=20)
        assert len(reply["text"]) < 300
        assert reply["text"].startswith("⚠️"), reply["text"]
    await bot_process.idle()
    assert bot_process.balances() == {ALICE: 10}
    assert bot_process.invariant_ok()
    assert emu.stats.total_429 == 0


async def test_sigkill_mid_traffic_keeps_the_ledger_exact(
    emu: Emulator, bot_process: BotProcess
) -> None:
    # The operator (from OPERATOR_IDS) hands out 1 point 240 times, spread over members;
    # the bot is SIGKILLed in the middle and restarted.
    for uid in (ALICE, BOB):
        emu.send_message(POND, uid, "hi")
    await bot_process.idle()
    total = 240
    for i in range(total):
        who = "@alice" if i % 2 else "@bob_b"
        emu.send_message(OPERATOR, OPERATOR, f"/give {who} 1 tip {i}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while bot_process.query("SELECT COUNT(*) FROM ledger_entry")[0][0] < total // 3:  # type: ignore[operator]
        assert loop.time() < deadline, "the bot made no progress"
        await asyncio.sleep(0.01)
    bot_process.kill()
    assert await bot_process.wait() == -9
    done_at_kill = bot_process.query("SELECT COUNT(*) FROM ledger_entry")[0][0]
    assert 0 < done_at_kill < total  # type: ignore[operator]
    assert bot_process.invariant_ok()
    await bot_process.start()
    await bot_process.idle(within=90)
    assert bot_process.balances() == {ALICE: total // 2, BOB: total // 2}
    assert bot_process.query("SELECT COUNT(*) FROM ledger_entry")[0][0] == total
    assert bot_process.invariant_ok()


async def test_kicked_pond_goes_inactive_while_others_are_served(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.create_group(OTHER_POND, "Other pond", members=[BOB], admins=[OWNER, OPERATOR])
    emu.add_bot_to_group(OTHER_POND, OWNER, as_admin=True)
    await emu.wait_for_message(OTHER_POND, timeout=20, since=0)
    # Telegram refuses the next message to POND with 403 (kicked while we were busy).
    emu.inject_fault(method="sendMessage", chat_id=POND, kind="403")
    emu.send_message(POND, ALICE, "/points")
    emu.send_message(OTHER_POND, BOB, "/points")
    await emu.wait_for_message(OTHER_POND, has("0"), timeout=20)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while bot_process.query("SELECT status FROM pond WHERE chat_id = ?", POND) != [("inactive",)]:
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    emu.send_message(OTHER_POND, BOB, "/top")
    await emu.wait_for_message(OTHER_POND, has("🏆"), timeout=20)


def test_demo_prints_a_transcript() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bot", "demo"], cwd=ROOT, capture_output=True, text=True,
        timeout=420, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DATABASE_"))},
    )
    assert r.returncode == 0, r.stderr
    assert "🤖 bot:" in r.stdout and "+50" in r.stdout and "⛔" in r.stdout
    assert "Alice — 40" in r.stdout
    # The shop: a code in Alice's private chat only; the lottery board; the tools.
    dm = [line for line in r.stdout.splitlines() if line.startswith("[DM Alice]")]
    assert any("满99减10券" in line for line in dm)
    assert "🎰" in r.stdout and "VIP1" in r.stdout
    assert "📋" in r.stdout and "[photo]" in r.stdout and "members-" in r.stdout
