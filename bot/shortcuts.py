"""Button presses a feature can answer from memory, before any routing.

When a packet of 100 shares meets 10,000 clicks, 9,900 of them arrive after it is gone,
and each would still travel through every router and filter to reach a handler that only
says "all gone". A feature registers its callback-data prefix here with a function that
answers such a press from what it already knows (a cache of a terminal state the
database recorded) and returns True; anything it does not know for sure it leaves to the
routers by returning False.

The middleware sits on callback queries after `TrackingMiddleware`: the pond, the person
and the language are known, and the presser is recorded like any other member.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, TelegramObject

# (the query, its prefix-less payload, the handler data) -> answered?
Answer = Callable[[CallbackQuery, str, dict[str, Any]], Awaitable[bool]]


class Shortcuts(BaseMiddleware):
    def __init__(self) -> None:
        self._answers: dict[str, Answer] = {}

    def register(self, prefix: str, answer: Answer) -> None:
        if prefix in self._answers:
            raise ValueError(f"callback prefix {prefix!r} is registered twice")
        self._answers[prefix] = answer

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        payload = event.data if isinstance(event, CallbackQuery) else None
        if payload:
            prefix, sep, rest = payload.partition(":")
            answer = self._answers.get(prefix) if sep else None
            if answer is not None and await answer(event, rest, data):  # type: ignore[arg-type]
                return None
        return await handler(event, data)
