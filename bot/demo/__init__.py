"""`pondbot demo`: a scripted pond, played offline and printed as a chat.

It starts the local Bot API emulator and the real bot (the same code `pondbot run`
serves with: long polling, dispatcher, outbox, scheduler, a fresh SQLite file) in one
process, plays the scenes, prints the conversation and exits 0 — or 1 if the bot broke
a rule of the Bot API along the way.

The pond plays on virtual time (`bot.demo.vtime`): the waits for a vote's or a red
packet's close, a post due in five seconds and the pacing within Telegram's limits
pass at once, in the order they would in real time. The bot and the emulator read the
one clock of the event loop — the outbox paces on it, the emulator checks its flood
limits on it, the scheduler's alarms ring on it, the games' deadlines and the messages'
dates are its wall time — so the limits hold in virtual time as they would in real.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.demo.scenes import SCENES, SHOP_OWNER, setup_pond
from bot.demo.vtime import LoopAlarms, run_virtual
from bot.emulator import Emulator


@dataclass
class Played:
    """What a played demo leaves: the chat, the Bot API rules broken, how fast the bot
    sent (`Emulator.send_rates`) and the 429s the emulator's flood limits gave."""

    transcript: str
    violations: list[dict[str, Any]]
    rates: dict[str, Any] = field(default_factory=dict)
    flood_429: int = 0
    elapsed: float = 0.0  # seconds on the loop's clock


async def play(*, pause: float = 0.05) -> Played:
    from bot.app import Clocks, serve_polling

    loop = asyncio.get_running_loop()
    start = loop.time()
    epoch = datetime.now(UTC).timestamp()

    def wall() -> float:  # the wall clock, moving with the loop's (virtual) time
        return epoch + loop.time() - start

    def utcnow() -> datetime:
        return datetime.fromtimestamp(wall(), UTC)

    clocks = Clocks(wall=utcnow, epoch=wall, alarms=lambda: LoopAlarms(utcnow))
    with tempfile.TemporaryDirectory(prefix="pondbot-demo-") as tmp:
        async with Emulator(clock=loop.time, wall_clock=wall) as emu:
            settings = Settings(
                bot_token=emu.token,
                database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}",
                telegram_api_base=emu.url,
                operator_ids=frozenset({SHOP_OWNER}),
                log_level="WARNING",
            )
            stop = asyncio.Event()
            server = asyncio.create_task(serve_polling(settings, stop, clocks))
            try:
                cast = await setup_pond(emu, pause=pause)
                for scene in SCENES:
                    await scene(emu, cast)
            finally:
                stop.set()
                await asyncio.wait_for(server, timeout=30)
            return Played(
                emu.render(),
                list(emu.violations),
                emu.send_rates(),
                emu.stats.flood_429,
                loop.time() - start,
            )


def run_demo(*, quiet: bool = False) -> int:
    from services.logs import setup_logging

    setup_logging("WARNING")
    if not quiet:
        print("pondbot demo — an offline pond on the built-in Bot API emulator\n")
    played, _ = run_virtual(play)
    print(played.transcript)
    if played.violations:
        print(f"\n{len(played.violations)} Bot API rule(s) broken:", file=sys.stderr)
        for v in played.violations:
            print(f"  {v['method']}: {v['description']}", file=sys.stderr)
        return 1
    if not quiet:
        print(
            f"\n(no Bot API rule broken; {played.elapsed:.0f} s of the pond's time played"
            " on a virtual clock; the demo database was thrown away)"
        )
    return 0


logging.getLogger(__name__).addHandler(logging.NullHandler())
