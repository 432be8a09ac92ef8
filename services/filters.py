"""Router-level filters. Async `Filter` classes: aiogram runs synchronous filters in a
worker thread, which costs ~0.2 ms per update on the hot path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.filters import Filter
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, Chat, Message, TelegramObject

from services.messaging import reply
from services.operators import AdminsUnavailable, OperatorPolicy
from services.outbox import Outbox
from services.texts import weather as texts


class IsOperator(Filter):
    """Passes for operators; puts `is_operator=True` into the handler data. When the
    chat's admins cannot be known just now, `AdminsUnavailable` goes up to
    `AskAgainLater` (a `False` here would let the refusal for members answer)."""

    async def __call__(
        self, event: Message | CallbackQuery, bot: Bot, operators: OperatorPolicy
    ) -> bool | dict[str, Any]:
        chat: Chat | None
        sender_chat: Chat | None
        if isinstance(event, Message):
            chat, sender_chat = event.chat, event.sender_chat
        else:
            chat = event.message.chat if event.message else None
            sender_chat = None
        ok = await operators.is_operator(bot, chat, event.from_user, sender_chat)
        return {"is_operator": True} if ok else False


class ChatTypeIn(Filter):
    def __init__(self, *types: str) -> None:
        self.types = frozenset(types)

    async def __call__(self, event: Message) -> bool:
        return event.chat.type in self.types


class AskAgainLater(BaseMiddleware):
    """Outer middleware for messages and button presses, inside the language middleware.
    When an operator check could not be made (`AdminsUnavailable`: Telegram did not
    answer `getChatAdministrators` and no list is known), the person is told that
    Telegram is not answering and to try again in a minute — not refused as a member,
    not left in silence. The update counts as handled."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        try:
            return await handler(event, data)
        except AdminsUnavailable:
            outbox: Outbox = data["outbox"]
            if isinstance(event, Message):
                reply(outbox, event, texts.telegram_not_answering())
            elif isinstance(event, CallbackQuery):
                await outbox.answer(
                    AnswerCallbackQuery(
                        callback_query_id=event.id, text=texts.telegram_not_answering()
                    )
                )
            return None
