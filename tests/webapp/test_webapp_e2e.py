"""The members' page in the real `pondbot run` process (long polling) against the
emulator: with `WEBAPP_URL` set the bot serves the page on `WEBAPP_HOST`:`WEBAPP_PORT`;
`/me` in the pond puts the page's button in the member's DM; the page's API, called with
initData signed for the bot's token, tells the balance `pondbot export members` writes,
and refuses a forged one with 401. The token never reaches the logs."""

from __future__ import annotations

import asyncio
import csv
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.app import build_webhook_app, create_app
from bot.config import Settings
from bot.emulator import Emulator
from games.webapp_auth import sign
from storage.models import utcnow
from tests.e2e.conftest import BOB, OPERATOR, OWNER, POND, ROOT, BotProcess

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or "")


def signed(token: str, user_id: int) -> str:
    user = json.dumps({"id": user_id, "first_name": "Bob", "language_code": "en"})
    return sign({"user": user, "auth_date": str(int(utcnow().timestamp()))}, token)


@pytest.fixture
async def served(emu: Emulator, pond: int, tmp_path: Path
                 ) -> AsyncIterator[tuple[BotProcess, str]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = BotProcess(emu, tmp_path)
    proc.env.update(WEBAPP_URL=f"{base}/app/", WEBAPP_PORT=str(port))
    await proc.start()
    emu.add_bot_to_group(pond, OWNER, as_admin=True)
    await emu.wait_for_message(pond, timeout=20, since=0)  # the welcome
    try:
        yield proc, base
    finally:
        await proc.stop()
        assert emu.token not in proc.logs(), "the bot token reached the logs"
        assert emu.token.split(":")[1] not in proc.logs()


async def test_me_and_the_page_in_the_real_process(
    emu: Emulator, served: tuple[BotProcess, str], tmp_path: Path
) -> None:
    proc, base = served
    emu.send_message(BOB, BOB, "/start")
    await emu.wait_for_message(BOB, timeout=20)
    emu.send_message(POND, BOB, "签到")
    emu.send_message(POND, OPERATOR, "/give @bob_b 100")
    await emu.wait_for_message(POND, has("+100"), timeout=20)

    emu.send_message(POND, BOB, "/me")
    await emu.wait_for_message(POND, timeout=20)
    dm = await emu.wait_for_message(BOB, lambda m: "reply_markup" in m, timeout=20)
    [[button]] = dm["reply_markup"]["inline_keyboard"]
    assert button["web_app"]["url"] == f"{base}/app/?chat={POND}"
    await proc.idle()

    out = tmp_path / "members.csv"
    r = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "export", "members", "--out", str(out)],
        env=proc.env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert r.returncode == 0, r.stderr
    with out.open(encoding="utf-8-sig") as f:
        exported = {int(row["user_id"]): int(row["balance"]) for row in csv.DictReader(f)}

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/app/") as page:
            assert page.status == 200 and "app.js" in await page.text()
        headers = {"X-Telegram-Init-Data": signed(emu.token, BOB)}
        async with http.get(f"{base}/app/api/me", headers=headers) as me:
            body = await me.json()
        assert me.status == 200, body
        assert body["balance"] == exported[BOB] > 100 and body["chat_id"] == POND
        forged = {"X-Telegram-Init-Data": signed("1:" + "x" * 35, BOB)}
        async with http.get(f"{base}/app/api/me", headers=forged) as refused:
            assert refused.status == 401
            assert (await refused.json())["reason"] == "forged"


async def test_webhook_mode_serves_the_page_on_the_webhook_server(
    emu: Emulator, pond: int, tmp_path: Path
) -> None:
    settings = Settings(
        bot_token=emu.token,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hook.db'}",
        telegram_api_base=emu.url,
        webhook_secret="s3cret_Token-value",
        webapp_url="http://127.0.0.1/app/",
        operator_ids=frozenset({OPERATOR}),
    )
    async with create_app(settings) as app:
        assert app.dp["webapp_url"] == "http://127.0.0.1/app/"
        runner = web.AppRunner(build_webhook_app(app, settings.webhook_secret_value()))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/app/") as page:
                    assert page.status == 200
                headers = {"X-Telegram-Init-Data": signed(emu.token, BOB)}
                async with http.get(f"{base}/app/api/me", headers=headers) as me:
                    assert me.status == 200
                    assert (await me.json())["balance"] == 0
                async with http.get(f"{base}/app/api/me") as missing:
                    assert missing.status == 401
        finally:
            await runner.cleanup()
