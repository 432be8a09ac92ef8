"""The scheduler heals in the real bot process against the emulator: a broadcast to 200
ponds killed half-way (SIGKILL) resumes 2 s later for every pond not yet started, and no
pond gets a second copy; one stopped half-way (SIGTERM) loses no pond; a task claimed by
the process at the moment it died is resumed within seconds of the restart."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import OPERATOR, BotProcess
from tests.e2e.test_promo_e2e import confirm, posts_in

pytestmark = pytest.mark.e2e

PONDS = 200
OUTBOX_CONCURRENCY = 8  # the bot's requests on the wire at once
TEXT = "年货节 今晚8点开抢 🧧"
MEMBER = 4001


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or m.get("caption") or "")


async def until(check: Any, within: float = 30.0, step: float = 0.05) -> float:
    """Wait until `check()` holds; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        assert loop.time() - start < within, "condition not reached in time"
        await asyncio.sleep(step)
    return loop.time() - start


def takeover_delay(logs: str) -> float:
    """Seconds from the last start of the scheduler to the first take-over after it, by
    the bot's own log."""

    def at(line: str) -> datetime:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")

    lines = logs.splitlines()
    start = max(
        i for i, line in enumerate(lines) if "apscheduler.scheduler: Scheduler started" in line
    )
    taken = next(line for line in lines[start:] if "taken over from instance" in line)
    return (at(taken) - at(lines[start])).total_seconds()


async def ponds_served_by(emu: Emulator, proc: BotProcess, ids: list[int]) -> None:
    """Groups whose creator is the shop's operator, who adds the bot to each: ponds."""
    for i, chat_id in enumerate(ids):
        emu.create_group(chat_id, f"年货鱼塘 {i}", admins=[OPERATOR], members=[MEMBER])
        emu.add_bot_to_group(chat_id, OPERATOR, as_admin=True)
    await proc.idle(within=60)
    wanted = set(ids)

    def registered() -> bool:
        rows = proc.query("SELECT chat_id FROM pond WHERE status = 'active'")
        return wanted <= {int(c) for (c,) in rows}  # type: ignore[call-overload]

    await until(registered, within=60)
    # The welcomes go out at the outbox's pace: let them finish before the broadcast.
    seen = -1
    while (now := sum(len(emu.messages_in(c)) for c in ids)) != seen:
        seen = now
        await asyncio.sleep(1.5)


def copies(emu: Emulator, ids: list[int]) -> dict[int, int]:
    return {c: len(posts_in(emu, c, TEXT)) for c in ids}


async def test_broadcast_killed_half_way_resumes_for_the_ponds_not_yet_started(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.add_user(OPERATOR, "Operator", username="operator")
    emu.add_user(MEMBER, "Member")
    ids = [-1004000000000 - i for i in range(PONDS)]
    proc = BotProcess(emu, tmp_path)
    await proc.start()
    try:
        await ponds_served_by(emu, proc, ids)
        emu.send_message(OPERATOR, OPERATOR, f"/promo at +3s {TEXT}")
        post_id = await confirm(emu, OPERATOR, OPERATOR)

        # Killed in the middle of the broadcast, with a few sends on the wire (Telegram
        # holds them and answers after the bot is gone: they never arrive).
        await until(lambda: sum(copies(emu, ids).values()) >= 40, within=60, step=0.01)
        emu.inject_fault(method="sendMessage", kind="timeout", times=5, hang=15)
        await until(lambda: sum(copies(emu, ids).values()) >= 50, within=60, step=0.01)
        proc.kill()
        assert await proc.wait() == -9
        await asyncio.sleep(0.2)  # answers on the wire when it died land in the emulator
        at_kill = copies(emu, ids)
        states_at_kill = Counter(
            s
            for (s,) in proc.query(
                "SELECT state FROM broadcast_delivery WHERE post_id = ?", post_id
            )
        )
        [(task_state,)] = proc.query(
            "SELECT state FROM scheduled_task WHERE key LIKE ?", f"promo.deliver:{post_id}:%"
        )
        assert task_state == "running"  # claimed by the process that died
        started = {c for c, n in at_kill.items() if n}
        assert 0 < len(started) < PONDS
        assert states_at_kill["sending"] >= 5 and states_at_kill["pending"] > 0

        await asyncio.sleep(2)
        loop = asyncio.get_running_loop()
        back = loop.time()
        await proc.start()
        before = sum(at_kill.values())
        await until(lambda: sum(copies(emu, ids).values()) > before, within=30)
        resumed = loop.time() - back  # process start included
        report = await emu.wait_for_message(OPERATOR, has("📣"), timeout=90)
        await proc.idle()

        final = copies(emu, ids)
        rows: dict[int, str] = {
            int(c): str(s)  # type: ignore[call-overload]
            for c, s in proc.query(
                "SELECT chat_id, state FROM broadcast_delivery WHERE post_id = ?", post_id
            )
        }
        states = Counter(rows.values())
        taken = takeover_delay(proc.logs())
        print(
            f"\nkilled after {len(started)} of {PONDS} ponds had the post (rows then: "
            f"{dict(states_at_kill)}); the delivery resumed {resumed:.1f} s after the "
            f"restart (process start included), taken over {taken:.2f} s after the scheduler "
            f"started; at the end: {dict(states)}"
        )
        # Nobody got two copies; every pond not started when it died got exactly one.
        assert max(final.values()) == 1, Counter(final.values())
        not_started = [c for c in ids if at_kill[c] == 0 and rows[c] != "unknown"]
        assert all(final[c] == 1 for c in not_started)
        # Rows say what happened: `sent` ones arrived once, the `unknown` ones were on the
        # wire when it died (the held ones among them) and are never sent again; those
        # only queued in its outbox were sent by the next start.
        assert set(states) <= {"sent", "unknown"}
        assert all(final[c] == 1 for c, s in rows.items() if s == "sent")
        assert all(at_kill[c] == final[c] for c, s in rows.items() if s == "unknown")
        assert states["unknown"] == states_at_kill["sending"]
        lost = [c for c, s in rows.items() if s == "unknown" and final[c] == 0]
        assert 5 <= len(lost) <= OUTBOX_CONCURRENCY  # the held ones, at least
        assert f"{states['sent']} " in report["text"]
        assert taken < 2 and resumed < 20  # (a loaded machine starts Python slowly)
        [(task_state,)] = proc.query(
            "SELECT state FROM scheduled_task WHERE key LIKE ?", f"promo.deliver:{post_id}:%"
        )
        assert task_state == "done"
    finally:
        await proc.stop()
        assert emu.token not in proc.logs()


async def test_broadcast_stopped_half_way_loses_no_pond(emu: Emulator, tmp_path: Path) -> None:
    """A stop (SIGTERM) in the middle of a broadcast: the run hands nothing more over,
    records what is on the wire and leaves the rest for the next start — every pond gets
    exactly one copy, none is left `unknown`."""
    emu.add_user(OPERATOR, "Operator", username="operator")
    emu.add_user(MEMBER, "Member")
    ids = [-1004200000000 - i for i in range(PONDS)]
    proc = BotProcess(emu, tmp_path)
    await proc.start()
    try:
        await ponds_served_by(emu, proc, ids)
        emu.send_message(OPERATOR, OPERATOR, f"/promo at +3s {TEXT}")
        post_id = await confirm(emu, OPERATOR, OPERATOR)
        await until(lambda: sum(copies(emu, ids).values()) >= 50, within=60, step=0.01)
        assert await proc.stop() == 0
        at_stop = copies(emu, ids)
        states_at_stop = Counter(
            s
            for (s,) in proc.query(
                "SELECT state FROM broadcast_delivery WHERE post_id = ?", post_id
            )
        )
        assert set(states_at_stop) == {"sent", "pending"}, states_at_stop
        assert states_at_stop["sent"] == sum(at_stop.values())
        [(task_state,)] = proc.query(
            "SELECT state FROM scheduled_task WHERE key LIKE ?", f"promo.deliver:{post_id}:%"
        )
        assert task_state == "pending"  # handed back for the next start

        await asyncio.sleep(2)
        await proc.start()
        await emu.wait_for_message(OPERATOR, has("📣"), timeout=90)
        await proc.idle()
        final = copies(emu, ids)
        states = Counter(
            s
            for (s,) in proc.query(
                "SELECT state FROM broadcast_delivery WHERE post_id = ?", post_id
            )
        )
        print(
            f"\nstopped after {sum(at_stop.values())} of {PONDS} ponds (rows then: "
            f"{dict(states_at_stop)}); at the end: {dict(states)}"
        )
        assert set(final.values()) == {1}, Counter(final.values())
        assert states == {"sent": PONDS}
    finally:
        await proc.stop()


async def test_a_task_claimed_when_the_process_died_is_resumed_within_seconds(
    emu: Emulator, tmp_path: Path
) -> None:
    """A round's close falls due while the bot is down, and its row is left as a process
    that died in the middle of running it leaves it: `running`, its owner's heartbeat
    fresh. The bot restarted 2 s later closes the round within seconds."""
    pond = -1004100000001
    emu.add_user(OPERATOR, "Operator", username="operator")
    emu.add_user(MEMBER, "Member")
    proc = BotProcess(emu, tmp_path)
    await proc.start()
    try:
        await ponds_served_by(emu, proc, [pond])
        emu.send_message(pond, OPERATOR, "/guessprice 199 10s 100 Lantern")
        await emu.wait_for_message(pond, has("Lantern"), timeout=20)
        loop = asyncio.get_running_loop()
        opened = loop.time()
        emu.send_message(pond, MEMBER, "/guess 198")
        await until(lambda: proc.query("SELECT COUNT(*) FROM price_guess")[0][0] == 1)
        await proc.idle()
        proc.kill()
        assert await proc.wait() == -9
        [(key,)] = proc.query("SELECT key FROM scheduled_task WHERE job = 'guess.close'")
        assert proc.query("SELECT state FROM guess_round") == [("open",)]

        await asyncio.sleep(max(0.0, opened + 11 - loop.time()))  # past the deadline
        died = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        con = sqlite3.connect(proc.db_path, timeout=30)
        with con:
            con.execute(
                "UPDATE scheduled_task SET state = 'running', owner = 'old-host:1:dead', "
                "claim = 'feedfacecafebeef', attempts = attempts + 1, claimed_at = ?, "
                "heartbeat_at = ? WHERE key = ?",
                (died, died, key),
            )
        con.close()
        await asyncio.sleep(2)
        since, back = len(emu.events), loop.time()
        await proc.start()
        reveal = await emu.wait_for_message(pond, has("¥199"), timeout=30, since=since)
        resumed = loop.time() - back
        taken = takeover_delay(proc.logs())
        print(
            f"\nthe round closed {resumed:.1f} s after the restart (process start included); "
            f"taken over {taken:.2f} s after the scheduler started"
        )
        assert taken < 2 and resumed < 20  # (a loaded machine starts Python slowly)
        assert "Member" in reveal["text"]
        await proc.idle()
        await until(
            lambda: (
                proc.query("SELECT state, owner FROM scheduled_task WHERE key = ?", key)
                == [("done", None)]
            ),
            within=10,
        )
        assert proc.query("SELECT state FROM guess_round") == [("closed",)]
        assert len([m for m in emu.messages_in(pond) if "¥199" in str(m.get("text"))]) == 1
        assert proc.balances().get(MEMBER) == 100  # paid once
        assert proc.invariant_ok()
        assert "taken over from instance old-host:1:dead" in proc.logs()
    finally:
        await proc.stop()
