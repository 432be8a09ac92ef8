"""Drive the real Dispatcher with real `Update` objects, as people in a group would.

    harness = Harness(dp, bot, session, outbox)
    alice = harness.member(chat, User(...))
    msg = await alice.send("/points")
    await harness.settle()            # let the outbox deliver
    assert "0" in session.sent_texts(chat.id)[-1]

Several clients share one harness (one update-id sequence, one bot), so many users can
act in one group, concurrently if the test wants.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import re
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import (
    CallbackQuery,
    Chat,
    ChatMemberLeft,
    ChatMemberMember,
    ChatMemberUpdated,
    Message,
    MessageEntity,
    Update,
    User,
)

from services.middlewares import settle_writes
from services.outbox import Outbox
from tests.rig.fake_session import BOT_USERNAME, FakeSession

_COMMAND = re.compile(r"^/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]{3,32})?")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class Harness:
    def __init__(self, dp: Dispatcher, bot: Bot, session: FakeSession, outbox: Outbox) -> None:
        self.dp = dp
        self.bot = bot
        self.session = session
        self.outbox = outbox
        self._update_ids = itertools.count(1000)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self.now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

    def next_update_id(self) -> int:
        return next(self._update_ids)

    def next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(10_000)))

    async def feed(self, update: Update) -> Any:
        """Handle one update the way the transports do: acknowledged (returned) only
        once what it queued for the writer is committed."""
        result = await self.dp.feed_update(self.bot, update)
        await settle_writes(self.dp)
        return result

    async def feed_event(self, **event: Any) -> Any:
        return await self.feed(Update(update_id=self.next_update_id(), **event))

    def member(self, chat: Chat, user: User) -> GroupClient:
        return GroupClient(self, chat, user)

    async def settle(self, within: float = 5.0) -> None:
        """Wait until the outbox has delivered everything queued so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.outbox.pending():
            if loop.time() > deadline:
                raise TimeoutError(f"outbox still has {self.outbox.pending()} queued")
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)

    def replies(self, chat_id: int) -> list[str]:
        return self.session.sent_texts(chat_id)


class GroupClient:
    """One person in one chat."""

    def __init__(self, harness: Harness, chat: Chat, user: User) -> None:
        self.h = harness
        self.chat = chat
        self.user = user

    def message(
        self,
        text: str,
        *,
        reply_to: Message | None = None,
        sender_chat: Chat | None = None,
        message_id: int | None = None,
    ) -> Message:
        entities = None
        m = _COMMAND.match(text)
        if m:
            entities = [MessageEntity(type="bot_command", offset=0, length=utf16_len(m.group(0)))]
        return Message(
            message_id=message_id or self.h.next_message_id(self.chat.id),
            date=self.h.now,
            chat=self.chat,
            from_user=self.user,
            sender_chat=sender_chat,
            text=text,
            entities=entities,
            reply_to_message=reply_to,
        )

    async def send(self, text: str, **kw: Any) -> Message:
        msg = self.message(text, **kw)
        await self.h.feed_event(message=msg)
        return msg

    async def resend(self, msg: Message, update_id: int) -> None:
        """Telegram delivering the same update again."""
        await self.h.feed(Update(update_id=update_id, message=msg))

    async def click(self, message: Message, data: str) -> str:
        query_id = f"q{self.h.next_update_id()}"
        query = CallbackQuery(
            id=query_id,
            from_user=self.user,
            chat_instance=str(self.chat.id),
            message=message,
            data=data,
        )
        await self.h.feed_event(callback_query=query)
        return query_id

    async def join(self, *, via: User | None = None) -> None:
        await self.h.feed_event(
            chat_member=ChatMemberUpdated(
                chat=self.chat,
                from_user=via or self.user,
                date=self.h.now,
                old_chat_member=ChatMemberLeft(user=self.user),
                new_chat_member=ChatMemberMember(user=self.user),
            )
        )

    async def leave(self) -> None:
        await self.h.feed_event(
            chat_member=ChatMemberUpdated(
                chat=self.chat,
                from_user=self.user,
                date=self.h.now,
                old_chat_member=ChatMemberMember(user=self.user),
                new_chat_member=ChatMemberLeft(user=self.user),
            )
        )


def group_chat(chat_id: int = -1001234567890, title: str = "Pond") -> Chat:
    return Chat(id=chat_id, type="supergroup", title=title)


def private_chat(user: User) -> Chat:
    return Chat(id=user.id, type="private", first_name=user.first_name)


def person(user_id: int, first_name: str, username: str | None = None, **kw: Any) -> User:
    return User(id=user_id, is_bot=False, first_name=first_name, username=username, **kw)


__all__ = ["BOT_USERNAME", "GroupClient", "Harness", "group_chat", "person", "private_chat"]
