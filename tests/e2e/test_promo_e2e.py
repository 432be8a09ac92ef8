"""Scheduled posts in the real bot process against the emulator: a post survives a
SIGKILL and fires exactly once however often the bot restarts; a broadcast to 300 ponds
with one kicked pond and a 429 storm reaches every active pond exactly once, within
Telegram's rates."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import Emulator
from bot.emulator.server import Member
from tests.e2e.conftest import OPERATOR, POND, BotProcess

pytestmark = pytest.mark.e2e


def preview_buttons(m: dict[str, Any]) -> bool:
    return "pp:ok:" in str(m.get("reply_markup") or "")


async def confirm(emu: Emulator, chat_id: int, user_id: int) -> int:
    """Press the preview's confirm button; the post's id."""
    control = await emu.wait_for_message(chat_id, preview_buttons, timeout=20)
    data = control["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    qid = emu.click(chat_id, user_id, control["message_id"], data)
    answer = await emu.wait_callback_answer(qid, timeout=15)
    assert answer is not None and "✅" in str(answer.get("text")), answer
    return int(data.rsplit(":", 1)[1])


def posts_in(emu: Emulator, chat_id: int, text: str) -> list[dict[str, Any]]:
    """The bot's messages with `text` that are posts (previews are replies)."""
    return [
        m
        for m in emu.messages_in(chat_id)
        if m.get("from", {}).get("id") == emu.bot_id
        and m.get("text") == text
        and "reply_to_message" not in m
    ]


async def test_post_survives_sigkill_and_restarts_fire_it_exactly_once(
    emu: Emulator, bot_process: BotProcess
) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    emu.send_message(POND, OPERATOR, "/promo at +20s Hello")
    post_id = await confirm(emu, POND, OPERATOR)
    key = f"promo.post:{post_id}"
    assert bot_process.query("SELECT state FROM scheduled_task WHERE key = ?", key) == [
        ("pending",)
    ]
    await asyncio.sleep(max(0.0, t0 + 5 - loop.time()))
    bot_process.kill()
    assert await bot_process.wait() == -9
    await asyncio.sleep(max(0.0, t0 + 25 - loop.time()))  # the bot is down at the due time
    assert posts_in(emu, POND, "Hello") == []
    await bot_process.start()
    await emu.wait_for_message(
        POND, lambda m: m.get("text") == "Hello" and "reply_to_message" not in m, timeout=30
    )
    # Two more restarts, a sweep period apart: nothing fires a second time.
    for _ in range(2):
        assert await bot_process.stop() == 0
        await bot_process.start()
        await asyncio.sleep(1)
    await bot_process.idle()
    assert len(posts_in(emu, POND, "Hello")) == 1
    tasks = bot_process.query("SELECT key, state FROM scheduled_task WHERE key LIKE 'promo.%'")
    assert sorted(state for _k, state in tasks) == ["done", "done"]  # the post, its delivery
    assert bot_process.query("SELECT state FROM broadcast_delivery") == [("sent",)]
    assert bot_process.query("SELECT state FROM promo_post") == [("sent",)]


PONDS = 300


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_broadcast_to_300_ponds_with_a_kicked_pond_and_a_429_storm(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.add_user(OPERATOR, "Operator", username="operator")
    ids = [-1003000000000 - i for i in range(PONDS)]
    for i, chat_id in enumerate(ids):
        emu.create_group(chat_id, f"鱼塘 {i}")
        emu.chats[chat_id].members[emu.bot_id] = Member("member")
    kicked = ids[7]
    emu.chats[kicked].members[emu.bot_id] = Member("kicked")  # unnoticed: the next send 403s
    proc = BotProcess(emu, tmp_path)
    await proc.start()
    try:
        proc.seed_ponds(ids)
        emu.send_message(OPERATOR, OPERATOR, "/promo at +4s 双十一 全场5折 🎉")
        post_id = await confirm(emu, OPERATOR, OPERATOR)
        # The first 40 sends of the broadcast answer 429 (retry after 2 s).
        emu.inject_fault(method="sendMessage", kind="429", times=40, retry_after=2)
        report = await emu.wait_for_message(
            OPERATOR, lambda m: "📣" in str(m.get("text")), timeout=90
        )
        copies = {c: len(posts_in(emu, c, "双十一 全场5折 🎉")) for c in ids}
        assert copies[kicked] == 0
        assert all(n == 1 for c, n in copies.items() if c != kicked), Counter(copies.values())
        assert proc.query("SELECT status FROM pond WHERE chat_id = ?", kicked) == [("inactive",)]
        states = dict(
            proc.query(  # type: ignore[arg-type]
                "SELECT state, COUNT(*) FROM broadcast_delivery WHERE post_id = ? GROUP BY state",
                post_id,
            )
        )
        assert states == {"sent": PONDS - 1, "skipped": 1}
        assert f"{PONDS - 1}" in report["text"]

        sends = [e for e in emu.events if e["kind"] == "bot_message" and e["chat_id"] in set(ids)]
        times = [float(e["time"]) for e in sends]
        per_second = max_in_window(times, 1.0)
        span = max(times) - min(times)
        rate = (len(times) - 1) / span
        per_pond = max(Counter(e["chat_id"] for e in sends).values())
        flood_429 = emu.stats.total_429 - 40
        print(
            f"\nbroadcast: {len(times)} posts in {span:.1f} s = {rate:.1f}/s "
            f"(busiest second {per_second}, ceiling 30/s); max {per_pond} per pond; "
            f"{flood_429} flood-limit 429s beyond the 40 injected"
        )
        assert per_second <= 30 and rate <= 30
        assert per_pond <= 20
        # After the storm the 40 parked ponds are retried first, as soon as their
        # retry_after passes, and the broadcast fills what is left of the 30/s window; a
        # request counts there until its answer, so however the network delays it, it
        # never lands over the emulator's limit.
        assert flood_429 == 0
    finally:
        await proc.stop()
        assert emu.token not in proc.logs()
