"""A busy check-in morning: the real bot process against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import OWNER, POND, BotProcess
from tests.e2e.test_foundation_e2e import export_members

pytestmark = pytest.mark.e2e

MEMBERS = 400
FIRST = 50_000


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or "")


def max_per_rolling_minute(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 60.0:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_four_hundred_members_check_in_within_budget(
    emu: Emulator, bot_process: BotProcess
) -> None:
    for i in range(MEMBERS):
        emu.add_user(FIRST + i, f"会员{i}", username=f"member_{i}")
    emu.send_message(POND, OWNER, "/board")
    board = await emu.wait_for_message(POND, lambda m: bool(m.get("reply_markup")), timeout=20)
    button = board["reply_markup"]["inline_keyboard"][0][0]["callback_data"]

    loop = asyncio.get_running_loop()
    started = loop.time()
    queries: list[str] = []
    for i in range(MEMBERS):
        uid = FIRST + i
        if i % 2:
            queries.append(emu.click(POND, uid, board["message_id"], button))
        else:
            emu.send_message(POND, uid, "签到")
        if i % 40 == 39:
            await asyncio.sleep(0.3)  # the morning rush, spread over a few seconds
    assert loop.time() - started < 5.0
    answers = [await emu.wait_callback_answer(q, timeout=20) for q in queries]
    assert all(a is not None and "+5" in str(a["text"]) for a in answers)
    await bot_process.idle(within=30)

    # Right after the rush a command is still answered promptly.
    asked = loop.time()
    emu.send_message(POND, OWNER, "/help")
    await emu.wait_for_message(POND, has("/points"), timeout=10)
    assert loop.time() - asked < 5.0

    members = export_members(bot_process)
    credited = {uid: members[uid] for uid in range(FIRST, FIRST + MEMBERS)}
    assert {row["balance"] for row in credited.values()} == {"5"}
    assert {row["streak"] for row in credited.values()} == {"1"}
    assert bot_process.invariant_ok()

    # Every callback answered exactly once; the group never over its 20 a minute.
    assert all(emu.callback_queries[q].answered for q in queries)
    answered = [e for e in emu.events if e["kind"] == "callback_answer"]
    assert len(answered) == len(queries) == len({e["query_id"] for e in answered})
    group_sends = [e["time"] for e in emu.events
                   if e["actor"] == "bot" and e["chat_id"] == POND
                   and e["kind"] in ("bot_message", "edit")]
    assert max_per_rolling_minute(group_sends) <= 20
    assert emu.stats.total_429 == 0
    # The board ends up showing everyone (the last edit may still be paced).
    await emu.wait_for_event(
        lambda e: e["kind"] == "edit" and e["chat_id"] == POND and str(MEMBERS) in e["text"],
        timeout=20,
    )
