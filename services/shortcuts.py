"""Button presses answered before any routing: malformed ones, and those a feature can
answer from memory.

Callback data is client-controlled: anyone can send any string with a press. Every
press whose prefix is one of ours (`rp:`, `vt:`, …: the prefixes of the `CallbackData`
classes in `handlers` and `bot`) must parse as its class — ids within a signed 64-bit
integer, fields within their bounds — or it gets a quiet "not valid" toast here: no
handler, no SQL, no error in the log.

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

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, TelegramObject

from services.lru import LRU
from services.texts import games as texts

# (the query, its prefix-less payload, the handler data) -> answered?
Answer = Callable[[CallbackQuery, str, dict[str, Any]], Awaitable[bool]]

INT64 = range(-(2**63), 2**63)
GOOD_KEPT = 1024  # well-formed payloads remembered
OUR_PACKAGES = frozenset({"bot", "handlers", "scheduler", "services"})


def our_formats() -> list[type[CallbackData]]:
    """The `CallbackData` classes defined in our packages (imported by now)."""
    found: list[type[CallbackData]] = []
    todo = list(CallbackData.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.partition(".")[0] in OUR_PACKAGES:
            found.append(cls)
    return found


def _parses(cls: type[CallbackData], data: str) -> bool:
    try:
        parsed = cls.unpack(data)
    except (TypeError, ValueError):  # pydantic's ValidationError is a ValueError
        return False
    numbers = (v for v in parsed.__dict__.values() if isinstance(v, int))
    return all(v in INT64 for v in numbers)


class Shortcuts(BaseMiddleware):
    def __init__(self, formats: Iterable[type[CallbackData]] | None = None) -> None:
        self._answers: dict[str, Answer] = {}
        self._given = None if formats is None else list(formats)
        self._formats: dict[str, list[type[CallbackData]]] | None = None
        # Payloads that parsed lately: a stampede presses one board's button, whose
        # data is one string, thousands of times (parsing it is a pydantic model each).
        self._good: LRU[str, None] = LRU(GOOD_KEPT)

    def register(self, prefix: str, answer: Answer) -> None:
        if prefix in self._answers:
            raise ValueError(f"callback prefix {prefix!r} is registered twice")
        self._answers[prefix] = answer

    def _by_prefix(self) -> dict[str, list[type[CallbackData]]]:
        # Collected on the first press: every feature module is imported by then.
        if self._formats is None:
            self._formats = {}
            for cls in self._given if self._given is not None else our_formats():
                self._formats.setdefault(cls.__prefix__, []).append(cls)
        return self._formats

    def malformed(self, data: str) -> bool:
        """Whether `data` has one of our prefixes but parses as none of its classes."""
        if data in self._good:
            return False
        prefix = data.partition(":")[0]
        formats = self._by_prefix().get(prefix)
        if formats is None:
            return False
        if any(_parses(cls, data) for cls in formats):
            self._good.put(data, None)
            return False
        return True

    def may_answer(self, data: str | None) -> bool:
        """Whether a press with `data` is answered here or may be (malformed, or its
        prefix has a registered answer); if not, the middleware only passes it on."""
        if not data:
            return False
        prefix, sep, _ = data.partition(":")
        return self.malformed(data) or (bool(sep) and prefix in self._answers)

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        payload = event.data if isinstance(event, CallbackQuery) else None
        if payload:
            assert isinstance(event, CallbackQuery)
            if self.malformed(payload):
                await data["outbox"].answer(
                    AnswerCallbackQuery(callback_query_id=event.id, text=texts.button_not_valid())
                )
                return None
            prefix, sep, rest = payload.partition(":")
            answer = self._answers.get(prefix) if sep else None
            if answer is not None and await answer(event, rest, data):
                return None
        return await handler(event, data)
