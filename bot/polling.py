"""Long polling that never loses an update.

aiogram's own polling loop (with `handle_as_tasks=True`) confirms a batch to Telegram —
by asking for the next offset — before the handlers of that batch have finished, so a
crash loses those updates. Here a batch is confirmed only after every update in it was
handled: a crash or SIGKILL means Telegram delivers the batch again, and the handlers'
idempotency keys make the replay harmless.

Within a batch, updates of one chat are handled in order (a join before the message
that follows it); different chats are handled concurrently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.exceptions import (
    TelegramConflictError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import GetUpdates
from aiogram.types import Update

log = logging.getLogger(__name__)


def _chat_key(update: Update) -> int:
    event = update.event
    chat = getattr(event, "chat", None)
    if chat is None:
        msg = getattr(event, "message", None)
        chat = getattr(msg, "chat", None)
    if chat is not None:
        return int(chat.id)
    user = getattr(event, "from_user", None) or getattr(event, "user", None)
    return int(user.id) if user is not None else 0


async def handle_batch(dp: Dispatcher, bot: Bot, updates: Sequence[Update], **kwargs: Any) -> None:
    lanes: dict[int, list[Update]] = defaultdict(list)
    for u in updates:
        lanes[_chat_key(u)].append(u)

    async def lane(items: list[Update]) -> None:
        for u in items:
            try:
                await dp.feed_update(bot, u, **kwargs)
            except Exception:  # the error handler logs; one bad update must not stop the rest
                log.exception("update %s was not handled", u.update_id)

    await asyncio.gather(*(lane(items) for items in lanes.values()))


async def poll(
    dp: Dispatcher,
    bot: Bot,
    *,
    allowed_updates: list[str],
    stop: asyncio.Event,
    poll_timeout: int = 25,
    **kwargs: Any,
) -> None:
    offset: int | None = None
    delay = 1.0
    while not stop.is_set():
        request = GetUpdates(offset=offset, timeout=poll_timeout, allowed_updates=allowed_updates)
        fetch = asyncio.ensure_future(bot(request, request_timeout=poll_timeout + 15))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({fetch, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if fetch not in done:
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
            break
        stopper.cancel()
        try:
            updates = fetch.result()
        except TelegramRetryAfter as exc:
            await _sleep(stop, exc.retry_after)
            continue
        except TelegramUnauthorizedError:
            log.error("Telegram rejected the bot token (401): stopping")
            raise
        except TelegramConflictError:
            log.error("another process is polling with this token (409); retrying in %.0fs", delay)
            await _sleep(stop, delay)
            delay = min(delay * 2, 30.0)
            continue
        except (TelegramNetworkError, TelegramServerError, OSError) as exc:
            log.warning("getUpdates failed (%s); retrying in %.0fs", type(exc).__name__, delay)
            await _sleep(stop, delay)
            delay = min(delay * 2, 30.0)
            continue
        delay = 1.0
        if not updates:
            continue
        await handle_batch(dp, bot, updates, **kwargs)
        offset = updates[-1].update_id + 1
    if offset is not None:
        # Confirm the last handled batch so a clean restart does not see it again.
        try:
            await bot(
                GetUpdates(offset=offset, timeout=0, limit=1, allowed_updates=allowed_updates)
            )
        except Exception as exc:  # pragma: no cover - best effort on the way out
            log.info("could not confirm the last batch on shutdown: %s", type(exc).__name__)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
