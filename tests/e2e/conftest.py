"""End-to-end rig: the real `pondbot run` process against the local Bot API emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]
OWNER, ALICE, BOB, CAROL, OPERATOR = 2001, 2002, 2003, 2004, 2999
POND = -1002000000001
OTHER_POND = -1002000000002


class BotProcess:
    """`python -m bot run` with TELEGRAM_API_BASE pointing at the emulator."""

    def __init__(self, emu: Emulator, workdir: Path, operator_ids: str = str(OPERATOR)) -> None:
        self.emu = emu
        self.workdir = workdir
        self.db_path = workdir / "pond.db"
        self.log_path = workdir / "bot.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DATABASE_"))},
            "BOT_TOKEN": emu.token,
            "TELEGRAM_API_BASE": emu.url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{self.db_path}",
            "OPERATOR_IDS": operator_ids,
            "LOG_LEVEL": "INFO",
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0

    async def start(self, ready_timeout: float = 60.0) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=self.workdir, env=self.env,
            stdout=log, stderr=log,
        )
        log.close()
        self.runs += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        while not self.emu.polling:
            if self.proc.returncode is not None:
                raise RuntimeError(f"bot exited early:\n{self.logs()}")
            if loop.time() > deadline:
                raise TimeoutError(f"bot not polling after {ready_timeout}s:\n{self.logs()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout=30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise

    async def idle(self, within: float = 20.0) -> None:
        """Wait until every queued update was handled: the bot confirms a batch (by
        asking for the next offset) only after handling all of it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.emu.pending_updates:
            if loop.time() > deadline:
                raise TimeoutError(f"{self.emu.pending_updates} updates still pending")
            await asyncio.sleep(0.05)

    def logs(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def balances(self) -> dict[int, int]:
        return {int(u): int(b) for u, b in self.query(  # type: ignore[call-overload]
            "SELECT user_id, balance FROM member WHERE balance <> 0")}

    def invariant_ok(self) -> bool:
        [(entries,)] = self.query("SELECT COALESCE(SUM(delta), 0) FROM ledger_entry")
        [(balances,)] = self.query("SELECT COALESCE(SUM(balance), 0) FROM member")
        [(negative,)] = self.query("SELECT COUNT(*) FROM member WHERE balance < 0")
        mismatched = self.query(
            "SELECT m.user_id FROM member m LEFT JOIN (SELECT user_id, SUM(delta) s "
            "FROM ledger_entry GROUP BY user_id) l ON l.user_id = m.user_id "
            "WHERE COALESCE(l.s, 0) <> m.balance"
        )
        return entries == balances and negative == 0 and not mismatched


async def until(check: Any, within: float, bot: BotProcess) -> Any:
    """Poll `check` until it gives something; past `within` seconds fail with the bot's log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (found := check()):
        assert loop.time() < deadline, bot.logs()[-3000:]
        await asyncio.sleep(0.05)
    return found


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        yield emulator
        emulator.assert_no_violations()


@pytest.fixture
def pond(emu: Emulator) -> int:
    emu.add_user(OWNER, "店主", username="shop_owner")
    emu.add_user(ALICE, "Alice <b>&</b> 🐟", username="alice")
    emu.add_user(BOB, "Bob", username="bob_b")
    emu.add_user(CAROL, "Carol", username="carol")
    emu.add_user(OPERATOR, "Operator", username="operator")
    # The shop's operator (OPERATOR_IDS) is an admin: the group is a pond of the shop.
    emu.create_group(POND, "E2E Pond", members=[ALICE, BOB, CAROL], admins=[OWNER, OPERATOR])
    return POND


@pytest.fixture
async def bot_process(emu: Emulator, pond: int, tmp_path: Path) -> AsyncIterator[BotProcess]:
    proc = BotProcess(emu, tmp_path)
    await proc.start()
    emu.add_bot_to_group(pond, OWNER, as_admin=True)
    await emu.wait_for_message(pond, timeout=20, since=0)  # the welcome
    try:
        yield proc
    finally:
        await proc.stop()
        assert emu.token not in proc.logs(), "the bot token reached the logs"
        assert emu.token.split(":")[1] not in proc.logs()
