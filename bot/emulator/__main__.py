"""``python -m bot.emulator --host 127.0.0.1 --port 0``

Prints ``EMULATOR_URL=http://HOST:PORT`` as the first line (then ``EMULATOR_TOKEN=...``)
and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from bot.emulator.server import DEFAULT_TOKEN, Emulator


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--bot-username", default="pondbot_demo_bot")
    parser.add_argument("--no-flood-limits", action="store_true")
    parser.add_argument("--privacy-mode", action="store_true")
    parser.add_argument("--send-log", metavar="FILE",
                        help="append every message the bot sends to FILE (JSON lines)")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator(
        args.token,
        bot_username=args.bot_username,
        host=args.host,
        port=args.port,
        flood_limits=not args.no_flood_limits,
        privacy_mode=args.privacy_mode,
        send_log=args.send_log,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with emulator:
        sys.stdout.write(f"EMULATOR_URL={emulator.url}\nEMULATOR_TOKEN={emulator.token}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
