"""Webhook mode: the secret token is required; updates are handled before the 200."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from sqlalchemy import func, select
from sqlmodel import col

from bot.app import App, build_webhook_app, create_app
from bot.config import Settings
from bot.emulator import Emulator
from storage.models import LedgerEntry, LedgerKind, Member
from tests.e2e.conftest import ALICE, OPERATOR, OWNER, POND
from tests.rig.outage import Outage

pytestmark = pytest.mark.e2e
SECRET = "s3cret_Token-value"


def hook_settings(emu: Emulator, tmp_path: Path) -> Settings:
    return Settings(
        bot_token=emu.token,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hook.db'}",
        telegram_api_base=emu.url,
        webhook_secret=SECRET,
        operator_ids=frozenset({OPERATOR}),  # an admin of the pond: the group is a pond
    )


async def test_webhook_checks_the_secret_and_handles_updates(
    emu: Emulator, pond: int, tmp_path: Path
) -> None:
    settings = hook_settings(emu, tmp_path)
    async with create_app(settings) as app:
        web_app = build_webhook_app(app, settings.webhook_secret_value())
        runner = web.AppRunner(web_app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}{settings.webhook_path}"
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 1_700_000_000,
                "chat": {"id": POND, "type": "supergroup", "title": "E2E Pond"},
                "from": {"id": ALICE, "is_bot": False, "first_name": "Alice"},
                "text": "/points",
                "entities": [{"type": "bot_command", "offset": 0, "length": 7}],
            },
        }
        try:
            async with ClientSession() as http:
                for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
                    async with http.post(url, data=json.dumps(update), headers=headers) as r:
                        assert r.status == 401
                emu.add_bot_to_group(POND, OWNER, as_admin=True)  # so the bot may send
                good = {
                    "X-Telegram-Bot-Api-Secret-Token": SECRET,
                    "Content-Type": "application/json",
                }
                async with http.post(url, data=json.dumps(update), headers=good) as r:
                    assert r.status == 200
                # A newcomer's plain message: no handler, but their record is written
                # (behind) and committed before the 200.
                hello = {"update_id": 2, "message": {
                    **update["message"], "message_id": 2, "text": "大家好", "entities": [],
                    "from": {"id": 4242, "is_bot": False, "first_name": "New"},
                }}
                async with http.post(url, data=json.dumps(hello), headers=good) as r:
                    assert r.status == 200
                    async with app.db.transaction(readonly=True) as s:
                        assert await s.get(Member, 4242) is not None
            await app.outbox.stop()
            texts = [m.get("text", "") for m in emu.messages_in(POND)]
            assert any("0" in t for t in texts), texts
        finally:
            await runner.cleanup()


async def test_a_database_error_answers_non_200_and_the_resend_is_credited_once(
    emu: Emulator, pond: int, tmp_path: Path
) -> None:
    settings = hook_settings(emu, tmp_path)
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}

    def message(update_id: int, text: str) -> str:
        entities = [{"type": "bot_command", "offset": 0, "length": len(text)}]
        return json.dumps({"update_id": update_id, "message": {
            "message_id": update_id, "date": int(time.time()),
            "chat": {"id": POND, "type": "supergroup", "title": "E2E Pond"},
            "from": {"id": ALICE, "is_bot": False, "first_name": "Alice"},
            "text": text, **({"entities": entities} if text.startswith("/") else {}),
        }})

    async def checkins(app: App) -> int:
        async with app.db.transaction(readonly=True) as s:
            return int((await s.execute(
                select(func.count()).select_from(LedgerEntry).where(
                    col(LedgerEntry.user_id) == ALICE,
                    col(LedgerEntry.kind) == LedgerKind.checkin,
                )
            )).scalar_one())

    async with create_app(settings) as app:
        runner = web.AppRunner(build_webhook_app(app, SECRET))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}{settings.webhook_path}"
        try:
            emu.add_bot_to_group(POND, OWNER, as_admin=True)
            async with ClientSession() as http:
                async with http.post(url, data=message(1, "大家好"), headers=headers) as r:
                    assert r.status == 200
                with Outage(app.db).installed() as outage:
                    outage.fail(ALICE, times=1)
                    async with http.post(url, data=message(2, "/checkin"), headers=headers) as r:
                        assert r.status == 503  # not handled: Telegram sends it again
                    assert outage.raised == 1 and await checkins(app) == 0
                    for _ in range(2):  # Telegram's resend, then one more for good measure
                        async with http.post(
                            url, data=message(2, "/checkin"), headers=headers
                        ) as r:
                            assert r.status == 200
            assert await checkins(app) == 1
        finally:
            await runner.cleanup()
