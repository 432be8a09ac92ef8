"""Undo in the real bot process against the emulator: a cancelled vote gets no result
while a new one opens and is closed early with its result once; a cancelled round frees
the pond's slot and pays nobody; a member's red packet recalled, the bot killed (-9)
right after answering and restarted, its expiry run later: one refund, presses pay
nothing."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, BOB, CAROL, OPERATOR, OWNER, POND, BotProcess

pytestmark = pytest.mark.e2e


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or m.get("caption") or "")


def with_button(m: dict[str, Any]) -> bool:
    return bool(m.get("reply_markup"))


def requests(emu: Emulator, needle: str, method: str | None = None) -> list[dict[str, Any]]:
    """Every request the bot made (updates aside) whose parameters contain `needle`."""
    return [
        c
        for c in emu.calls
        if c["method"] != "getUpdates"
        and (method is None or c["method"] == method)
        and needle in json.dumps(c["params"], ensure_ascii=False)
    ]


def replies_to(emu: Emulator, message_id: int) -> list[dict[str, Any]]:
    return [
        m
        for m in emu.messages_in(POND)
        if (m.get("reply_to_message") or {}).get("message_id") == message_id
        and (m.get("from") or {}).get("is_bot")
    ]


def update_of(emu: Emulator, message: dict[str, Any]) -> int:
    return next(
        int(e["update_id"])
        for e in emu.events
        if e["kind"] == "user_message" and e["message_id"] == message["message_id"]
    )


def text_of(emu: Emulator, message_id: int) -> str:
    return str(next(m for m in emu.messages_in(POND) if m["message_id"] == message_id)["text"])


async def until(check: Any, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_cancelled_vote_and_round_post_nothing_and_free_the_way(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.send_message(POND, ALICE, "hi")
    emu.send_message(POND, OPERATOR, "/vote 10s 作废的投票 | 甲 | 乙")
    first = await emu.wait_for_message(POND, has("作废的投票"), timeout=15)
    data = first["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert await emu.wait_callback_answer(emu.click(POND, ALICE, first["message_id"], data), 15)
    cancel = emu.send_message(POND, OPERATOR, "/vote cancel")
    await emu.wait_for_message(POND, has("🚫"), timeout=15)
    opened_at = time.monotonic()
    emu.send_message(POND, OPERATOR, "/vote 10s 新的投票 | 丙 | 丁")  # a new vote at once
    second = await emu.wait_for_message(POND, lambda m: with_button(m) and has("新的投票")(m), 15)
    emu.send_message(POND, OPERATOR, "/vote close")
    await emu.wait_for_message(POND, has("📊"), timeout=15)

    # A round with a typo, cancelled; the slot is free for the corrected one.
    emu.send_message(POND, OPERATOR, "/guessprice 199 30d 100 TypoDress")
    await emu.wait_for_message(POND, has("TypoDress"), timeout=15)
    emu.send_message(POND, BOB, "/guess 199")
    emu.send_message(POND, OPERATOR, "/guessprice cancel")
    await emu.wait_for_message(POND, has("🚫"), timeout=15)
    emu.send_message(POND, OPERATOR, "/guessprice 299 10s 100 RightDress")
    await emu.wait_for_message(POND, has("RightDress"), timeout=15)

    emu.replay([update_of(emu, cancel)])  # Telegram delivers the cancel again
    await bot_process.idle()
    await asyncio.sleep(max(0.0, opened_at + 13 - time.monotonic()))  # past both deadlines
    await until(lambda: bool(requests(emu, "RightDress", "sendMessage")[1:]))  # its reveal
    await bot_process.idle()

    results = requests(emu, "📊", "sendMessage")
    assert len(results) == 1 and "新的投票" in json.dumps(results[0], ensure_ascii=False)
    assert len(requests(emu, "📊")) == 1  # no other request carries a result
    assert len(replies_to(emu, cancel["message_id"])) == 1  # the replay stayed silent
    frozen = text_of(emu, first["message_id"])
    assert "🚫" in frozen and second["message_id"] != first["message_id"]
    assert not requests(emu, "¥199")  # the cancelled round's price is never said
    assert bot_process.query("SELECT state FROM vote ORDER BY id") == [("canceled",), ("closed",)]
    assert bot_process.query("SELECT state, open_chat_id FROM guess_round ORDER BY id") == [
        ("canceled", None),
        ("closed", None),
    ]
    assert bot_process.query("SELECT COUNT(*) FROM ledger_entry WHERE kind='guess_price'") == [
        (0,)
    ]
    assert bot_process.balances().get(ALICE) == 2  # her participation points stay paid
    assert bot_process.invariant_ok()


async def test_recall_refunds_once_across_a_kill_and_the_expiry(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.send_message(POND, ALICE, "大家好")
    emu.send_message(POND, OWNER, "/give @alice 100")
    await emu.wait_for_message(POND, has("+100"), timeout=20)
    emu.send_message(POND, ALICE, "/redpacket 50 5 for=20s")
    created = time.monotonic()
    post = await emu.wait_for_message(POND, with_button, timeout=20)
    data = post["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    packet_id = int(data.removeprefix("rp:"))
    assert f"#{packet_id}" in post["text"]
    got = await emu.wait_callback_answer(emu.click(POND, BOB, post["message_id"], data), 20)
    assert got is not None and "🎉" in str(got["text"])
    await bot_process.idle()
    bob = bot_process.balances()[BOB]
    left = 50 - bob

    recall = emu.send_message(POND, OPERATOR, f"/redpacket recall {packet_id}")
    answer = await emu.wait_for_message(POND, has(f"#{packet_id}"), timeout=20)
    bot_process.kill()  # right after the answer
    assert await bot_process.wait() == -9
    assert f"{left}" in answer["text"]
    assert bot_process.query("SELECT state FROM red_packet") == [("recalled",)]
    refunds = "SELECT user_id, delta FROM ledger_entry WHERE kind = 'red_packet_refund'"
    assert bot_process.query(refunds) == [(ALICE, left)]

    await bot_process.start()
    emu.replay([update_of(emu, recall)])  # delivered again after the restart
    await bot_process.idle()
    expiry = f"SELECT state FROM scheduled_task WHERE key = 'rp:{packet_id}:expire'"
    await asyncio.sleep(max(0.0, created + 21 - time.monotonic()))
    await until(lambda: bot_process.query(expiry) == [("done",)], within=40)

    late = await emu.wait_callback_answer(emu.click(POND, CAROL, post["message_id"], data), 20)
    assert late is not None and "🎉" not in str(late["text"]) and "撤回" in str(late["text"])
    await bot_process.idle()
    assert bot_process.query(refunds) == [(ALICE, left)]  # exactly one refund
    balances = bot_process.balances()
    assert balances[ALICE] == 50 + left and balances[BOB] == bob and CAROL not in balances
    assert len(replies_to(emu, recall["message_id"])) == 1
    assert "撤回" in text_of(emu, post["message_id"]) and "Bob" in text_of(emu, post["message_id"])
    assert bot_process.invariant_ok()
