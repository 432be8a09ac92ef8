"""Red packets in the real bot process against the emulator: a rush on a shop packet,
a member's packet refunded at expiry — also when the bot was down at that moment."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, BOB, CAROL, OPERATOR, OWNER, POND, BotProcess

pytestmark = pytest.mark.e2e

CROWD = 60
FIRST = 60_000


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or "")


def text_of(emu: Emulator, message_id: int) -> str:
    """The message's text as it stands now (after the bot's edits)."""
    return str(next(m for m in emu.messages_in(POND) if m["message_id"] == message_id)["text"])


def with_button(m: dict[str, Any]) -> bool:
    return bool(m.get("reply_markup")) and "🧧" in str(m.get("text") or "")


async def test_sixty_members_rush_a_shop_packet(emu: Emulator, bot_process: BotProcess) -> None:
    for i in range(CROWD):
        emu.add_user(FIRST + i, f"会员{i} <i>", username=f"crowd_{i}")
    emu.send_message(POND, OPERATOR, "/redpacket 1000 10")
    post = await emu.wait_for_message(POND, with_button, timeout=20)
    data = post["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert data.startswith("rp:")

    queries: list[str] = []
    for i in range(CROWD):
        queries.append(emu.click(POND, FIRST + i, post["message_id"], data))
        if i == 7:  # one member taps five times
            queries += [emu.click(POND, FIRST + 7, post["message_id"], data) for _ in range(4)]
    answers = [await emu.wait_callback_answer(q, timeout=30) for q in queries]
    assert all(a is not None for a in answers)
    records = [emu.callback_queries[q] for q in queries]
    assert all(r.answered for r in records)
    answered = [e["query_id"] for e in emu.events if e["kind"] == "callback_answer"]
    assert sorted(answered) == sorted(queries)  # exactly once each
    await bot_process.idle()

    balances = bot_process.balances()
    crowd = {u: b for u, b in balances.items() if FIRST <= u < FIRST + CROWD}
    assert len(crowd) == 10 and sum(crowd.values()) == 1000
    assert all(b >= 1 for b in crowd.values())
    assert balances.get(OPERATOR, 0) == 0  # the shop paid, not the operator
    [(entries,)] = bot_process.query(
        "SELECT COUNT(*) FROM ledger_entry WHERE user_id = ?", FIRST + 7
    )
    assert entries in (0, 1)  # five taps: one share at most
    assert bot_process.invariant_ok()

    # The message ends up listing who got what, and the luckiest.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while "🏆" not in (text := text_of(emu, post["message_id"])):
        assert loop.time() < deadline, text
        await asyncio.sleep(0.2)
    assert "&lt;" not in text and "会员" in text  # names arrive escaped once, shown as typed
    assert emu.stats.total_429 == 0


async def test_member_without_points_cannot_send(emu: Emulator, bot_process: BotProcess) -> None:
    emu.send_message(POND, CAROL, "/redpacket 10 2")
    reply = await emu.wait_for_message(POND, timeout=20)
    assert reply["text"].startswith("⚠️") and "0" in reply["text"]
    await bot_process.idle()
    assert bot_process.query("SELECT COUNT(*) FROM red_packet") == [(0,)]


async def test_member_packet_refunded_once_across_a_restart(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.send_message(POND, ALICE, "大家好")
    emu.send_message(POND, OWNER, "/give @alice 100")
    await emu.wait_for_message(POND, has("+100"), timeout=20)
    emu.send_message(POND, ALICE, "/redpacket 50 5 for=10s")
    post = await emu.wait_for_message(POND, with_button, timeout=20)
    data = post["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    own = await emu.wait_callback_answer(emu.click(POND, ALICE, post["message_id"], data), 20)
    assert own is not None and "🎉" not in str(own["text"])
    got = await emu.wait_callback_answer(emu.click(POND, BOB, post["message_id"], data), 20)
    assert got is not None and "🎉" in str(got["text"])
    await bot_process.idle()
    balances = bot_process.balances()
    bob = balances[BOB]
    assert balances[ALICE] == 50 and 1 <= bob <= 49

    # The bot dies before the packet's time is up and comes back after it.
    bot_process.kill()
    await bot_process.wait()
    [(expires,)] = bot_process.query("SELECT state FROM red_packet")
    assert expires == "open"
    await asyncio.sleep(11)
    await bot_process.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40
    while bot_process.query("SELECT state FROM red_packet") != [("expired",)]:
        assert loop.time() < deadline, bot_process.logs()[-3000:]
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    assert bot_process.balances()[ALICE] == 50 + (50 - bob)
    refunds = bot_process.query(
        "SELECT user_id, delta FROM ledger_entry WHERE kind = 'red_packet_refund'"
    )
    assert refunds == [(ALICE, 50 - bob)]
    # A late click changes nothing; the message says it ended.
    late = await emu.wait_callback_answer(emu.click(POND, CAROL, post["message_id"], data), 20)
    assert late is not None and "🎉" not in str(late["text"])
    deadline = loop.time() + 20
    while str(50 - bob) not in text_of(emu, post["message_id"]):
        assert loop.time() < deadline
        await asyncio.sleep(0.2)
    # Once more after another restart: still exactly one refund.
    await bot_process.stop()
    await bot_process.start()
    await asyncio.sleep(1.0)
    assert len(bot_process.query(
        "SELECT id FROM ledger_entry WHERE kind = 'red_packet_refund'")) == 1
    assert bot_process.invariant_ok()
