"""The shop in the real bot process against the emulator: an operator stocks an item, a
member redeems in the group and the code arrives only in their DM; a member who never
opened a private chat gets theirs after /start."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, BOB, OPERATOR, POND, BotProcess

pytestmark = pytest.mark.e2e


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or "")


def carriers(emu: Emulator, code: str) -> list[int]:
    """Every chat where a message holding `code` was posted."""
    return [
        chat_id
        for chat_id in list(emu.chats)
        for m in emu.messages_in(chat_id)
        if code in str(m.get("text") or "") + str(m.get("caption") or "")
    ]


async def test_a_redeemed_code_arrives_only_in_the_members_dm(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.send_message(BOB, BOB, "/start")  # Bob has a private chat with the bot
    await emu.wait_for_message(BOB, timeout=20)
    for user, name in ((BOB, "bob_b"), (ALICE, "alice")):
        emu.send_message(POND, user, "大家好")
        emu.send_message(POND, OPERATOR, f"/give @{name} 100")
        await emu.wait_for_message(POND, has("+100"), timeout=20)

    emu.send_message(POND, OPERATOR, "/item add 30 2 满100减10")
    added = await emu.wait_for_message(POND, has("#"), timeout=20)
    found = re.search(r"#(\d+)", added["text"])
    assert found is not None
    item_id = int(found.group(1))

    emu.send_message(POND, BOB, f"/redeem {item_id}")
    told = await emu.wait_for_message(POND, timeout=20)
    assert "✅" in told["text"]
    dm = await emu.wait_for_message(BOB, has("满100减10"), timeout=20)
    await bot_process.idle()
    [(bob_code,)] = bot_process.query("SELECT code FROM redemption WHERE user_id = ?", BOB)
    assert isinstance(bob_code, str) and bob_code in dm["text"]
    assert carriers(emu, bob_code) == [BOB]
    assert bob_code not in told["text"]

    # Alice never opened a private chat: the group tells her to; /start brings the code.
    emu.send_message(POND, ALICE, f"/redeem {item_id}")
    told = await emu.wait_for_message(POND, timeout=20)
    assert "/start" in told["text"]
    await bot_process.idle()
    [(alice_code, alice_status)] = bot_process.query(
        "SELECT code, status FROM redemption WHERE user_id = ?", ALICE
    )
    assert alice_status == "undelivered" and carriers(emu, str(alice_code)) == []
    emu.send_message(ALICE, ALICE, "/start")
    await emu.wait_for_message(ALICE, has(str(alice_code)), timeout=20)
    await bot_process.idle()
    assert carriers(emu, str(alice_code)) == [ALICE]
    # Each DM's answer marks its redemption delivered, just after the message.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (statuses := bot_process.query("SELECT status FROM redemption ORDER BY id")) != [
        ("delivered",), ("delivered",)
    ]:
        assert loop.time() < deadline, statuses
        await asyncio.sleep(0.1)
    assert bot_process.balances()[BOB] == 70 and bot_process.balances()[ALICE] == 70
    assert bot_process.query("SELECT stock, redeemed FROM shop_item") == [(0, 2)]
    assert bot_process.invariant_ok()


async def test_codes_uploaded_as_a_file_are_sold_from_the_pool(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.send_message(OPERATOR, OPERATOR, "/item add 0 0 limit=1 京东E卡")
    added = await emu.wait_for_message(OPERATOR, has("#"), timeout=20)
    found = re.search(r"#(\d+)", added["text"])
    assert found is not None
    item_id = int(found.group(1))
    upload = emu.send_message(
        OPERATOR, OPERATOR, "", document="code\nJD-0001\nJD-0002\nJD-0001\n",
        file_name="codes.csv", mime_type="text/csv",
    )
    emu.send_message(OPERATOR, OPERATOR, f"/item codes {item_id}",
                     reply_to=upload["message_id"])
    report = await emu.wait_for_message(OPERATOR, has("JD-0001"), timeout=20)
    assert "2" in report["text"]  # two added, the repeated one named and skipped
    assert any(c["method"] == "getFile" and c["ok"] for c in emu.calls)

    emu.send_message(POND, BOB, "大家好")
    emu.send_message(BOB, BOB, "/start")
    await emu.wait_for_message(BOB, timeout=20)
    emu.send_message(POND, BOB, f"/redeem {item_id}")
    await emu.wait_for_message(BOB, has("JD-0001"), timeout=20)
    await bot_process.idle()
    assert carriers(emu, "JD-0001") == [OPERATOR, BOB]  # the upload and the owner's DM
    assert bot_process.query("SELECT code, state FROM shop_code ORDER BY id") == [
        ("JD-0001", "assigned"), ("JD-0002", "free")
    ]
    assert bot_process.query("SELECT stock, pool FROM shop_item") == [(1, 1)]
