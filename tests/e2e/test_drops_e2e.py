"""Scheduled red-packet drops in the real bot process against the emulator, killed with
SIGKILL at the worst moments: right after the packet's post went out, and at the firing
itself (the packet made, its post not out yet). Either way the restarted bot leaves
exactly one packet for the occurrence — one `red_packet` row, one post with its 🧧
button — and the drop is done; restarts after that change nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import OWNER, POND, BotProcess

pytestmark = pytest.mark.e2e


def packet_posts(emu: Emulator, packet_id: int) -> list[dict[str, Any]]:
    """The sendMessage calls that posted this packet (its grab button)."""
    data = f"rp:{packet_id}"
    return [
        c
        for c in emu.calls
        if c["method"] == "sendMessage"
        and c.get("ok")
        and data in str(c["params"].get("reply_markup"))
    ]


def has_button(m: dict[str, Any]) -> bool:
    return "rp:" in str(m.get("reply_markup") or "")


async def until(check: Any, within: float, bot: BotProcess) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (found := check()):
        assert loop.time() < deadline, bot.logs()[-3000:]
        await asyncio.sleep(0.02)
    return found


async def schedule(emu: Emulator, bot: BotProcess, command: str) -> int:
    emu.send_message(POND, OWNER, command)
    await emu.wait_for_message(POND, lambda m: str(m.get("text", "")).startswith("⏰"), timeout=20)
    rows = bot.query("SELECT id FROM promo_post WHERE kind = 'drop' ORDER BY id DESC LIMIT 1")
    return int(str(rows[0][0]))


async def restart_and_settle(emu: Emulator, bot: BotProcess) -> None:
    """Start again, twice more a sweep period apart: nothing may fire a second time."""
    await bot.start()
    await asyncio.sleep(4)
    for _ in range(2):
        assert await bot.stop() == 0
        await bot.start()
        await asyncio.sleep(1.5)
    await bot.idle()


async def test_killed_right_after_the_post_one_packet(
    emu: Emulator, bot_process: BotProcess
) -> None:
    drop_id = await schedule(emu, bot_process, "/redpacket at +3s 100 10")
    post = await emu.wait_for_message(POND, has_button, timeout=30)
    # The post is out and its message id recorded: SIGKILL before anything else.
    await until(
        lambda: bot_process.query("SELECT 1 FROM red_packet WHERE message_id IS NOT NULL"),
        10,
        bot_process,
    )
    bot_process.kill()
    assert await bot_process.wait() == -9
    [(packet_id,)] = bot_process.query("SELECT id FROM red_packet")
    assert f"#{packet_id}" in post["text"]
    await restart_and_settle(emu, bot_process)
    assert bot_process.query("SELECT COUNT(*) FROM red_packet") == [(1,)]
    assert len(packet_posts(emu, int(packet_id))) == 1  # type: ignore[call-overload]
    assert bot_process.query("SELECT state FROM promo_post WHERE id = ?", drop_id) == [("sent",)]
    assert bot_process.query(
        "SELECT state FROM scheduled_task WHERE key = ?", f"red_packet.drop:{drop_id}"
    ) == [("done",)]
    assert bot_process.query("SELECT given FROM operator_give_day") == [(100,)]


async def test_killed_at_the_firing_one_packet(emu: Emulator, bot_process: BotProcess) -> None:
    drop_id = await schedule(emu, bot_process, "/redpacket at +3s 60 6 equal")
    # The packet's post is held back (a 429 of a minute): the bot dies with the packet
    # made and its post not out.
    emu.inject_fault("sendMessage", chat_id=POND, kind="429", retry_after=60)
    await until(lambda: bot_process.query("SELECT id FROM red_packet"), 30, bot_process)
    await until(
        lambda: any(c["method"] == "sendMessage" and not c.get("ok") for c in emu.calls),
        10,
        bot_process,
    )
    bot_process.kill()
    assert await bot_process.wait() == -9
    emu.clear_faults()
    [(packet_id,)] = bot_process.query("SELECT id FROM red_packet")
    assert packet_posts(emu, int(packet_id)) == []  # type: ignore[call-overload]
    await restart_and_settle(emu, bot_process)
    await emu.wait_for_message(POND, has_button, timeout=30)
    assert bot_process.query("SELECT COUNT(*) FROM red_packet") == [(1,)]
    assert len(packet_posts(emu, int(packet_id))) == 1  # type: ignore[call-overload]
    assert bot_process.query("SELECT message_id IS NOT NULL FROM red_packet") == [(1,)]
    assert bot_process.query("SELECT state FROM promo_post WHERE id = ?", drop_id) == [("sent",)]
    assert bot_process.query("SELECT given FROM operator_give_day") == [(60,)]


async def test_a_recurring_drop_killed_at_its_firing_fires_once_per_time(
    emu: Emulator, bot_process: BotProcess
) -> None:
    """A crontab's times come a minute apart at best: `* * * * *` stands for the daily
    `0 20 * * *` (the same code path, scheduler/drops.py), a minute for a day."""
    drop_id = await schedule(emu, bot_process, "/redpacket every * * * * * 10 2")
    emu.inject_fault("sendMessage", chat_id=POND, kind="429", retry_after=60)
    await until(lambda: bot_process.query("SELECT id FROM red_packet"), 75, bot_process)
    bot_process.kill()  # at the firing: the packet made, its post held back
    assert await bot_process.wait() == -9
    emu.clear_faults()
    await bot_process.start()
    await until(
        lambda: bot_process.query("SELECT COUNT(*) FROM red_packet WHERE message_id IS NOT NULL")
        >= [(2,)],
        90,
        bot_process,
    )
    assert await bot_process.stop() == 0
    rows = bot_process.query("SELECT id, source_key FROM red_packet ORDER BY id")
    keys = [str(k) for _i, k in rows]
    assert len(rows) == 2 and len(set(keys)) == 2
    assert all(k.startswith(f"drop:{drop_id}:") for k in keys)
    first, second = (int(k.rsplit(":", 1)[1]) for k in keys)
    assert second - first == 60 and first % 60 == 0  # one packet per time, on the minute
    for packet_id, _k in rows:
        assert len(packet_posts(emu, int(packet_id))) == 1  # type: ignore[call-overload]
