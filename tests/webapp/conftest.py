"""The members' page over the production dispatcher and a real migrated SQLite file: the
page's aiohttp app (`bot.webapp`) beside a `Harness`, and initData signed the way
Telegram signs it for the bot's token."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiogram.types import Chat, User
from aiohttp.test_utils import TestClient, TestServer

from bot.webapp import member_page_app
from games.webapp_auth import sign
from storage.db import Database
from storage.models import utcnow
from tests.dispatcher.conftest import GROUP_ID, OPERATOR_ID, bot_db, running  # noqa: F401
from tests.e2e.conftest import emu, pond  # noqa: F401  (fixtures of the e2e test here)
from tests.rig.client import Harness, group_chat, person, private_chat
from tests.rig.fake_session import TEST_TOKEN
from tests.webapp.chromium import browser  # noqa: F401  (headless Chromium)

TOKEN = TEST_TOKEN  # the fake session's bot
MEMBER_ID = 700_001
WEBAPP_URL = "https://pond.example/app/"


def init_data(user_id: int = MEMBER_ID, *, token: str = TOKEN, at: datetime | None = None,
              language: str = "zh-hans", first_name: str = "小鱼") -> str:
    user = {"id": user_id, "first_name": first_name, "language_code": language}
    return sign(
        {
            "query_id": "AAH-test",
            "user": json.dumps(user, ensure_ascii=False, separators=(",", ":")),
            "auth_date": str(int((at or utcnow()).timestamp())),
        },
        token,
    )


@dataclass
class Page:
    h: Harness
    client: TestClient[Any, Any]
    db: Database
    group: Chat
    member: User

    async def get(self, path: str, *, data: str | None = None, **params: Any
                  ) -> tuple[int, dict[str, Any]]:
        headers = {"X-Telegram-Init-Data": init_data() if data is None else data}
        r = await self.client.get(f"/app/api/{path}", headers=headers, params=params)
        return r.status, await r.json()

    async def post(self, path: str, body: Any, *, data: str | None = None,
                   **params: Any) -> tuple[int, dict[str, Any]]:
        headers = {"X-Telegram-Init-Data": init_data() if data is None else data}
        r = await self.client.post(f"/app/api/{path}", headers=headers, json=body,
                                   params=params)
        return r.status, await r.json()

    async def add_item(self, args: str) -> int:
        await self.h.member(self.group, person(OPERATOR_ID, "Op")).send(f"/item add {args}")
        await self.h.settle()
        found = re.search(r"#(\d+)", self.h.replies(self.group.id)[-1])
        assert found, self.h.replies(self.group.id)[-1]
        return int(found.group(1))


@pytest.fixture
async def page(bot_db: Database) -> AsyncIterator[Page]:  # noqa: F811
    async with running(bot_db) as h:
        token = h.bot.token
        assert token == TOKEN
        h.dp["webapp_url"] = WEBAPP_URL
        app = member_page_app(db=bot_db, outbox=h.outbox, token=token)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        try:
            group = group_chat(GROUP_ID, "测试鱼塘")
            member = person(MEMBER_ID, "小鱼", "fish")
            yield Page(h, client, bot_db, group, member)
        finally:
            await client.close()


async def link_dm(p: Page) -> None:
    await p.h.member(private_chat(p.member), p.member).send("/start")
    await p.h.settle()


def days_ago(n: int) -> datetime:
    return utcnow() - timedelta(days=n)
