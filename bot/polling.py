"""Long polling that never loses an update.

aiogram's own polling loop (with `handle_as_tasks=True`) confirms a batch to Telegram —
by asking for the next offset — before the handlers of that batch have finished, so a
crash loses those updates. Here a batch is confirmed only after every update in it was
handled: a crash or SIGKILL means Telegram delivers the batch again, and the handlers'
idempotency keys make the replay harmless. An update the database failed is not
confirmed: the batch is confirmed up to it and fetched again from there (the updates
after it that did succeed are skipped by `bot.dedup`, so nobody gets a second reply).
Trouble on Telegram's side never ends the loop (see `poll`).

Within a batch, chats are handled concurrently, and so are the members of one chat
(10,000 people pressing one button must not queue behind each other); one member's
updates keep their order (a join before the message that follows it), and a command, an
answer to the bot (a guess replying to a round) or a chat-wide event (the bot added, a
migration) keeps its place among all of the chat's updates: of two equal guesses the
earlier wins, and an operator's command sees everything sent before it.
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
    ClientDecodeError,
    TelegramAPIError,
    TelegramConflictError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.methods import GetUpdates
from aiogram.types import Update

from services.dedup import Unconfirmed
from services.middlewares import settle_writes
from services.weather import describe, is_transient

log = logging.getLogger(__name__)


# Commands whose effect concerns only the member who sends them: a morning's storm of
# `/checkin` need not take turns. Every other command keeps its place in the chat.
PERSONAL_COMMANDS = frozenset({
    "checkin", "makeup", "points", "top", "invite", "help", "start",
    # the shop and the lottery: a storm on the last coupons, a crowd drawing (each takes
    # its turn at the item's or the prize's row in the database)
    "shop", "redeem", "mine", "draw",
    "tasks",  # the member's own task list (a bonus paid by it is keyed per member and day)
})


def _command(text: str) -> str:
    words = text[1:].split(maxsplit=1)
    return words[0].partition("@")[0].lower() if words else ""


def _chat_of(update: Update) -> int:
    event = update.event
    chat = getattr(event, "chat", None)
    if chat is None:
        msg = getattr(event, "message", None)
        chat = getattr(msg, "chat", None)
    if chat is not None:
        return int(chat.id)
    user = getattr(event, "from_user", None) or getattr(event, "user", None)
    return int(user.id) if user is not None else 0


def _person_of(update: Update) -> int | None:
    """Whose lane an update takes within its chat; None: the whole chat's (a barrier)."""
    if update.callback_query is not None:
        return update.callback_query.from_user.id
    if update.chat_member is not None:
        return update.chat_member.new_chat_member.user.id
    message = update.message
    if message is None or message.from_user is None or message.sender_chat is not None:
        return None
    text = message.text or message.caption or ""
    if text.startswith("/") and _command(text) not in PERSONAL_COMMANDS:
        return None
    if message.new_chat_members or message.left_chat_member:
        return None
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.is_bot:
        return None  # an answer to the bot (a guess on a round): in order with the others
    if message.migrate_to_chat_id or message.migrate_from_chat_id:
        return None
    return message.from_user.id


def plan(updates: Sequence[Update]) -> list[list[list[list[Update]]]]:
    """Lanes, per chat, in steps: within a step each person's updates form one lane
    (in order) and the lanes run concurrently; a command or a chat-wide event is a step
    of its own, after everything before it in that chat and before everything after."""
    chats: dict[int, list[list[list[Update]]]] = defaultdict(list)
    open_step: dict[int, dict[int, list[Update]]] = {}
    for u in updates:
        chat = _chat_of(u)
        person = _person_of(u)
        steps = chats[chat]
        if person is None:
            steps.append([[u]])
            open_step.pop(chat, None)
            continue
        lanes = open_step.get(chat)
        if lanes is None:
            lanes = open_step[chat] = {}
            steps.append([])
        lane = lanes.get(person)
        if lane is None:
            lane = lanes[person] = []
            steps[-1].append(lane)
        lane.append(u)
    return list(chats.values())


async def handle_batch(
    dp: Dispatcher, bot: Bot, updates: Sequence[Update], **kwargs: Any
) -> set[int]:
    """Handle one batch: chats concurrently; within a chat, people concurrently, each
    person's updates in order, commands and chat-wide events in order with the rest.
    Returns once what the batch wrote is durable (it is confirmed right after).

    Returns the ids of the updates left unhandled, to be fetched again: each one the
    database failed (`Unconfirmed`), and what must not overtake it — the rest of its
    lane, and the chat's later steps."""
    left: set[int] = set()

    async def lane(items: list[Update]) -> bool:
        for i, u in enumerate(items):
            try:
                await dp.feed_update(bot, u, **kwargs)
            except Unconfirmed:
                left.update(later.update_id for later in items[i:])
                return False
            except Exception:  # the error handler logs; one bad update must not stop the rest
                log.exception("update %s was not handled", u.update_id)
        return True

    async def chat(steps: list[list[list[Update]]]) -> None:
        for i, step in enumerate(steps):
            if i:
                # What the steps before wrote is visible to this one (a command naming
                # a member who just spoke for the first time finds them).
                await settle_writes(dp)
            done = await asyncio.gather(*(lane(items) for items in step))
            if not all(done):
                left.update(u.update_id for later in steps[i + 1 :] for ls in later for u in ls)
                return

    await asyncio.gather(*(chat(steps) for steps in plan(updates)))
    await settle_writes(dp)  # the batch is confirmed next: what it wrote must be durable
    return left


async def poll(
    dp: Dispatcher,
    bot: Bot,
    *,
    allowed_updates: list[str],
    stop: asyncio.Event,
    poll_timeout: int = 25,
    backoff: float = 1.0,
    refetch_backoff: float = 0.25,
    max_backoff: float = 30.0,
    **kwargs: Any,
) -> None:
    """Fetch, handle and confirm batches until `stop` is set.

    Nothing Telegram answers ends the loop but a 401 (the token is wrong): a 5xx, an
    HTML page instead of JSON, a timeout or a dropped connection is one warning line
    (anything unexpected one error with its traceback) and another try after a growing
    pause. A batch is confirmed up
    to its first update left unhandled (the database failed it); from there it is
    fetched again after a growing pause, so a database outage is not a hot loop."""
    offset: int | None = None
    delay = backoff  # after a failed getUpdates
    again = refetch_backoff  # after a batch with updates left unhandled
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
        unreadable: list[int] = []
        try:
            updates = fetch.result()
        except ClientDecodeError as exc:
            readable = _readable_updates(exc, bot)
            if readable is None:  # not a batch at all: an HTML page, a cut-off body…
                log.warning(
                    "getUpdates failed (%s); retrying in %.0fs", describe(exc, bot.token), delay
                )
                await _sleep(stop, delay)
                delay = min(delay * 2, max_backoff)
                continue
            updates, unreadable = readable
            for update_id in unreadable:
                log.error("update %s cannot be read (%s): skipped", update_id, exc.message)
            if unreadable and not updates:
                offset = max(unreadable) + 1
                continue
        except TelegramRetryAfter as exc:
            await _sleep(stop, exc.retry_after)
            continue
        except TelegramUnauthorizedError:
            log.error("Telegram rejected the bot token (401): stopping")
            raise
        except TelegramConflictError:
            log.error("another process is polling with this token (409); retrying in %.0fs", delay)
            await _sleep(stop, delay)
            delay = min(delay * 2, max_backoff)
            continue
        except Exception as exc:
            if is_transient(exc):
                log.warning(
                    "getUpdates failed (%s); retrying in %.0fs", describe(exc, bot.token), delay
                )
            elif isinstance(exc, TelegramAPIError):  # Telegram's answer, but not a usual one
                log.error(
                    "getUpdates failed (%s); retrying in %.0fs", describe(exc, bot.token), delay
                )
            else:
                log.error(
                    "getUpdates failed unexpectedly; retrying in %.0fs: %s",
                    delay,
                    describe(exc, bot.token, trace=True),
                )
            await _sleep(stop, delay)
            delay = min(delay * 2, max_backoff)
            continue
        delay = backoff
        if not updates:
            continue
        try:
            left = await handle_batch(dp, bot, updates, **kwargs)
        except Exception as exc:  # outside any one update: fetch the batch again
            left = {u.update_id for u in updates}
            log.error("handling a batch failed: %s", describe(exc, bot.token, trace=True))
        if not left:
            offset = max([updates[-1].update_id, *unreadable]) + 1
            again = refetch_backoff
            continue
        # Confirm what came before the first update left unhandled; fetch the rest again.
        offset = min(left)
        log.info(
            "%d update(s) left unhandled from %s on; fetching again in %.1fs",
            len(left),
            offset,
            again,
        )
        await _sleep(stop, again)
        again = min(again * 2, max_backoff)
    if offset is not None:
        # Confirm the last handled batch so a clean restart does not see it again.
        try:
            await bot(
                GetUpdates(offset=offset, timeout=0, limit=1, allowed_updates=allowed_updates)
            )
        except Exception as exc:  # pragma: no cover - best effort on the way out
            log.info("could not confirm the last batch on shutdown: %s", type(exc).__name__)


def _readable_updates(exc: ClientDecodeError, bot: Bot) -> tuple[list[Update], list[int]] | None:
    """A batch Telegram sent as JSON that aiogram could not turn into updates (a field of
    one update it does not know how to read): the updates that can be read on their own,
    and the ids of those that cannot. None when the answer was not such a batch. One
    unreadable update must not stop polling for good: it is logged and skipped, like a
    poison update."""
    data = exc.data
    if not isinstance(data, dict) or data.get("ok") is not True:
        return None
    items = data.get("result")
    if not isinstance(items, list):
        return None
    updates: list[Update] = []
    unreadable: list[int] = []
    for item in items:
        try:
            updates.append(Update.model_validate(item, context={"bot": bot}))
        except ValueError:  # pydantic's ValidationError
            update_id = item.get("update_id") if isinstance(item, dict) else None
            if isinstance(update_id, int):
                unreadable.append(update_id)
    return updates, unreadable


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
