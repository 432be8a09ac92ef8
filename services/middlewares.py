"""Middlewares: who is talking, in which pond, in which language.

`TrackingMiddleware` is where the trust boundary holds (SPEC F1, services/trust.py): an
update from a group that is not a pond of this shop stops here — after the one notice
that says so — before anything is recorded or any handler runs. (`my_chat_member` and
`chat_member` updates do not pass through it: they are how a group's state changes.)

In a pond it records members on their first message or interaction and keeps display
names fresh — writing only when something changed, so a busy pond does not turn every
message into a database write. It also puts the pond's settings (`pond`) and the
speaking person (`person`, None for bots, anonymous admins and channels) into the
handler data.

A pond's time zone and language are kept per process for `pond_ttl` seconds, but a
change through `/settings` is seen sooner: the process that made it forgets the pond at
once (`forget_pond`, `forget_ponds`), and every process looks at the settings audit at
most every `settings_poll` seconds (one small read, on the first update after that
time) and forgets the ponds changed since — all of them after a shop-wide change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.dispatcher.flags import get_flag
from aiogram.types import CallbackQuery, Chat, Message, TelegramObject, User
from aiogram.utils.i18n import I18n, I18nMiddleware

from services.lru import LRU
from services.operators import SERVICE_USER_IDS
from services.shared import NO_PEERS, POND, Peers
from services.trust import PondGate
from storage import repo
from storage import settings as settings_store
from storage.batch import SEEN, BatchWriter, SeenRequest
from storage.db import Database
from storage.models import SERVED_TRUST, PondStatus, PondTrust

log = logging.getLogger(__name__)

# Handler flag: the handler writes through the `BatchWriter` only, so it needs no
# committed record of a first-seen member before it runs (see TrackingMiddleware).
BATCHED = "batched"
# Handler flag: the handler needs no record of a first-seen member either — it only acts
# for members already holding points (one seen for the first time has none, and is
# refused the same with or without the record), so a storm of it is not held up.
NO_MEMBER_WAIT = "no_member_wait"
MEMBER_WRITE = "member_write"  # data key: the pending write of a first-seen member
SETTINGS_WAIT = 0.2  # seconds an update waits at most for the read of the settings audit


@dataclass(frozen=True, slots=True)
class PondInfo:
    chat_id: int
    language: str
    timezone: str
    status: str
    served: bool = True  # a pond of this shop (the trust boundary); else nothing runs


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


def _is_migration(event: TelegramObject) -> bool:
    return isinstance(event, Message) and (
        event.migrate_to_chat_id is not None or event.migrate_from_chat_id is not None
    )


class TrackingMiddleware(BaseMiddleware):
    def __init__(
        self,
        db: Database,
        *,
        gate: PondGate,
        default_timezone: str,
        default_language: str,
        cache_size: int = 50_000,
        writer: BatchWriter | None = None,
        pond_ttl: float = 60.0,
        settings_poll: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.gate = gate
        self.writer = writer or BatchWriter(db)
        self.default_timezone = default_timezone
        self.default_language = default_language
        self._names: LRU[int, repo.UserInfo] = LRU(cache_size)  # user_id -> UserInfo last written
        self._seen: LRU[tuple[int, int], bool] = LRU(cache_size)  # (chat_id, user_id) -> True
        # chat_id -> (PondInfo, read again after): a pond approved or revoked by another
        # instance is seen here within `pond_ttl` seconds.
        self._ponds: LRU[int, tuple[PondInfo, float]] = LRU(10_000)
        self._pond_ttl = pond_ttl
        self._clock = clock
        self._registering: dict[int, asyncio.Future[PondInfo]] = {}
        self._settings_poll = settings_poll
        self._settings_seen: int | None = None  # the newest settings audit id looked at
        self._next_settings_poll = -float("inf")
        self._settings_task: asyncio.Future[None] | None = None
        self.peers: Peers = NO_PEERS  # other instances (Redis): they forget the pond too

    def forget_pond(self, chat_id: int) -> None:
        self._ponds.pop(chat_id, None)
        self.peers.tell(POND, chat_id)

    def forget_ponds(self) -> None:
        """A shop-wide default changed: every pond is read again."""
        self._ponds.clear()
        self.peers.tell(POND, None)

    async def _watch_settings(self) -> None:
        """Forget the ponds whose settings another process changed: at most one read
        every `settings_poll` seconds. The update that starts the read waits for it
        briefly (it takes a millisecond); a database that does not answer delays no
        update by more than `SETTINGS_WAIT`, and what is known stays."""
        now = self._clock()
        if now < self._next_settings_poll or self._settings_task is not None:
            return
        self._next_settings_poll = now + self._settings_poll
        task = self._settings_task = asyncio.ensure_future(self._read_settings_audit())
        await asyncio.wait({task}, timeout=SETTINGS_WAIT)

    async def _read_settings_audit(self) -> None:
        try:
            async with self.db.transaction(readonly=True) as session:
                newest, chats = await settings_store.changed_since(session, self._settings_seen)
        except Exception as exc:  # the update itself meets the trouble, if it lasts
            log.debug("reading the settings audit failed: %r", exc)
            return
        finally:
            self._settings_task = None
        if None in chats:
            self.forget_ponds()
        for chat_id in chats:
            if chat_id is not None:
                self.forget_pond(chat_id)
        self._settings_seen = max(newest, self._settings_seen or 0)

    def forget_seat(self, chat_id: int, user_id: int) -> None:
        """A member left: their next message in the pond records them present again."""
        self._seen.pop((chat_id, user_id), None)

    def _cached_pond(self, chat_id: int) -> PondInfo | None:
        hit = self._ponds.get(chat_id)
        if hit is None or hit[1] < self._clock():
            return None
        self._ponds.move_to_end(chat_id)  # recently used: kept longest
        pond: PondInfo = hit[0]
        return pond

    @staticmethod
    def _who(event: TelegramObject, data: dict[str, Any]
             ) -> tuple[Chat | None, repo.UserInfo | None, bool]:
        """The update's chat, its person, and whether the chat is a group."""
        user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        sender_chat = event.sender_chat if isinstance(event, Message) else None
        if isinstance(event, CallbackQuery) and event.message is not None:
            chat = event.message.chat
        group = chat is not None and chat.type in ("group", "supergroup")
        return chat, person_of(user, sender_chat), group

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        chat, person, group = self._who(event, data)
        pond: PondInfo | None = None
        if group:
            assert chat is not None
            if _is_migration(event):
                # The group became a supergroup: the membership router moves the pond
                # (and its trust) to the new id; neither id is judged on its own.
                data["pond"], data["person"] = None, None
                return await handler(event, data)
            if self._clock() >= self._next_settings_poll:  # no coroutine per update
                await self._watch_settings()
            pond = self._cached_pond(chat.id) or await self._register(chat, data["bot"])
            if not pond.served:
                return None  # not a pond of this shop: nothing is recorded, nothing runs
        self._enter(data, chat, person, group, pond)
        return await handler(event, data)

    def admit_now(self, event: TelegramObject, data: dict[str, Any]) -> bool:
        """What `__call__` does before its handler, when that needs no wait and lets the
        handler run: a private chat, or a served pond already known with no look at the
        settings audit due. Otherwise False, with nothing done: `__call__` is for it."""
        chat, person, group = self._who(event, data)
        pond: PondInfo | None = None
        if group:
            assert chat is not None
            if _is_migration(event) or self._clock() >= self._next_settings_poll:
                return False
            pond = self._cached_pond(chat.id)
            if pond is None or not pond.served:
                return False
        self._enter(data, chat, person, group, pond)
        return True

    def _enter(self, data: dict[str, Any], chat: Chat | None, person: repo.UserInfo | None,
               group: bool, pond: PondInfo | None) -> None:
        """The pond and the person into the handler data; a first-seen member or a new
        name queued for writing."""
        data["pond"] = pond
        data["person"] = person
        if person is None:
            return
        new_name = self._names.get(person.id) != person
        new_seat = group and (chat.id, person.id) not in self._seen  # type: ignore[union-attr]
        if not (new_name or new_seat):
            return
        # Many people seen at once share one transaction (see storage.batch). The
        # handler runs once the record is written (`MemberWritten`), or, if its own
        # writes go through the same writer (flag BATCHED), right away: they are queued
        # after this one, so they land in the same transaction or a later one. Nothing
        # else waits for the record: the update is acknowledged to Telegram only after
        # `settle_writes` (a polled batch, a webhook call), so a crash before the commit
        # means redelivery, not a lost member.
        seat = (chat.id, person.id) if new_seat and chat is not None else None
        data[MEMBER_WRITE] = self.writer.enqueue(
            SEEN,
            SeenRequest(person.id, person if new_name else None, seat[0] if seat else None),
            then=lambda error: self._recorded(error, person, seat),
        )

    async def _register(self, chat: Chat, bot: Bot) -> PondInfo:
        """Record a group seen for the first time (or forgotten, or not read for a
        while) and judge it if it was never judged: once, however many of its updates
        arrive together."""
        pending = self._registering.get(chat.id)
        if pending is None:
            pending = self._registering[chat.id] = asyncio.ensure_future(
                self._upsert_pond(chat, bot)
            )
            pending.add_done_callback(lambda _: self._registering.pop(chat.id, None))
        return await asyncio.shield(pending)

    async def _upsert_pond(self, chat: Chat, bot: Bot) -> PondInfo:
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
            trust, told = row.trust, row.stranger_notice_at is not None
        if trust == PondTrust.unchecked:
            # Outside the transaction: the admin list is a Bot API call.
            decided = await self.gate.decide(bot, chat.id)
            if decided is None:
                # Telegram could not tell: not served for now, nothing said, not
                # remembered (the next update asks again).
                return PondInfo(row.chat_id, row.language, row.timezone, row.status, False)
            trust = decided
        pond = PondInfo(
            row.chat_id, row.language, row.timezone, row.status, trust in SERVED_TRUST
        )
        if not pond.served and not told:
            await self.gate.say_not_a_pond(chat.id, row.language)
        self._ponds.put(pond.chat_id, (pond, self._clock() + self._pond_ttl))
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
        self._names.put(person.id, person)
        if seat is not None:
            self._seen.put(seat, True)


async def settle_writes(dp: Dispatcher) -> None:
    """Wait until what the updates handled so far queued in the writer is committed:
    the transports call this before they acknowledge updates to Telegram."""
    writer: BatchWriter | None = dp.workflow_data.get("writer")
    if writer is not None:
        await writer.flushed()


class MemberWritten(BaseMiddleware):
    """Inner middleware: a handler runs after the record of a first-seen member is
    committed, unless it is flagged BATCHED or NO_MEMBER_WAIT."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        written = data.get(MEMBER_WRITE)
        if written is not None and not (
            get_flag(data, BATCHED) or get_flag(data, NO_MEMBER_WAIT)
        ):
            await written
        return await handler(event, data)


class PondI18nMiddleware(I18nMiddleware):
    """A group speaks its pond's language; a private chat the user's, if we have it."""

    def __init__(self, i18n: I18n) -> None:
        super().__init__(i18n)

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        """As `I18nMiddleware`'s, with the two context variables set directly (every
        update passes here: two generator-based context managers cost more)."""
        locale = self.locale_of(data)  # what `get_locale` says, without a coroutine
        i18n = self.i18n
        if self.i18n_key:
            data[self.i18n_key] = i18n
        if self.middleware_key:
            data[self.middleware_key] = self
        current = I18n.set_current(i18n)
        speaking = i18n.ctx_locale.set(locale)
        try:
            return await handler(event, data)
        finally:
            i18n.ctx_locale.reset(speaking)
            I18n.reset_current(current)

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        return self.locale_of(data)

    def locale_of(self, data: dict[str, Any]) -> str:
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
    "NO_MEMBER_WAIT",
    "MemberWritten",
    "PondI18nMiddleware",
    "PondInfo",
    "PondStatus",
    "PondTrust",
    "TrackingMiddleware",
    "person_of",
    "settle_writes",
]
