"""The real `pondbot run` process (long polling, SQLite) against the project's Bot API
emulator: what the end-to-end tests and the process benches start."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from bot.emulator import Emulator

OPERATOR = 2999
# Settings of the machine the rig runs on that must not reach the bot under test.
_NOT_INHERITED = ("BOT_", "DATABASE_", "OPERATOR_", "TELEGRAM_", "WEBHOOK_", "REDIS_")


class OwnProcess:
    """A bot process this rig started, writing to `log_path`: killed, stopped, read."""

    proc: asyncio.subprocess.Process | None
    log_path: Path

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.returncode is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout=30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise

    def logs(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""


class BotProcess(OwnProcess):
    """`python -m bot run` with TELEGRAM_API_BASE pointing at the emulator."""

    def __init__(self, emu: Emulator, workdir: Path, operator_ids: str = str(OPERATOR)) -> None:
        self.emu = emu
        self.workdir = workdir
        self.db_path = workdir / "pond.db"
        self.log_path = workdir / "bot.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)},
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

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def idle(self, within: float = 20.0) -> None:
        """Wait until every queued update was handled: the bot confirms a batch (by
        asking for the next offset) only after handling all of it."""
        await self.emu.drained(within)

    def query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def seed_ponds(self, ids: list[int]) -> None:
        """Ponds the bot has served for long (registered and approved): rows in its
        database."""
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            con.executemany(
                "INSERT INTO pond (chat_id, title, chat_type, status, timezone, language, "
                "settings, trust, created_at, updated_at) VALUES (?, ?, 'supergroup', "
                "'active', 'Asia/Shanghai', 'zh', '{}', 'approved', "
                "'2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')",
                [(cid, f"鱼塘 {i}") for i, cid in enumerate(ids)],
            )
            con.commit()
        finally:
            con.close()

    def balances(self) -> dict[int, int]:
        return {int(str(u)): int(str(b)) for u, b in self.query(
            "SELECT user_id, balance FROM member WHERE balance <> 0")}

    def invariant_ok(self) -> bool:
        """The ledger's sums match the cached balances; none is negative."""
        [(entries,)] = self.query("SELECT COALESCE(SUM(delta), 0) FROM ledger_entry")
        [(balances,)] = self.query("SELECT COALESCE(SUM(balance), 0) FROM member")
        [(negative,)] = self.query("SELECT COUNT(*) FROM member WHERE balance < 0")
        mismatched = self.query(
            "SELECT m.user_id FROM member m LEFT JOIN (SELECT user_id, SUM(delta) s "
            "FROM ledger_entry GROUP BY user_id) l ON l.user_id = m.user_id "
            "WHERE COALESCE(l.s, 0) <> m.balance"
        )
        return entries == balances and negative == 0 and not mismatched
