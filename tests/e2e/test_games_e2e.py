"""Guess the price, votes and invite links: the real bot process against the emulator,
killed and restarted around the deadlines."""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, BOB, CAROL, OPERATOR, OWNER, POND, ROOT, BotProcess

pytestmark = pytest.mark.e2e

VOTERS = range(3001, 3051)  # 50 members
NEWCOMER, REJOINER = 3101, 3102


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or m.get("caption") or "")


def bot_requests_mentioning(emu: Emulator, needle: str) -> list[dict[str, Any]]:
    """Every request the bot made whose parameters contain `needle` (updates aside)."""
    return [
        c
        for c in emu.calls
        if c["method"] != "getUpdates" and needle in json.dumps(c["params"], ensure_ascii=False)
    ]


def export_votes(proc: BotProcess) -> list[dict[str, str]]:
    out = proc.workdir / "votes.csv"
    r = subprocess.run(
        [sys.executable, "-m", "bot", "export", "votes", "--out", str(out)],
        env=proc.env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert r.returncode == 0, r.stderr
    with out.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


async def until(check: Any, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_guess_and_vote_close_on_time_across_a_restart(
    emu: Emulator, bot_process: BotProcess
) -> None:
    for uid in (ALICE, BOB, CAROL):
        emu.send_message(POND, uid, "hi")
    for uid in VOTERS:
        emu.add_user(uid, f"Voter {uid}")
    emu.send_message(POND, OPERATOR, "/guessprice 199 20s 100 TestDress")
    opened_at = time.monotonic()
    post = await emu.wait_for_message(POND, has("TestDress"), timeout=15)
    emu.send_message(POND, OPERATOR, "/vote 25s 上新选哪款？ | 红色 | 蓝色 | 白色")
    vote = await emu.wait_for_message(POND, has("上新选哪款"), timeout=15)
    buttons = [b["callback_data"] for row in vote["reply_markup"]["inline_keyboard"] for b in row]
    assert len(buttons) == 3 and all(len(b.encode()) <= 64 for b in buttons)

    emu.send_message(POND, ALICE, "/guess 150")
    emu.send_message(POND, BOB, "198", reply_to=post["message_id"])
    emu.send_message(POND, CAROL, "/guess 250")
    # 50 members vote (voter i: option i % 3); 10 of them change their mind (to option 2).
    queries = [
        emu.click(POND, uid, vote["message_id"], buttons[i % 3]) for i, uid in enumerate(VOTERS)
    ]
    queries += [emu.click(POND, uid, vote["message_id"], buttons[2]) for uid in VOTERS[:10]]
    for q in queries:
        assert await emu.wait_callback_answer(q, timeout=15) is not None
    await until(lambda: bot_process.query("SELECT COUNT(*) FROM price_guess")[0][0] == 3)
    await bot_process.idle()

    # The bot dies before the deadlines and comes back after them.
    bot_process.kill()
    assert await bot_process.wait() == -9
    assert not bot_requests_mentioning(emu, "199"), "the price leaked before the close"
    assert bot_process.query("SELECT state FROM guess_round") == [("open",)]
    await asyncio.sleep(max(0.0, opened_at + 27 - time.monotonic()))
    await bot_process.start()

    reveal = await emu.wait_for_message(POND, has("¥199"), timeout=40, since=0)
    assert "Bob" in reveal["text"] and "Alice" not in reveal["text"]
    result = await emu.wait_for_message(POND, has("📊"), timeout=40, since=0)
    assert "上新选哪款" in result["text"]
    await bot_process.idle()
    assert bot_process.query("SELECT state FROM guess_round") == [("closed",)]
    assert bot_process.query("SELECT state FROM vote") == [("closed",)]

    balances = bot_process.balances()
    assert balances.pop(BOB) == 100
    assert ALICE not in balances and CAROL not in balances
    assert balances == {uid: 2 for uid in VOTERS}  # participation paid once each
    [(vote_entries,)] = bot_process.query("SELECT COUNT(*) FROM ledger_entry WHERE kind='vote'")
    assert vote_entries == 50
    tally = {row["option"]: int(row["count"]) for row in export_votes(bot_process)}
    # Options 0, 1, 2 got 17, 17, 16 first votes; 10 voters (4 from 0, 3 from 1, 3 from 2)
    # moved to option 2.
    assert tally == {"红色": 13, "蓝色": 14, "白色": 23}
    assert "19900" not in bot_process.logs()
    assert bot_process.invariant_ok()


async def test_invite_link_credits_once_after_the_first_checkin(
    emu: Emulator, bot_process: BotProcess
) -> None:
    emu.send_message(POND, ALICE, "/invite")
    answer = await emu.wait_for_message(POND, has("https://t.me/+"), timeout=15)
    link = next(w for w in answer["text"].split() if w.startswith("https://t.me/+"))
    created = [c for c in emu.calls if c["method"] == "createChatInviteLink"]
    assert len(created) == 1 and len(created[0]["params"]["name"]) <= 32

    emu.add_user(NEWCOMER, "Newbie")
    emu.join(POND, NEWCOMER, invite_link=link)
    # Someone who was in the pond before leaves and comes back through the link.
    emu.add_user(REJOINER, "Again")
    emu.send_message(POND, REJOINER, "hello")
    emu.leave(POND, REJOINER)
    emu.join(POND, REJOINER, invite_link=link)
    emu.join(POND, ALICE, invite_link=link)  # her own link: nothing
    await bot_process.idle()
    assert bot_process.query("SELECT newcomer_id, referrer_id FROM referral") == [
        (NEWCOMER, ALICE)
    ]

    for uid in (NEWCOMER, REJOINER):
        emu.send_message(POND, uid, "/checkin")
    await until(
        lambda: bot_process.query("SELECT COUNT(*) FROM ledger_entry WHERE kind='checkin'")[0][0]
        == 2
    )
    emu.send_message(POND, ALICE, "/invite")  # asking again also settles her referrals
    again = await emu.wait_for_message(POND, has(link), timeout=15)
    assert "1" in again["text"]
    await bot_process.idle()
    assert bot_process.balances().get(ALICE) == 20
    emu.send_message(POND, ALICE, "/invite")
    await emu.wait_for_message(POND, has(link), timeout=15)
    await bot_process.idle()
    assert bot_process.balances().get(ALICE) == 20
    assert len([c for c in emu.calls if c["method"] == "createChatInviteLink"]) == 1
    [(referrals,)] = bot_process.query("SELECT COUNT(*) FROM ledger_entry WHERE kind='referral'")
    assert referrals == 1
    assert bot_process.invariant_ok()
    assert OWNER  # the pond's creator added the bot (fixture)
