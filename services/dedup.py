"""Drop an update this process has already handled; let one the database failed come again.

Telegram redelivers updates (a retried webhook call, a batch fetched again after a
network error). Within one process an update id seen before is skipped outright, so
not even a read-only reply is repeated. After a restart this memory is empty; then the
handlers' idempotency keys keep every effect single.

An update whose handling failed because the database was not there (`bot.weather.
is_database_outage`: a failover, a dropped connection, a locked SQLite file) is not
handled: it is forgotten here, so its redelivery is handled in full, and `Unconfirmed`
tells the transport not to confirm it (long polling fetches it again, the webhook
answers non-200). An update that fails that way `max_attempts` times while the
database answers (a `SELECT 1` right after the failure succeeds, and the error was not
one of the whole database: `is_database_unreachable`) is a poison update: logged once at
ERROR with its id and skipped, so one bad update cannot wedge its pond. During an outage
nothing counts: however long a failover takes, its updates wait for it. Any other
exception is a bug in handling that update: the error handler logs it, and the update
counts as handled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import TelegramObject, Update
from sqlalchemy import text

from services.lru import LRU
from services.weather import describe, is_database_outage, is_database_unreachable
from storage.db import Database

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
PROBE_TIMEOUT = 5.0  # seconds for the `SELECT 1` that tells a poison update from an outage


class Unconfirmed(Exception):
    """The update was not handled (the database failed it): do not confirm it."""

    def __init__(self, update_id: int, attempt: int) -> None:
        super().__init__(f"update {update_id} not handled (attempt {attempt})")
        self.update_id = update_id
        self.attempt = attempt


class SeenUpdates(BaseMiddleware):
    def __init__(self, size: int = 20_000, *, max_attempts: int = MAX_ATTEMPTS) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.size = size
        self.max_attempts = max_attempts
        self._seen: LRU[int, None] = LRU(size)
        self._failures: LRU[int, int] = LRU(size)  # update id -> failed attempts

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        update_id = event.update_id
        if update_id in self._seen:
            return UNHANDLED
        self._seen.put(update_id, None)
        try:
            result = await handler(event, data)
        except Exception as exc:
            if not is_database_outage(exc):
                raise  # a bug: logged by the error handler, the update counts as handled
            counts = not is_database_unreachable(exc) and await _answers(data.get("db"))
            return self._failed(update_id, exc, counts)
        self._failures.pop(update_id, None)
        return result

    def _failed(self, update_id: int, exc: BaseException, counts: bool) -> None:
        attempt = self._failures.pop(update_id, 0) + int(counts)
        if attempt >= self.max_attempts:
            log.error(
                "update %s failed %d times on a database error (%s): skipped",
                update_id,
                attempt,
                describe(exc),
            )
            return None  # handled, as far as Telegram is concerned
        self._failures.put(update_id, attempt)
        self._seen.pop(update_id, None)  # its redelivery must be handled, not skipped
        log.warning(
            "update %s hit a database error (%s); it will be handled again (%s)",
            update_id,
            describe(exc),
            f"failure {attempt} of {self.max_attempts}" if counts else "the database is away",
        )
        raise Unconfirmed(update_id, attempt) from exc


async def _answers(db: Database | None) -> bool:
    """Whether the database answers a trivial query right now (True without one)."""
    if db is None:
        return True
    try:
        async with asyncio.timeout(PROBE_TIMEOUT), db.transaction(readonly=True) as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
