"""What the benches share: the two dispatchers under test and the error counter.

Imported by the benches after they put the project root on `sys.path`."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode
from aiogram.methods import TelegramMethod
from aiogram.types import User

from bot.app import build_dispatcher
from services.outbox import Limits, Outbox
from storage.db import Database
from storage.migrate import aupgrade
from tests.rig.fake_session import FakeSession, make_bot, owner

# The shop's owner (in OPERATOR_IDS) created every bench group: the groups are ponds.
SHOP_OWNER = User(id=7_000_001, is_bot=False, first_name="Owner")

# Pacing is the outbox's business and has its own tests; here it must not hold anyone up.
UNLIMITED = Limits(per_chat_rate=1e9, per_chat_burst=10**9, group_per_minute=10**9,
                   global_per_second=10**9)


class Failures(logging.Handler):
    """Counts errors logged while a bench runs: an update that failed (and was only
    logged by the error handler) must fail the bench, not speed it up."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @classmethod
    def installed(cls) -> Failures:
        handler = cls()
        logging.getLogger().addHandler(handler)
        return handler


def drain(session: FakeSession) -> list[TelegramMethod[Any]]:
    """What `session` recorded since the last drain, which it then forgets: a bench that
    feeds thousands of updates tallies what its verdict needs batch by batch instead of
    keeping every request (a bot keeps none of them). Spec violations are still kept."""
    requests = session.requests[:]
    session.requests.clear()
    session.request_times.clear()
    session.delivered.clear()
    return requests


@dataclass
class Rig:
    """The production dispatcher over a fresh, migrated SQLite file, and the floor (a
    bare dispatcher), each talking to its own spec-validating fake Bot API session."""

    db: Database
    dp: Dispatcher
    bot: Bot
    session: FakeSession
    outbox: Outbox
    bare: Dispatcher
    floor_bot: Bot
    floor_session: FakeSession


@asynccontextmanager
async def rig(bare: Dispatcher, *, operator_ids: frozenset[int] = frozenset()
              ) -> AsyncIterator[Rig]:
    """On a clean exit, neither session may have seen a request that breaks the spec."""
    with tempfile.TemporaryDirectory(prefix="pondbot-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await aupgrade(url)
        db = Database(url)
        html = DefaultBotProperties(parse_mode=ParseMode.HTML)
        floor_session = FakeSession()
        floor_bot = make_bot(floor_session, default=html)
        session = FakeSession()
        session.default_admins = [owner(SHOP_OWNER)]
        bot = make_bot(session, default=html)
        outbox = Outbox(bot, limits=UNLIMITED)
        dp = build_dispatcher(
            db=db, outbox=outbox, operator_ids=operator_ids | {SHOP_OWNER.id}
        )
        await outbox.start()
        try:
            yield Rig(db, dp, bot, session, outbox, bare, floor_bot, floor_session)
            floor_session.assert_no_violations()
            session.assert_no_violations()
        finally:
            await dp["boards"].aclose()
            await dp["lottery_board"].aclose()
            await dp["writer"].idle()
            await outbox.stop()
            await bot.session.close()
            await floor_bot.session.close()
            await db.dispose()
