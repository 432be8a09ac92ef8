"""`pondbot demo`: a scripted pond, played offline and printed as a chat.

It starts the local Bot API emulator and the real bot (the same code `pondbot run`
serves with: long polling, dispatcher, outbox, a fresh SQLite file) in one process,
plays a short scene, prints the conversation and exits 0 — or 1 if the bot broke a
rule of the Bot API along the way.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.emulator import Emulator

POND = -1001000000001
OWNER, ALICE, BOB, MEI = 1001, 1002, 1003, 1004

Step = Callable[[Emulator], Awaitable[None]]


def _said(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: text in str(m.get("text") or "")


async def _scene(emu: Emulator, *, pause: float) -> None:
    emu.add_user(OWNER, "老板娘", username="shop_owner", language_code="zh-hans")
    emu.add_user(ALICE, "Alice", username="alice", language_code="zh-hans")
    emu.add_user(BOB, "阿强", username="bob_qiang", language_code="zh-hans")
    emu.add_user(MEI, "小美", username="xiaomei", language_code="zh-hans")
    emu.create_group(POND, "小美的鱼塘 · 老客福利群", members=[ALICE], admins=[OWNER])

    async def say(chat_id: int, user_id: int, text: str, expect: str | None = None) -> None:
        emu.send_message(chat_id, user_id, text)
        if expect is not None:
            await emu.wait_for_message(chat_id, _said(expect), timeout=15)
        await asyncio.sleep(pause)

    emu.add_bot_to_group(POND, OWNER, as_admin=True)
    await emu.wait_for_message(POND, timeout=15, since=0)
    emu.join(POND, BOB)
    emu.join(POND, MEI)
    await say(ALICE, ALICE, "/start", "/points")
    await say(POND, ALICE, "/help", "/top")
    await say(POND, MEI, "大家好！我是新来的～")
    await say(POND, OWNER, "/give @alice 50 晒单奖励", "+50")
    await say(POND, OWNER, "/give @xiaomei 30 新人见面礼", "+30")
    await say(POND, BOB, "/give @bob_qiang 1000", "⛔")
    await say(POND, OWNER, "/take @alice 10 兑换小样", "−10")
    await say(POND, OWNER, "/give @alice 很多", "⚠️")
    await say(POND, ALICE, "/points", "40")
    await say(POND, BOB, "/top", "🏆")


async def play(*, quiet: bool = False, pause: float = 0.05) -> tuple[str, list[dict[str, Any]]]:
    from bot.app import serve_polling

    with tempfile.TemporaryDirectory(prefix="pondbot-demo-") as tmp:
        async with Emulator() as emu:
            settings = Settings(
                bot_token=emu.token,
                database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}",
                telegram_api_base=emu.url,
                operator_ids=frozenset(),
                log_level="WARNING",
            )
            stop = asyncio.Event()
            server = asyncio.create_task(serve_polling(settings, stop))
            try:
                await _scene(emu, pause=pause)
            finally:
                stop.set()
                await asyncio.wait_for(server, timeout=30)
            return emu.render(), list(emu.violations)


def run_demo(*, quiet: bool = False) -> int:
    from bot.logs import setup_logging

    setup_logging("WARNING")
    if not quiet:
        print("pondbot demo — an offline pond on the built-in Bot API emulator\n")
    transcript, violations = asyncio.run(play(quiet=quiet))
    print(transcript)
    if violations:
        print(f"\n{len(violations)} Bot API rule(s) broken:", file=sys.stderr)
        for v in violations:
            print(f"  {v['method']}: {v['description']}", file=sys.stderr)
        return 1
    if not quiet:
        print("\n(no Bot API rule broken; the demo database was thrown away)")
    return 0


logging.getLogger(__name__).addHandler(logging.NullHandler())
