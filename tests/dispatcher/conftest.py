"""A real Dispatcher (built by the production factory) over a real SQLite file, with a
fake Bot API session that records every request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode

from bot.app import build_dispatcher, chat_refused
from scheduler.core import Scheduler
from services.outbox import Limits, Outbox
from services.shared.redis_state import SharedState
from storage.db import Database
from storage.migrate import aupgrade
from tests.rig.client import Harness, group_chat, person
from tests.rig.fake_session import FakeSession, admin, make_bot, owner

OPERATOR_ID = 900_001  # listed in OPERATOR_IDS
ADMIN_ID = 900_002  # an administrator of the test group
OWNER_ID = 900_003
GROUP_ID = -1001234567890

# Dispatcher tests check behaviour, not pacing: the outbox's pacing has its own tests.
FAST = Limits(
    per_chat_rate=1e6, per_chat_burst=10**6, group_per_minute=10**6, global_per_second=10**6
)


@pytest.fixture
async def bot_db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'pond.db'}"
    await aupgrade(url)
    db = Database(url)
    yield db
    await db.dispose()


def serve_groups(session: FakeSession) -> None:
    """The shop's world in these tests: the global operator administers the test group
    (and, unless a test says otherwise in `session.admins`, every other group), so the
    groups are ponds of the shop (SPEC F1)."""
    session.admins[GROUP_ID] = [
        owner(person(OWNER_ID, "Owner")),
        admin(person(ADMIN_ID, "Admin", "shop_admin")),
        admin(person(OPERATOR_ID, "Op")),
    ]
    session.default_admins = [admin(person(OPERATOR_ID, "Op"))]


@asynccontextmanager
async def running(
    db: Database,
    scheduler: Scheduler | None = None,
    session: FakeSession | None = None,
    *,
    shared: SharedState | None = None,
) -> AsyncIterator[Harness]:
    """The production dispatcher over `db`, its outbox started, the test group's admins
    known to the fake session; on the way out, no request may have broken the spec.
    `shared`: one of several instances sharing state in Redis."""
    session = session or FakeSession()
    bot = make_bot(session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))
    serve_groups(session)
    outbox = Outbox(
        bot, limits=FAST, on_forbidden=chat_refused(db),
        budget=shared.budget if shared is not None else None,
    )
    dp = build_dispatcher(
        db=db, outbox=outbox, operator_ids=frozenset({OPERATOR_ID}), scheduler=scheduler,
        shared=shared,
    )
    await outbox.start()
    h = Harness(dp, bot, session, outbox)
    h.db = db  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        # The dispatcher's background work ends before the database goes: a board
        # refresh or a write still in a transaction would leave a connection behind.
        await dp["boards"].aclose()
        await dp["lottery_board"].aclose()
        await dp["writer"].idle()
        await outbox.stop()
        await bot.session.close()
    session.assert_no_violations()


@pytest.fixture
async def harness(bot_db: Database) -> AsyncIterator[Harness]:
    async with running(bot_db) as h:
        yield h


@pytest.fixture
def group():  # type: ignore[no-untyped-def]
    return group_chat(GROUP_ID, "测试鱼塘 <b>&</b>")
