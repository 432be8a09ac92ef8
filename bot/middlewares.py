"""Middlewares: who is talking, in which pond, in which language.

`TrackingMiddleware` records members on their first message or interaction and keeps
display names fresh — writing only when something changed, so a busy pond does not turn
every message into a database write. It also puts the pond's settings (`pond`) and the
speaking person (`person`, None for bots, anonymous admins and channels) into the
handler data.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram import BaseMiddleware, Dispatcher
from aiogram.dispatcher.flags import get_flag
from aiogram.types import CallbackQuery, Chat, Message, TelegramObject, User
from aiogram.utils.i18n import I18n, I18nMiddleware

from bot.operators import SERVICE_USER_IDS
from storage import repo
from storage.batch import SEEN, BatchWriter, SeenRequest
from storage.db import Database
from storage.models import PondStatus

log = logging.getLogger(__name__)

# Handler flag: the handler writes through the `BatchWriter` only, so it needs no
# committed record of a first-seen member before it runs (see TrackingMiddleware).
BATCHED = "batched"
MEMBER_WRITE = "member_write"  # data key: the pending write of a first-seen member


@dataclass(frozen=True, slots=True)
class PondInfo:
    chat_id: int
    language: str
    timezone: str
    status: str


def person_of(user: User | None, sender_chat: Chat | None) -> repo.UserInfo | None:
    """The human behind an event, or None (bots, anonymous admins, channels, Telegram)."""
    if user is None or sender_chat is not None or user.is_bot or user.id in SERVICE_USER_IDS:
        return None
    return repo.UserInfo(
        id=user.id,
        first_name=user.first_name or "",
        last_name=user.last_name or "",
        username=user.username,
        language_code=user.language_code,
        is_bot=False,
    )


class _LRU(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class TrackingMiddleware(BaseMiddleware):
    def __init__(
        self,
        db: Database,
        *,
        default_timezone: str,
        default_language: str,
        cache_size: int = 50_000,
        writer: BatchWriter | None = None,
    ) -> None:
        self.db = db
        self.writer = writer or BatchWriter(db)
        self.default_timezone = default_timezone
        self.default_language = default_language
        self._names: _LRU = _LRU(cache_size)  # user_id -> UserInfo last written
        self._seen: _LRU = _LRU(cache_size)  # (chat_id, user_id) -> True
        self._ponds: _LRU = _LRU(10_000)  # chat_id -> PondInfo
        self._registering: dict[int, asyncio.Future[PondInfo]] = {}

    def forget_pond(self, chat_id: int) -> None:
        self._ponds.pop(chat_id, None)

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        sender_chat = event.sender_chat if isinstance(event, Message) else None
        if isinstance(event, CallbackQuery) and event.message is not None:
            chat = event.message.chat
        person = person_of(user, sender_chat)
        group = chat is not None and chat.type in ("group", "supergroup")

        new_name = person is not None and self._names.get(person.id) != person
        new_seat = person is not None and group and (chat.id, person.id) not in self._seen  # type: ignore[union-attr]
        pond = self._ponds.get(chat.id) if group else None  # type: ignore[union-attr]
        if group and pond is None:
            assert chat is not None
            pond = await self._register(chat)
        elif pond is not None:
            self._ponds.move_to_end(pond.chat_id)  # recently used: kept longest
        data["pond"] = pond
        data["person"] = person
        if person is None or not (new_name or new_seat):
            return await handler(event, data)
        # Many people seen at once share one transaction (see storage.batch). The
        # handler runs once the record is written (`MemberWritten`), or, if its own
        # writes go through the same writer (flag BATCHED), right away: they are queued
        # after this one, so they land in the same transaction or a later one. Nothing
        # else waits for the record: the update is acknowledged to Telegram only after
        # `settle_writes` (a polled batch, a webhook call), so a crash before the commit
        # means redelivery, not a lost member.
        seat = (chat.id, person.id) if new_seat and chat is not None else None
        written = self.writer.enqueue(
            SEEN,
            SeenRequest(person.id, person if new_name else None, seat[0] if seat else None),
            then=lambda error: self._recorded(error, person, seat),
        )
        data[MEMBER_WRITE] = written
        return await handler(event, data)

    async def _register(self, chat: Chat) -> PondInfo:
        """Record a pond seen for the first time (or forgotten): once, however many of
        its updates arrive together."""
        pending = self._registering.get(chat.id)
        if pending is None:
            pending = self._registering[chat.id] = asyncio.ensure_future(self._upsert_pond(chat))
            pending.add_done_callback(lambda _: self._registering.pop(chat.id, None))
        return await asyncio.shield(pending)

    async def _upsert_pond(self, chat: Chat) -> PondInfo:
        async with self.db.transaction() as session:
            await repo.upsert_pond(
                session,
                chat.id,
                title=chat.title or "",
                chat_type=chat.type,
                default_timezone=self.default_timezone,
                default_language=self.default_language,
            )
            row = await repo.get_pond(session, chat.id)
            assert row is not None
        pond = PondInfo(row.chat_id, row.language, row.timezone, row.status)
        self._ponds.remember(pond.chat_id, pond)
        return pond

    def _recorded(
        self, error: BaseException | None, person: repo.UserInfo, seat: tuple[int, int] | None
    ) -> None:
        """Called as the record commits (before `settle_writes` returns), so an update
        handled after the settle never writes the same record again."""
        if error is not None:
            # Not remembered: the next update of this person tries again.
            log.warning("recording member %s failed: %r", person.id, error)
            return
        self._names.remember(person.id, person)
        if seat is not None:
            self._seen.remember(seat, True)


async def settle_writes(dp: Dispatcher) -> None:
    """Wait until what the updates handled so far queued in the writer is committed:
    the transports call this before they acknowledge updates to Telegram."""
    writer: BatchWriter | None = dp.workflow_data.get("writer")
    if writer is not None:
        await writer.flushed()


class MemberWritten(BaseMiddleware):
    """Inner middleware: a handler runs after the record of a first-seen member is
    committed, unless it is flagged BATCHED."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        written = data.get(MEMBER_WRITE)
        if written is not None and not get_flag(data, BATCHED):
            await written
        return await handler(event, data)


class PondI18nMiddleware(I18nMiddleware):
    """A group speaks its pond's language; a private chat the user's, if we have it."""

    def __init__(self, i18n: I18n) -> None:
        super().__init__(i18n)

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        pond: PondInfo | None = data.get("pond")
        if pond is not None and pond.language in self.i18n.available_locales:
            return pond.language
        user: User | None = data.get("event_from_user")
        if user is not None and user.language_code:
            lang = user.language_code.split("-")[0].lower()
            if lang in self.i18n.available_locales:
                return lang
        return self.i18n.default_locale


__all__ = [
    "BATCHED",
    "MemberWritten",
    "PondI18nMiddleware",
    "PondInfo",
    "PondStatus",
    "TrackingMiddleware",
    "person_of",
    "settle_writes",
]
