"""Birthday greetings and points expiry reminders to their members' DMs (F10, F14).

Both are written to the database before they are sent (a greeting waits on the member
row, a reminder is a `points_expiry_notice` row) and marked answered by the answer of
their DM (`Outbox.post`, keyed per member and year or lot, so one already on its way
is not queued twice). The scheduler's job sends what waits for linked DMs; `/start`
sends a member's own. A crash between the write and the answer sends it at the next
run; like coupon codes (services/shop_delivery.py), only a crash in the instant between
Telegram's answer and its record could repeat one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import date, datetime

from aiogram.methods import SendMessage
from aiogram.types import Message

from services.outbox import Outbox
from services.texts import members as texts
from storage import birthdays, expiry
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)


def greet(
    outbox: Outbox,
    db: Database,
    greetings: Iterable[birthdays.Greeting],
    *,
    text: Callable[[birthdays.Greeting], str] | None = None,
    force: bool = False,
) -> int:
    """Queue the greetings whose DM is linked (`force`: known to be); how many queued.
    `text` renders one (in its member's language); by default in the current one."""
    queued = 0
    for g in greetings:
        if not (force or g.dm_linked) or outbox.is_forbidden(g.user_id):
            continue
        body = text(g) if text else texts.birthday_greeting(g.first_name, g.points)

        async def record(_sent: Message, g: birthdays.Greeting = g) -> None:
            async with db.transaction() as session:
                await birthdays.greeted(session, g.user_id, g.year)

        if outbox.post(
            SendMessage(chat_id=g.user_id, text=body),
            key=f"birthday:{g.user_id}:{g.year}",
            record=record,
        ) is not None:
            queued += 1
    return queued


def remind(
    outbox: Outbox,
    db: Database,
    reminders: Iterable[expiry.Reminder],
    *,
    text: Callable[[expiry.Reminder], str] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> int:
    """Queue the expiry reminders (one DM per member); how many queued."""
    queued = 0
    for r in reminders:
        if not r.dm_linked or outbox.is_forbidden(r.user_id):
            continue
        days = sorted(r.lots)
        body = text(r) if text else texts.expiry_reminder(r.lots)

        async def record(_sent: Message, r: expiry.Reminder = r, days: list[date] = days) -> None:
            async with db.transaction() as session:
                await expiry.reminded(session, r.user_id, days, clock())

        if outbox.post(
            SendMessage(chat_id=r.user_id, text=body),
            key=f"expiry:{r.user_id}:{days[-1].isoformat()}",
            record=record,
        ) is not None:
            queued += 1
    return queued


async def deliver_waiting(outbox: Outbox, db: Database, user_id: int) -> int:
    """At `/start`: the member's greeting that waited for their DM."""
    async with db.transaction(readonly=True) as session:
        waiting = await birthdays.waiting(session, user_id)
    if waiting:
        log.info("delivering a birthday greeting to user %s", user_id)
    return greet(outbox, db, waiting, force=True)
