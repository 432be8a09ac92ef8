"""Who may run operator commands.

An operator is a user id listed in `OPERATOR_IDS`, or an administrator/creator of the
group the command is used in (anonymous admins included: they post as the group itself).
Admin lists are fetched with `getChatAdministrators` and cached for a while; a
`chat_member` update about a promotion or demotion drops the cached list. When
Telegram does not answer, the last list known is used; with none, the check raises
`AdminsUnavailable` and the person is asked to try again in a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiogram import Bot
from aiogram.exceptions import AiogramError, TelegramAPIError, TelegramRetryAfter
from aiogram.types import Chat, User

from services.shared import ADMINS, NO_PEERS, Peers
from services.weather import describe, is_transient

log = logging.getLogger(__name__)

ANONYMOUS_ADMIN_ID = 1087968824  # GroupAnonymousBot
SERVICE_USER_IDS = frozenset({ANONYMOUS_ADMIN_ID, 777000, 136817688})  # + Telegram, Channel_Bot


class AdminsUnavailable(AiogramError):
    """Telegram did not answer `getChatAdministrators` and no list of the chat's admins is
    known: nobody can say whether the user is an operator there. Not a refusal: the
    operator filters answer "try again in a minute" (`bot.filters.AskAgainLater`).
    (An `AiogramError`: like the failure it stands for, it comes from the Bot API.)"""

    def __init__(self, chat_id: int) -> None:
        super().__init__(f"the admins of {chat_id} are unknown just now")
        self.chat_id = chat_id


class AdminCache:
    """Admin lists by chat, for `ttl` seconds. When Telegram does not answer (a 5xx, an
    HTML page, a timeout, a 429), the last list known is kept and asked for again after
    `retry` seconds; with none known, `admins` raises `AdminsUnavailable`."""

    def __init__(
        self,
        ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        retry: float = 30.0,
    ) -> None:
        self._ttl = ttl
        self._retry = retry
        self._clock = clock
        self._entries: dict[int, tuple[float, frozenset[int]]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self.peers: Peers = NO_PEERS  # other instances: they drop the list too

    def invalidate(self, chat_id: int) -> None:
        self._entries.pop(chat_id, None)
        self.peers.tell(ADMINS, chat_id)

    def cached(self, chat_id: int) -> frozenset[int] | None:
        """The list known for the chat (maybe due for a refresh), or None."""
        hit = self._entries.get(chat_id)
        return hit[1] if hit else None

    def put(self, chat_id: int, admin_ids: frozenset[int]) -> None:
        self._entries[chat_id] = (self._clock() + self._ttl, admin_ids)

    async def admins(self, bot: Bot, chat_id: int) -> frozenset[int]:
        hit = self._entries.get(chat_id)
        if hit and hit[0] > self._clock():
            return hit[1]
        lock = self._locks.setdefault(chat_id, asyncio.Lock())
        async with lock:
            hit = self._entries.get(chat_id)
            if hit and hit[0] > self._clock():
                return hit[1]
            try:
                members = await bot.get_chat_administrators(chat_id)
            except Exception as exc:
                if not (is_transient(exc) or isinstance(exc, TelegramRetryAfter)):
                    if not isinstance(exc, TelegramAPIError):
                        raise
                    # Telegram's final word (the bot is not in the chat, the chat is gone).
                    log.warning("could not fetch admins of %s: %s", chat_id, type(exc).__name__)
                    return hit[1] if hit else frozenset()
                if hit is None:
                    log.warning(
                        "could not fetch admins of %s (%s); none known", chat_id, describe(exc)
                    )
                    raise AdminsUnavailable(chat_id) from exc
                log.warning(
                    "could not fetch admins of %s (%s); keeping the last list known",
                    chat_id,
                    describe(exc),
                )
                self._entries[chat_id] = (self._clock() + self._retry, hit[1])
                return hit[1]
            ids = frozenset(m.user.id for m in members)
            self.put(chat_id, ids)
            return ids


class OperatorPolicy:
    """Global operators (`OPERATOR_IDS`, the shop's own staff) are operators everywhere;
    a group's admins are operators in that group. Whether a group is served at all is
    the trust boundary's business (services/trust.py): in a group that is not a pond no
    handler runs, so its admins have no powers."""

    def __init__(self, operator_ids: frozenset[int], admins: AdminCache) -> None:
        self.operator_ids = operator_ids
        self.admins = admins

    def is_global(self, user: User | None, sender_chat: Chat | None = None) -> bool:
        """A global operator speaking as themselves (not as a group or a channel)."""
        return (
            sender_chat is None
            and user is not None
            and not user.is_bot
            and user.id in self.operator_ids
        )

    async def fetch_admins(
        self, bot: Bot, chat_id: int, *, fresh: bool = False
    ) -> frozenset[int] | None:
        """The group's admins (creator included); None when Telegram could not tell and
        no earlier list is known."""
        if fresh:
            self.admins.invalidate(chat_id)
        try:
            ids = await self.admins.admins(bot, chat_id)
        except (AiogramError, OSError, TimeoutError) as exc:
            log.warning("could not fetch admins of %s: %s", chat_id, type(exc).__name__)
            return None
        return ids if self.admins.cached(chat_id) is not None else None

    async def is_operator(
        self, bot: Bot, chat: Chat | None, user: User | None, sender_chat: Chat | None = None
    ) -> bool:
        if chat is not None and sender_chat is not None:
            # An anonymous admin speaks as the group itself; a channel speaks as itself.
            return chat.type in ("group", "supergroup") and sender_chat.id == chat.id
        if user is None or user.is_bot:
            return False
        if user.id in self.operator_ids:
            return True
        if chat is None or chat.type not in ("group", "supergroup"):
            return False
        return user.id in await self.admins.admins(bot, chat.id)
