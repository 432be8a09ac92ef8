"""Resident memory of an idle `pondbot run` against a bare aiogram polling bot.

    .venv/bin/python bench/memory.py [--idle 3] [--rounds 2]

Both run as processes of their own, long polling the project's Bot API emulator (started
here): the real bot (`python -m bot run` on a SQLite file `pondbot migrate` brought up to
date first — a bot restarted, as every deployed bot is after its first day) in a pond it
was just added to and has greeted, and the floor — aiogram's own
`Dispatcher.start_polling` with one handler that answers. Each is sampled after `idle`
seconds of polling with nothing to do (the largest of a few samples of VmRSS), `rounds`
times, keeping the smallest. Prints both and their ratio (pondbot / bare: 1.0 is the
floor, the aim is at most 1.2), and what the idle bot has imported that the bare bot has
not, largest first (`python -X importtime` of the same start).

A third process shows what the stack itself costs: the bare bot that also loads what
pondbot is built on — SQLModel and SQLAlchemy with aiosqlite, the project's tables
(`storage.models`, mapped), APScheduler, pydantic-settings and aiogram's i18n — and reads
one row of the same migrated file. Nothing of pondbot's own code runs in it; what pondbot
holds above it is its own code and what it keeps while running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.emulator import Emulator  # noqa: E402

OPERATOR, POND = 2999, -1002000000001

BARE = """
import asyncio, os
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message

router = Router()

@router.message()
async def answer(message: Message) -> None:
    await message.answer("ok")

async def main() -> None:
    session = AiohttpSession(api=TelegramAPIServer.from_base(os.environ["TELEGRAM_API_BASE"]))
    bot = Bot(os.environ["BOT_TOKEN"], session=session)
    dp = Dispatcher()
    dp.include_router(router)
    await dp.start_polling(bot, handle_signals=True)

asyncio.run(main())
"""

# The bare bot on the stack pondbot is built on, with its tables and nothing else of it.
STACK = BARE.replace("asyncio.run(main())", """
import aiosqlite
import apscheduler.schedulers.asyncio
import apscheduler.triggers.cron
import pydantic_settings
import aiogram.utils.i18n
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import configure_mappers
import storage.models

configure_mappers()

async def stack_main() -> None:
    engine = create_async_engine(os.environ["DATABASE_URL"])
    async with engine.connect() as conn:
        (await conn.execute(select(storage.models.Pond).limit(1))).all()
    await main()

asyncio.run(stack_main())
""")


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, status
    return int(match.group(1)) / 1024


async def idle_rss(args: list[str], env: dict[str, str], idle: float, *, pond: bool,
                   importtime: Path | None = None, migrate: bool | None = None) -> float:
    """Start `args` against a fresh emulator; its RSS once idle."""
    async with Emulator() as emu:
        emu.add_user(OPERATOR, "Operator", username="operator")
        emu.create_group(POND, "Memory pond", members=[], admins=[OPERATOR])
        env = {**env, "BOT_TOKEN": emu.token, "TELEGRAM_API_BASE": emu.url}
        flags = ["-X", "importtime"] if importtime is not None else []
        with tempfile.TemporaryDirectory(prefix="pondbot-bench-") as tmp:
            env.setdefault("DATABASE_URL", f"sqlite+aiosqlite:///{Path(tmp) / 'pond.db'}")
            if pond if migrate is None else migrate:
                migration = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bot", "migrate", cwd=tmp, env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                )
                assert await migration.wait() == 0
            err = importtime.open("wb") if importtime is not None else asyncio.subprocess.DEVNULL
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *flags, *args, cwd=tmp, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=err,
            )
            try:
                deadline = time.monotonic() + 120
                while not emu.polling:
                    if proc.returncode is not None or time.monotonic() > deadline:
                        raise SystemExit(f"{args} did not start polling")
                    await asyncio.sleep(0.05)
                if pond:  # the bot joins its pond and greets it, as on a first day
                    emu.add_bot_to_group(POND, OPERATOR, as_admin=True)
                    await emu.wait_for_message(POND, timeout=30, since=0)
                await asyncio.sleep(idle)
                samples = []
                for _ in range(5):
                    samples.append(rss_mb(proc.pid))
                    await asyncio.sleep(0.1)
                return max(samples)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(proc.wait(), 30)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
                if importtime is not None and not isinstance(err, int):
                    err.close()


def imported(path: Path) -> dict[str, int]:
    """Every module imported, with its own import time (µs)."""
    out: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", line)
        if m:
            out[m.group(2)] = int(m.group(1))
    return out


async def run(idle: float, rounds: int, show_imports: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BOT_", "DATABASE_", "TELEGRAM_", "REDIS_", "WEBHOOK_"))}
    env.update({"OPERATOR_IDS": str(OPERATOR), "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)})
    real, bare, stack = [], [], []
    for _ in range(rounds):
        real.append(await idle_rss(["-m", "bot", "run"], env, idle, pond=True))
        bare.append(await idle_rss(["-c", BARE], env, idle, pond=False))
        stack.append(await idle_rss(["-c", STACK], env, idle, pond=False, migrate=True))
    extra: list[tuple[str, int]] = []
    if show_imports:
        with tempfile.TemporaryDirectory(prefix="pondbot-bench-") as tmp:
            real_log, bare_log = Path(tmp) / "real.txt", Path(tmp) / "bare.txt"
            await idle_rss(["-m", "bot", "run"], env, idle, pond=True, importtime=real_log)
            await idle_rss(["-c", BARE], env, idle, pond=False, importtime=bare_log)
            theirs = imported(bare_log)
            packages: dict[str, int] = {}
            for name, micros in imported(real_log).items():
                if name not in theirs:
                    top = name.split(".")[0]
                    packages[top] = packages.get(top, 0) + micros
            extra = sorted(packages.items(), key=lambda kv: -kv[1])
    return {"real": min(real), "bare": min(bare), "stack": min(stack), "extra": extra}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=3.0, help="seconds idle before (3)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--imports", action="store_true",
                        help="list what the bot imports that the bare bot does not")
    args = parser.parse_args(argv)
    r = asyncio.run(run(args.idle, args.rounds, args.imports))
    real, bare = float(r["real"]), float(r["bare"])  # type: ignore[arg-type]
    stack = float(r["stack"])  # type: ignore[arg-type]
    print(f"idle RSS after {args.idle:g} s of long polling, smallest of {args.rounds}")
    print(f"  pondbot run (one pond, greeted): {real:6.1f} MB")
    print(f"  bare aiogram polling bot:        {bare:6.1f} MB")
    print(f"  the same on pondbot's stack:     {stack:6.1f} MB  ({stack / bare:.2f} of bare;"
          f" pondbot's own code and state: {real - stack:.1f} MB)")
    print(f"  ratio: {real / bare:.2f}   (pondbot / bare, target <= 1.2)")
    extra: list[tuple[str, int]] = r["extra"]  # type: ignore[assignment]
    if extra:
        print("  imported by pondbot only (top-level package: import ms):")
        for name, micros in extra[:15]:
            print(f"    {name:24} {micros / 1000:7.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
