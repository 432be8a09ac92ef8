"""`/birthday MM-DD` (F10): a member registers their birthday in the private chat.

In a group it only says to use the private chat (a birthday is personal, and the
greeting comes by DM). Without a date it shows the one registered. A birthday can be
set freely the first time, then changed once a year (the reply says from when). The
greeting and the gift are the scheduler's (scheduler/members.py), which this router's
start-up step makes sure of.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiogram import Dispatcher, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from games import birthday as rules
from games.checkin import local_day
from handlers.startup import startup_deps
from scheduler.members import ensure_tasks
from services.messaging import reply
from services.middlewares import TrackingMiddleware
from services.outbox import Outbox
from services.texts import members as texts
from storage import birthdays, repo
from storage.db import Database
from storage.settings import Fallback, shop_defaults

Clock = Callable[[], datetime]


def setup() -> Router:
    router = Router(name="birthday")
    router.message.register(birthday, Command("birthday"))

    async def tasks_ready() -> None:
        deps = startup_deps(router)
        root = router
        while root.parent_router is not None:
            root = root.parent_router
        assert isinstance(root, Dispatcher)
        tracking: TrackingMiddleware = root["tracking"]
        await ensure_tasks(
            deps.scheduler,
            timezone=tracking.default_timezone,
            language=tracking.default_language,
        )

    router.startup.register(tasks_ready)
    return router


async def birthday(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    tracking: TrackingMiddleware,
    person: repo.UserInfo | None,
    clock: Clock,
) -> None:
    if message.chat.type != "private":
        reply(outbox, message, texts.birthday_in_private_only())
        return
    if person is None:
        return
    args = (command.args or "").strip()
    if not args:
        async with db.transaction(readonly=True) as session:
            current, _set_at = await birthdays.birthday_of(session, person.id)
        reply(outbox, message, texts.birthday_shown(current))
        return
    try:
        value = rules.parse(args)
    except rules.BadBirthday:
        reply(outbox, message, texts.birthday_bad(args))
        return
    now = clock()
    fallback = Fallback(tracking.default_timezone, tracking.default_language)
    async with db.transaction() as session:
        timezone = (await shop_defaults(session, fallback)).timezone
        today = local_day(now, timezone)
        await repo.upsert_member(session, person, now)
        done = await birthdays.register(session, person.id, value, today=today, now=now)
    if done is None:  # pragma: no cover - upserted just above
        return
    if done.same:
        reply(outbox, message, texts.birthday_same(done.birthday))
    elif not done.changed and done.next_change is not None:
        reply(outbox, message, texts.birthday_too_soon(done.birthday, done.next_change))
    else:
        reply(outbox, message, texts.birthday_set(done.birthday, rules.days_until(value, today)))
