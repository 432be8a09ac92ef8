"""One busy pond holds up no other, and SIGTERM does not wait for its queue: the real
`pondbot run` against the emulator with Telegram's flood limits on (20 messages a
minute per group). A packet whose post was still queued at the stop is posted at the
next start, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, OPERATOR, OWNER, BotProcess

pytestmark = pytest.mark.e2e

POND_A, POND_B = -1002000000101, -1002000000102
CROWD = 80
FIRST = 70_000


def with_button(m: dict[str, Any]) -> bool:
    return bool(m.get("reply_markup")) and "🧧" in str(m.get("text") or "")


@pytest.fixture
async def two_ponds(emu: Emulator, tmp_path: Path) -> AsyncIterator[BotProcess]:
    emu.add_user(OWNER, "店主", username="shop_owner")
    emu.add_user(ALICE, "Alice", username="alice")
    emu.add_user(OPERATOR, "Operator", username="operator")
    for i in range(CROWD):
        emu.add_user(FIRST + i, f"会员{i}", username=f"crowd_{i}")
    crowd = [FIRST + i for i in range(CROWD)]
    # The shop's operator (OPERATOR_IDS) is an admin of both: they are ponds of the shop.
    emu.create_group(POND_A, "Busy pond", members=[*crowd, ALICE], admins=[OWNER, OPERATOR])
    emu.create_group(POND_B, "Quiet pond", members=[ALICE], admins=[OWNER, OPERATOR])
    proc = BotProcess(emu, tmp_path)
    await proc.start()
    for pond in (POND_A, POND_B):
        emu.add_bot_to_group(pond, OWNER, as_admin=True)
        await emu.wait_for_message(pond, timeout=20, since=0)  # the welcome
    try:
        yield proc
    finally:
        await proc.stop()
        assert emu.token not in proc.logs(), "the bot token reached the logs"


async def until(check: Any, within: float, what: str) -> float:
    """Seconds until `check()` holds (fails after `within`)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not check():
        assert loop.time() - started < within, f"{what} not within {within}s"
        await asyncio.sleep(0.05)
    return loop.time() - started


async def test_a_busy_pond_stalls_nobody_and_sigterm_does_not_wait_for_it(
    emu: Emulator, two_ponds: BotProcess
) -> None:
    bot = two_ponds
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(CROWD):  # within 2 s: eighty replies owed to pond A, at 20 a minute
        emu.send_message(POND_A, FIRST + i, "/points")
    emu.send_message(POND_A, OPERATOR, "/redpacket 100 5")
    assert loop.time() - started < 2.0
    emu.send_message(POND_B, ALICE, "/help")
    emu.send_message(POND_B, ALICE, "/checkin")

    # Pond B is served within seconds, while pond A's replies trickle out.
    help_after = await until(
        lambda: any("/checkin" in str(m.get("text") or "") for m in emu.messages_in(POND_B)
                    if m.get("from", {}).get("is_bot")),
        20, "pond B's /help answer",
    )
    balance = "SELECT balance FROM member WHERE user_id = ?"
    credited_after = await until(
        lambda: bot.query(balance, ALICE) not in ([], [(0,)]), 20, "pond B's check-in"
    )
    packet_after = await until(
        lambda: bot.query("SELECT COUNT(*) FROM red_packet") == [(1,)], 20, "the red packet"
    )
    await bot.idle(within=20)  # every update of the batch handled and confirmed
    assert max(help_after, credited_after) < 10.0
    sent_to_a = len([m for m in emu.messages_in(POND_A) if m.get("from", {}).get("is_bot")])
    assert sent_to_a < CROWD  # pond A's queue is still long ...

    # ... and SIGTERM does not wait for it.
    stopping = loop.time()
    assert await bot.stop() == 0
    stopped_after = loop.time() - stopping
    assert stopped_after < 10.0
    [(message_id,)] = bot.query("SELECT message_id FROM red_packet")
    posted_before_stop = [m for m in emu.messages_in(POND_A) if with_button(m)]
    assert len(posted_before_stop) == (0 if message_id is None else 1)

    # The next start posts the packet if its post never went out, once.
    await bot.start()  # it knows the last minute's sends to pond A (the outbox's journal)
    await bot.idle(within=20)
    await until(
        lambda: bot.query("SELECT message_id FROM red_packet") != [(None,)], 30, "the post"
    )
    await asyncio.sleep(1.0)  # a second post would show by now
    posts = [m for m in emu.messages_in(POND_A) if with_button(m)]
    assert len(posts) == 1
    assert bot.query("SELECT message_id FROM red_packet") == [(posts[0]["message_id"],)]
    assert bot.invariant_ok()
    assert emu.stats.flood_429 == 0  # the bot kept within Telegram's limits throughout
    print(
        f"pond B: /help answered after {help_after:.1f}s, check-in credited after "
        f"{credited_after:.1f}s; packet recorded after {packet_after:.1f}s; pond A got "
        f"{sent_to_a} of {CROWD} replies; SIGTERM exit after {stopped_after:.1f}s; "
        f"post {'restored at start' if message_id is None else 'sent before the stop'}"
    )


async def test_a_packet_whose_post_died_with_the_process_is_posted_at_the_next_start(
    emu: Emulator, two_ponds: BotProcess
) -> None:
    bot = two_ponds
    for i in range(CROWD):
        emu.send_message(POND_A, FIRST + i, "/points")
    emu.send_message(POND_A, OPERATOR, "/redpacket 100 5")
    await until(lambda: bot.query("SELECT COUNT(*) FROM red_packet") == [(1,)], 20, "the packet")
    await bot.idle(within=20)
    bot.kill()  # the post is still queued behind pond A's replies: it dies with the process
    await bot.wait()
    assert bot.query("SELECT message_id FROM red_packet") == [(None,)]
    assert not [m for m in emu.messages_in(POND_A) if with_button(m)]

    await bot.start()  # it knows the last minute's sends to pond A (the outbox's journal)
    await until(
        lambda: bot.query("SELECT message_id FROM red_packet") != [(None,)], 30, "the post"
    )
    await bot.idle(within=20)
    await asyncio.sleep(1.0)  # a second post would show by now
    posts = [m for m in emu.messages_in(POND_A) if with_button(m)]
    assert len(posts) == 1
    assert bot.query("SELECT message_id FROM red_packet") == [(posts[0]["message_id"],)]
    assert "posted again at start" in bot.logs()
    assert emu.stats.flood_429 == 0
