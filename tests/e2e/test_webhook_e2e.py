"""Webhook serving for several instances: the health check the load balancer reads, the
secret compared safely, `WEBHOOK_URL` checked, and — with the real processes on
PostgreSQL — `setWebhook` done by the scheduler's leader only, again by the instance
that takes over when the leader is SIGKILLed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from bot.app import App, build_webhook_app, create_app
from bot.config import ConfigError, Settings
from bot.emulator import Emulator
from storage.models import Member
from tests.e2e.conftest import ALICE, OPERATOR, OWNER, POND

pytestmark = pytest.mark.e2e
SECRET = "s3cret_Token-value"
HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
ROOT = Path(__file__).resolve().parents[2]


def hook_settings(emu: Emulator, database_url: str) -> Settings:
    return Settings(
        bot_token=emu.token,
        database_url=database_url,
        telegram_api_base=emu.url,
        webhook_secret=SECRET,
        webhook_url="http://127.0.0.1:1",
        operator_ids=frozenset({OPERATOR}),
    )


def hello(update_id: int, user_id: int) -> str:
    return json.dumps({"update_id": update_id, "message": {
        "message_id": update_id, "date": 1_700_000_000,
        "chat": {"id": POND, "type": "supergroup", "title": "E2E Pond"},
        "from": {"id": user_id, "is_bot": False, "first_name": "New"},
        "text": "大家好",
    }})


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[App, TestClient[Any, Any]]]:
    async with create_app(settings) as app:
        client = TestClient(TestServer(build_webhook_app(app, SECRET)))
        await client.start_server()
        try:
            yield app, client
        finally:
            await client.close()


@contextmanager
def database_down(app: App) -> Iterator[None]:
    """Every statement fails as on a dropped connection, from the engine's own hook."""

    def fail(*_: Any) -> None:
        raise OperationalError("SELECT", None, ConnectionResetError("server closed"))

    engine = app.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", fail)


async def test_health_says_whether_the_database_answers_and_who_leads(
    emu: Emulator, pond: int, sqlite_url: str
) -> None:
    async with serving(hook_settings(emu, sqlite_url)) as (app, client):
        r = await client.get("/healthz")
        body = await r.json()
        assert r.status == 200
        assert body == {"ok": True, "database": "up", "scheduler_leader": False,
                        "instance": app.scheduler.instance}
        assert await app.scheduler.start()
        assert (await (await client.get("/healthz")).json())["scheduler_leader"] is True
        with database_down(app):
            r = await client.get("/healthz")
            assert r.status == 503
            assert (await r.json())["database"] == "down"
        assert (await client.get("/healthz")).status == 200


async def test_a_wrong_or_strange_secret_is_refused_and_changes_nothing(
    emu: Emulator, pond: int, sqlite_url: str
) -> None:
    async with serving(hook_settings(emu, sqlite_url)) as (app, client):
        emu.add_bot_to_group(POND, OWNER, as_admin=True)
        for secret in ("", "wrong", SECRET[:-1], SECRET + "x", "sécret", SECRET.upper()):
            r = await client.post(
                "/telegram/webhook", data=hello(1, 4242),
                headers={**HEADERS, "X-Telegram-Bot-Api-Secret-Token": secret},
            )
            assert r.status == 401, secret
        async with app.db.transaction(readonly=True) as s:
            assert await s.get(Member, 4242) is None
        r = await client.post("/telegram/webhook", data=hello(1, 4242), headers=HEADERS)
        assert r.status == 200
        async with app.db.transaction(readonly=True) as s:  # committed before the 200
            assert await s.get(Member, 4242) is not None


async def test_a_database_down_answers_non_200_and_the_resend_is_handled(
    emu: Emulator, pond: int, sqlite_url: str
) -> None:
    async with serving(hook_settings(emu, sqlite_url)) as (app, client):
        emu.add_bot_to_group(POND, OWNER, as_admin=True)
        with database_down(app):
            r = await client.post("/telegram/webhook", data=hello(7, ALICE), headers=HEADERS)
            assert r.status == 503  # not handled: Telegram delivers it again
        r = await client.post("/telegram/webhook", data=hello(7, ALICE), headers=HEADERS)
        assert r.status == 200
        async with app.db.transaction(readonly=True) as s:
            assert await s.get(Member, ALICE) is not None


@pytest.mark.parametrize(
    ("url", "api_base", "ok"),
    [
        ("https://bot.example.com", None, True),
        ("https://bot.example.com/", "http://127.0.0.1:8081", True),
        ("http://bot.example.com", None, False),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8081", True),
        ("ftp://bot.example.com", "http://127.0.0.1:8081", False),
        ("bot.example.com", None, False),
        ("", None, False),
    ],
)
def test_webhook_url_must_be_https_unless_a_local_bot_api_server(
    url: str, api_base: str | None, ok: bool
) -> None:
    settings = Settings(webhook_url=url, telegram_api_base=api_base)
    if ok:
        assert settings.webhook_endpoint() == url.rstrip("/") + "/telegram/webhook"
    else:
        with pytest.raises(ConfigError):
            settings.webhook_endpoint()


# -- the real processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebhookProcess:
    """`python -m bot run --webhook` on PostgreSQL, Telegram being the emulator."""

    def __init__(self, emu: Emulator, workdir: Path, database_url: str, name: str) -> None:
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DATABASE_"))},
            "BOT_TOKEN": emu.token,
            "TELEGRAM_API_BASE": emu.url,
            "DATABASE_URL": database_url,
            "OPERATOR_IDS": str(OPERATOR),
            "WEBHOOK_URL": f"http://127.0.0.1:{self.port}",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_HOST": "127.0.0.1",
            "WEBHOOK_PORT": str(self.port),
            "WEBHOOK_MAX_CONNECTIONS": "12",
            "LOG_LEVEL": "INFO",
        }
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/telegram/webhook"

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", "--webhook", cwd=self.workdir, env=self.env,
            stdout=log, stderr=log,
        )
        log.close()
        for _ in range(1200):
            if self.proc.returncode is not None:
                raise RuntimeError(f"bot exited early:\n{self.logs()}")
            if await self.health() is not None:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"not serving after 60 s:\n{self.logs()}")

    async def health(self) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{self.port}/healthz", timeout=aiohttp.ClientTimeout(total=2)
            ) as r:
                return dict(await r.json()) if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def leads(self) -> bool:
        found = await self.health()
        return bool(found and found["scheduler_leader"])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""


def set_webhooks(emu: Emulator) -> list[dict[str, Any]]:
    return [c["params"] for c in emu.calls if c["method"] == "setWebhook" and c.get("ok")]


async def until(check: Any, within: float) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < within:
        if await check():
            return loop.time() - start
        await asyncio.sleep(0.05)
    raise TimeoutError(f"not within {within}s")


KILLS = int(os.environ.get("PONDBOT_FAILOVER_KILLS", "1"))


@pytest.mark.postgres
async def test_two_instances_one_registers_and_a_sigkilled_leader_is_replaced(
    emu: Emulator, pond: int, pg_url: str, tmp_path: Path
) -> None:
    procs = [WebhookProcess(emu, tmp_path, pg_url, name) for name in ("a", "b")]
    try:
        await asyncio.gather(*(p.start() for p in procs))

        async def one_leads() -> bool:
            return sum([await p.leads() for p in procs]) == 1

        await until(one_leads, within=20)
        await asyncio.sleep(1)  # the other keeps trying for the lock, and waits
        assert await one_leads()
        a, b = procs if await procs[0].leads() else procs[::-1]
        await until(lambda: _hooked(emu, a.url), within=10)
        hooks = set_webhooks(emu)
        assert len(hooks) == 1, hooks  # by the leader only
        assert hooks[0]["url"] == a.url
        assert str(hooks[0]["max_connections"]) == "12"
        assert "chat_member" in str(hooks[0]["allowed_updates"])
        emu.add_bot_to_group(pond, OWNER, as_admin=True)
        await emu.wait_for_message(pond, timeout=20, since=0)  # delivered by webhook
        # A drop due a few seconds after the leader dies: the new leader posts it, once.
        emu.send_message(pond, OWNER, "/redpacket at +6s 100 10")
        await emu.wait_for_message(
            pond, lambda m: str(m.get("text", "")).startswith("⏰"), timeout=20
        )
        times = []
        leader, follower = a, b
        for i in range(KILLS):
            loop = asyncio.get_running_loop()
            leader.kill()
            t = loop.time()
            await until(follower.leads, within=15)
            took = loop.time() - t
            times.append(took)
            await until(lambda f=follower: _hooked(emu, f.url), within=15)
            if i + 1 < KILLS:  # a fresh instance joins behind the new leader
                fresh = WebhookProcess(emu, tmp_path, pg_url, f"p{i}")
                await fresh.start()
                procs.append(fresh)
                await asyncio.sleep(1)
                leader, follower = follower, fresh
        print(f"\nleader failover after SIGKILL: {', '.join(f'{s:.2f}' for s in times)} s")
        assert max(times) < 10
        await emu.wait_for_message(pond, has_button, timeout=30, since=0)
        await asyncio.sleep(3)  # sweeps go by: nothing fires a second time
        assert len([m for m in emu.messages_in(pond) if has_button(m)]) == 1
        # The survivor serves: a check-in delivered to it is answered.
        emu.send_message(pond, ALICE, "/checkin")
        await emu.wait_for_message(pond, timeout=20)
    finally:
        for p in procs:
            await p.stop()


def has_button(m: dict[str, Any]) -> bool:
    return "rp:" in str(m.get("reply_markup") or "")


async def _hooked(emu: Emulator, url: str) -> bool:
    hooks = set_webhooks(emu)
    return bool(hooks) and hooks[-1]["url"] == url
