"""The lottery in the real bot process against the emulator: an operator adds prizes and
posts the 🎰 board, members press it and get toasts, the board is edited in place inside
the group's budget, an item won reaches only the winner's DM, and every draw is in
`pondbot export draws`."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, BOB, OPERATOR, POND, ROOT, BotProcess
from tests.e2e.test_checkin_e2e import max_per_rolling_minute
from tests.e2e.test_shop_e2e import carriers

pytestmark = pytest.mark.e2e

MEMBERS = 60
FIRST = 60_000


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or "")


def export_draws(proc: BotProcess) -> list[dict[str, str]]:
    out = proc.workdir / "draws.csv"
    r = subprocess.run(
        [sys.executable, "-m", "bot", "export", "draws", "--out", str(out)],
        env=proc.env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert r.returncode == 0, r.stderr
    with out.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


async def test_members_draw_on_the_board_and_the_winner_gets_the_code_by_dm(
    emu: Emulator, bot_process: BotProcess
) -> None:
    # A shop without prizes: the lottery is not open.
    emu.send_message(POND, ALICE, "/draw")
    await emu.wait_for_message(POND, has("抽奖尚未开放"), timeout=20)

    # An item prize (one unit), the board, and Bob — who has a private chat — wins it.
    emu.send_message(POND, OPERATOR, "/item add 30 5 满100减10")
    added = await emu.wait_for_message(POND, has("#"), timeout=20)
    found = re.search(r"#(\d+)", added["text"])
    assert found is not None
    emu.send_message(POND, OPERATOR, f"/prize add 1 1 item={found.group(1)} 优惠券")
    await emu.wait_for_message(POND, has("100.0%"), timeout=20)
    emu.send_message(POND, OPERATOR, "/lottery")
    board = await emu.wait_for_message(POND, has("幸运抽奖"), timeout=20)
    button = board["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    emu.send_message(BOB, BOB, "/start")
    await emu.wait_for_message(BOB, timeout=20)
    q = emu.click(POND, BOB, board["message_id"], button)
    toast = await emu.wait_callback_answer(q, timeout=20)
    assert toast is not None and "优惠券" in str(toast["text"])
    dm = await emu.wait_for_message(BOB, has("满100减10"), timeout=20)
    await bot_process.idle()
    [(code, redemption_id)] = bot_process.query("SELECT code, id FROM redemption")
    assert isinstance(code, str) and code in dm["text"]
    assert code not in str(toast["text"])
    assert carriers(emu, code) == [BOB]  # never the group, never a toast

    # More prizes; a crowd presses at once.
    emu.send_message(POND, OPERATOR, "/prize add 1000 2 points=50 大奖")
    emu.send_message(POND, OPERATOR, "/prize add 1 - none 谢谢参与")
    await emu.wait_for_message(POND, has("谢谢参与"), timeout=20)
    for i in range(MEMBERS):
        emu.add_user(FIRST + i, f"会员{i}", username=f"lucky_{i}")
    queries = [emu.click(POND, FIRST + i, board["message_id"], button) for i in range(MEMBERS)]
    answers = [await emu.wait_callback_answer(q, timeout=30) for q in queries]
    assert all(a is not None for a in answers)
    winners = [a for a in answers if a is not None and "+50" in str(a["text"])]
    assert len(winners) == 2  # the heavy prize while it lasted, never beyond its stock
    await bot_process.idle(within=30)
    assert bot_process.query("SELECT stock, won FROM lottery_prize WHERE name = '大奖'") == [
        (0, 2)]

    # Bob's free draw is used and he has no points: refused, nothing recorded.
    q = emu.click(POND, BOB, board["message_id"], button)
    refused = await emu.wait_callback_answer(q, timeout=20)
    assert refused is not None and "10" in str(refused["text"])

    # The board was edited in place, paced within the group's budget, and shows the crowd.
    await emu.wait_for_event(
        lambda e: e["kind"] == "edit" and e["chat_id"] == POND
        and e["message_id"] == board["message_id"] and f"<b>{MEMBERS + 1}</b>" in str(
            e.get("raw_text")),
        timeout=30,
    )
    group_sends = [e["time"] for e in emu.events
                   if e["actor"] == "bot" and e["chat_id"] == POND
                   and e["kind"] in ("bot_message", "edit")]
    assert max_per_rolling_minute(group_sends) <= 20
    assert emu.stats.total_429 == 0
    assert all(emu.callback_queries[q].answered for q in queries)

    rows = export_draws(bot_process)
    assert len(rows) == MEMBERS + 1
    assert rows[0]["user_id"] == str(BOB) and rows[0]["redemption_id"] == str(redemption_id)
    assert sum(r["won_points"] == "50" for r in rows) == 2
    assert bot_process.invariant_ok()
