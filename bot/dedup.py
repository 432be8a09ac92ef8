"""Drop an update this process has already seen.

Telegram redelivers updates (a retried webhook call, a batch fetched again after a
network error). Within one process an update id seen before is skipped outright, so
not even a read-only reply is repeated. After a restart this memory is empty; then the
handlers' idempotency keys keep every effect single.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import TelegramObject, Update


class SeenUpdates(BaseMiddleware):
    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._seen: OrderedDict[int, None] = OrderedDict()

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if isinstance(event, Update):
            if event.update_id in self._seen:
                return UNHANDLED
            self._seen[event.update_id] = None
            if len(self._seen) > self.size:
                self._seen.popitem(last=False)
        return await handler(event, data)
