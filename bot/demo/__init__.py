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
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.demo.scenes import SCENES, SHOP_OWNER, setup_pond
from bot.emulator import Emulator


async def play(*, quiet: bool = False, pause: float = 0.05) -> tuple[str, list[dict[str, Any]]]:
    from bot.app import serve_polling

    with tempfile.TemporaryDirectory(prefix="pondbot-demo-") as tmp:
        async with Emulator() as emu:
            settings = Settings(
                bot_token=emu.token,
                database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}",
                telegram_api_base=emu.url,
                operator_ids=frozenset({SHOP_OWNER}),
                log_level="WARNING",
            )
            stop = asyncio.Event()
            server = asyncio.create_task(serve_polling(settings, stop))
            try:
                cast = await setup_pond(emu, pause=pause)
                for scene in SCENES:
                    await scene(emu, cast)
            finally:
                stop.set()
                await asyncio.wait_for(server, timeout=30)
            return emu.render(), list(emu.violations)


def run_demo(*, quiet: bool = False) -> int:
    from services.logs import setup_logging

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
