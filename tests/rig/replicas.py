"""Several real `pondbot run --webhook` processes behind the round-robin balancer, on
one PostgreSQL database and one Redis, against the emulator in webhook mode.

    async with Cluster(emu, workdir, database_url, redis_url, size=2) as cluster:
        ...  # users act through `emu`; `cluster.query(...)` reads the database

`start()` returns once every instance listens and one of them registered the webhook
(the emulator then posts every update to the balancer). `leader()` asks each
instance's health endpoint which one runs the scheduler. Used by
tests/e2e/test_replicas_e2e.py and bench/replicas.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from bot.emulator import Emulator
from bot.emulator.server import Member
from tests.rig.balancer import Balancer
from tests.rig.bot_process import OwnProcess

SECRET = "replica-Secret_token"
WEBHOOK_PATH = "/telegram/webhook"
HEALTH_PATH = "/healthz"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plain_dsn(database_url: str) -> str:
    """An asyncpg DSN for a SQLAlchemy `postgresql+asyncpg://` URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(
        hide_password=False
    )


class Instance(OwnProcess):
    """One `python -m bot run --webhook` process on its own port."""

    def __init__(self, name: str, workdir: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.env = {**env, "WEBHOOK_HOST": "127.0.0.1", "WEBHOOK_PORT": str(self.port)}
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", "--webhook", cwd=self.workdir, env=self.env,
            stdout=log, stderr=log,
        )
        log.close()
        self.starts += 1

    async def health(self, http: aiohttp.ClientSession) -> dict[str, Any] | None:
        """The health endpoint's answer ({} when it has none); None: not listening."""
        try:
            async with http.get(self.url + HEALTH_PATH) as resp:
                if resp.content_type == "application/json":
                    body: dict[str, Any] = await resp.json()
                    return body
                return {}
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def wait_listening(self, http: aiohttp.ClientSession, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while await self.health(http) is None:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.logs()[-3000:]}")
            if loop.time() > deadline:
                raise TimeoutError(f"{self.name} not listening after {within}s:\n"
                                   f"{self.logs()[-3000:]}")
            await asyncio.sleep(0.1)


class Cluster:
    """The balancer and `size` instances; see the module's docstring."""

    def __init__(
        self,
        emu: Emulator,
        workdir: Path,
        database_url: str,
        redis_url: str | None,
        *,
        size: int = 2,
        operator_ids: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.emu = emu
        self.workdir = workdir
        self.database_url = database_url
        base = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("BOT_", "DATABASE_", "REDIS_", "WEBHOOK_", "OPERATOR_"))},
            "BOT_TOKEN": emu.token,
            "TELEGRAM_API_BASE": emu.url,
            "DATABASE_URL": database_url,
            "OPERATOR_IDS": operator_ids,
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_PATH": WEBHOOK_PATH,
            "LOG_LEVEL": "INFO",
            "AUTO_MIGRATE": "false",  # the database is migrated once, before
            **(env or {}),
        }
        if redis_url:
            base["REDIS_URL"] = redis_url
        self.instances = [Instance(f"instance{i + 1}", workdir, base) for i in range(size)]
        self.balancer = Balancer([i.url for i in self.instances])
        for instance in self.instances:
            instance.env["WEBHOOK_URL"] = "http://127.0.0.1:0"  # set in start()
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self._http

    async def start(self, within: float = 60.0) -> None:
        await self.balancer.start()
        for instance in self.instances:
            instance.env["WEBHOOK_URL"] = self.balancer.url
        for instance in self.instances:
            await instance.start()
        for instance in self.instances:
            await instance.wait_listening(self.http, within)
        await self.wait_hooked(within)

    async def wait_hooked(self, within: float) -> None:
        """Until the emulator posts updates to the balancer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.emu.webhook_active:
            if loop.time() > deadline:
                raise TimeoutError("no instance registered the webhook:\n"
                                   + self.instances[0].logs()[-3000:])
            await asyncio.sleep(0.05)

    async def leaders(self) -> list[Instance]:
        """The live instances that say they run the scheduler."""
        found = []
        for instance in self.instances:
            if not instance.alive:
                continue
            health = await instance.health(self.http)
            if health and health.get("scheduler_leader"):
                found.append(instance)
        return found

    async def idle(self, within: float = 60.0) -> None:
        """Until every update was answered 200 (handled and committed)."""
        await self.emu.drained(within)

    async def stop(self) -> list[int]:
        codes = await asyncio.gather(*(i.stop() for i in self.instances),
                                     return_exceptions=True)
        await self.balancer.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None
        return [c if isinstance(c, int) else -1 for c in codes]

    async def __aenter__(self) -> Cluster:
        try:
            await self.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {i.name} ---\n{i.logs()[-4000:]}" for i in self.instances)

    async def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(plain_dsn(self.database_url), timeout=10)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        conn = await asyncpg.connect(plain_dsn(self.database_url), timeout=10)
        try:
            await conn.executemany(sql, rows)
        finally:
            await conn.close()

    async def invariant_ok(self) -> bool:
        [(entries,)] = await self.query("SELECT COALESCE(SUM(delta), 0) FROM ledger_entry")
        [(balances,)] = await self.query("SELECT COALESCE(SUM(balance), 0) FROM member")
        [(negative,)] = await self.query("SELECT COUNT(*) FROM member WHERE balance < 0")
        mismatched = await self.query(
            "SELECT m.user_id FROM member m LEFT JOIN (SELECT user_id, SUM(delta) s "
            "FROM ledger_entry GROUP BY user_id) l ON l.user_id = m.user_id "
            "WHERE COALESCE(l.s, 0) <> m.balance"
        )
        return bool(entries == balances and negative == 0 and not mismatched)


def posts_in(emu: Emulator, chat_id: int, text: str) -> list[dict[str, Any]]:
    """The bot's messages with `text` that are posts (previews are replies)."""
    return [
        m for m in emu.messages_in(chat_id)
        if m.get("from", {}).get("id") == emu.bot_id and m.get("text") == text
        and "reply_to_message" not in m
    ]


async def seed_ponds(
    cluster: Cluster, emu: Emulator, ids: list[int], operator: int, members: int = 0
) -> None:
    """Ponds the bot already serves (rows in its database, the bot a member there),
    each with `members` members of its own (user ids `chat_id * -1 % 10**6 * 10 + k`)."""
    emu.add_user(operator, "Operator", username="operator")
    for i, chat_id in enumerate(ids):
        people = [member_of(chat_id, k) for k in range(members)]
        for uid in people:
            emu.add_user(uid, f"会员{uid}")
        emu.create_group(chat_id, f"鱼塘 {i}", members=people)
        emu.chats[chat_id].members[emu.bot_id] = Member("member")
    await cluster.execute_many(
        "INSERT INTO pond (chat_id, title, chat_type, status, timezone, language, settings, "
        "trust, created_at, updated_at) VALUES ($1, $2, 'supergroup', 'active', "
        "'Asia/Shanghai', 'zh', '{}', 'approved', now(), now())",
        [(cid, f"鱼塘 {i}") for i, cid in enumerate(ids)],
    )


def member_of(chat_id: int, k: int) -> int:
    return (-chat_id) % 10**6 * 10 + k


async def confirm_promo(emu: Emulator, operator: int, text: str) -> int:
    """The operator schedules `text` in a few seconds in the private chat and confirms."""
    emu.send_message(operator, operator, text)
    control = await emu.wait_for_message(
        operator, lambda m: "pp:ok:" in str(m.get("reply_markup") or ""), timeout=30
    )
    data = control["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    answer = await emu.wait_callback_answer(
        emu.click(operator, operator, control["message_id"], data), timeout=30
    )
    assert answer is not None and "✅" in str(answer.get("text")), answer
    return int(data.rsplit(":", 1)[1])


async def wait_leader(cluster: Cluster, within: float) -> Instance:
    """The one instance that runs the scheduler, once there is one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (leaders := await cluster.leaders()):
        assert loop.time() < deadline, "no leader:\n" + cluster.logs()
        await asyncio.sleep(0.05)
    assert len(leaders) == 1, [i.name for i in leaders]
    return leaders[0]
