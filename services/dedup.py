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

Several instances (`shared`, see `services.shared.redis_state.SharedSeen`): an update
is also claimed in Redis before it is handled and marked there once handled, so an
update handled by one instance is skipped by the others; one in hand elsewhere right
now is answered `Unconfirmed` (Telegram delivers it again, by when it is done); one the
database failed has its claim dropped, so its redelivery is handled in full wherever it
lands. Without `shared` nothing of this runs (no await is added).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import TelegramObject, Update
from sqlalchemy import text

from services.lru import LRU
from services.weather import describe, is_database_outage, is_database_unreachable
from storage.batch import BatchWriter
from storage.db import Database

if TYPE_CHECKING:
    from services.shared.redis_state import SharedSeen

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
    def __init__(
        self,
        size: int = 20_000,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        shared: SharedSeen | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.size = size
        self.max_attempts = max_attempts
        self.shared = shared
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
        if self.shared is not None:
            return await self._shared_call(self.shared, handler, event, data)
        try:
            result = await handler(event, data)
        except Exception as exc:
            if not is_database_outage(exc):
                raise  # a bug: logged by the error handler, the update counts as handled
            counts = not is_database_unreachable(exc) and await _answers(data.get("db"))
            return self._failed(update_id, exc, counts)
        self._failures.pop(update_id, None)
        return result

    async def _shared_call(
        self,
        shared: SharedSeen,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: Update,
        data: dict[str, Any],
    ) -> Any:
        """The same, with the claim in Redis around it (see the module docstring)."""
        update_id = event.update_id
        bot_id = data["bot"].id
        claim = await shared.claim(bot_id, update_id)
        if claim == "done":
            return UNHANDLED
        if claim == "busy":
            self._seen.pop(update_id, None)  # its redelivery is looked at again
            log.info("update %s is in hand in another instance: not confirmed", update_id)
            raise Unconfirmed(update_id, 0)
        try:
            result = await handler(event, data)
        except Exception as exc:
            if not is_database_outage(exc):
                await shared.done(bot_id, update_id)
                raise
            counts = not is_database_unreachable(exc) and await _answers(data.get("db"))
            try:
                self._failed(update_id, exc, counts)
            except Unconfirmed:
                await shared.release(bot_id, update_id)
                raise
            result = None  # a poison update, skipped: handled, as far as Telegram is concerned
        else:
            self._failures.pop(update_id, None)
        # Marked handled once what it queued for the writer is committed: a crash before
        # that leaves the claim to run out, and the redelivery is handled in full.
        writer = data.get("writer")
        if isinstance(writer, BatchWriter):
            await writer.flushed()
        await shared.done(bot_id, update_id)
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
