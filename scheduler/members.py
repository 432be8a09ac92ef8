"""Birthdays (F10) and points expiry (F14): two recurring tasks of the whole shop.

`members.birthdays` runs every few minutes (`BIRTHDAY_EVERY`, in UTC) and once at every
start (`ensure_tasks` makes it due at once): when the shop's local time is at or after
`birthday_hour` on a member's day (02-29 on 02-28 in other years), it pays the gift
(`birthday` ledger entry keyed per member and year) and leaves the greeting waiting on
the member, then sends every waiting greeting to a linked DM — and every expiry
reminder recorded and not yet answered (one whose DM was lost in a crash goes out at
the next start, not the next day). So a bot that was down at
the hour pays and greets when it is back the same day, a setting changed meanwhile
applies at once, and a run repeated (a retry, a restart) pays nobody twice: the key is
taken, the greeting is sent until its DM answers.

`points.expiry` runs daily at `EXPIRY_AT` in the shop's timezone (`catch_up`: a day the
bot was down at that time runs when it is back). With `points_expiry_days` set it
expires what is left of the lots through `today - N` and records one reminder per lot
expiring within `points_expiry_reminder_days`, then sends the unsent reminders (one DM
per member). See games/expiry.py for the rule and storage/expiry.py for the sums.

The shop's timezone and settings are the shop-wide defaults (`storage.settings`), with
the bot's configured timezone and language as their fallback (in the task's payload,
refreshed at every start).
"""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from games import birthday as birthday_rules
from games import expiry as rules
from games.checkin import zone
from games.settings import Effective
from scheduler.core import Scheduler, TaskRun, next_cron_time
from scheduler.deps import JobDeps
from services import members as sender
from services.texts import members as texts
from storage import birthdays, expiry
from storage.models import Job, ScheduledTask, TaskState
from storage.settings import Fallback, shop_defaults

log = logging.getLogger(__name__)

BIRTHDAY_EVERY = "*/5 * * * *"
EXPIRY_AT = "5 0 * * *"  # 00:05 local: the day's lots are settled
BATCH = 100  # members per write transaction of the expiry: each holds the write lock briefly


def _fallback(run: TaskRun) -> Fallback:
    payload = run.payload
    return Fallback(str(payload.get("timezone") or "UTC"), str(payload.get("language") or "zh"))


def _lang(code: str | None, shop: Effective) -> str:
    return (code or "").split("-")[0].lower() or shop.language


def setup(scheduler: Scheduler, deps: JobDeps) -> None:
    async def birthdays_due(run: TaskRun) -> None:
        async with deps.db.transaction(readonly=True) as session:
            shop = await shop_defaults(session, _fallback(run))
            local = run.now.astimezone(zone(shop.timezone))
            shop_rules = shop.settings
            due: list[int] = []
            if shop_rules.birthday_points > 0 and local.hour >= shop_rules.birthday_hour:
                due = await birthdays.celebrating(
                    session, birthday_rules.birthdays_on(local.date()), local.year
                )
        if due:
            async with deps.db.transaction() as session:
                paid = await birthdays.pay(
                    session, due, year=local.year, points=shop_rules.birthday_points, now=run.now
                )
            if paid:
                log.info("birthday gifts paid to %d member(s)", len(paid))
        async with deps.db.transaction(readonly=True) as session:
            waiting = await birthdays.waiting(session)
            unsent = await expiry.unsent(session, local.date())

        def text(g: birthdays.Greeting) -> str:
            with deps.language(_lang(g.language_code, shop)):
                return texts.birthday_greeting(g.first_name, g.points)

        sender.greet(deps.outbox, deps.db, waiting, text=text)
        remind(shop, unsent)

    def remind(shop: Effective, unsent: list[expiry.Reminder]) -> None:
        def text(r: expiry.Reminder) -> str:
            with deps.language(_lang(r.language_code, shop)):
                return texts.expiry_reminder(r.lots)

        sender.remind(deps.outbox, deps.db, unsent, text=text, clock=scheduler.clock)

    async def expire_points(run: TaskRun) -> None:
        async with deps.db.transaction(readonly=True) as session:
            shop = await shop_defaults(session, _fallback(run))
            lots_from = await expiry.epoch(session)
        tz = zone(shop.timezone)
        today = run.now.astimezone(tz).date()
        days = shop.settings.points_expiry_days
        if days > 0:
            through = rules.last_expired_day(today, days)
            lot_days = rules.reminder_days(today, days, shop.settings.points_expiry_reminder_days)
            cutoffs = {
                d: datetime.combine(d + timedelta(days=1), time(), tz)
                for d in rules.cutoffs(through, lot_days)
            }
            async with deps.db.transaction(readonly=True) as session:
                found = await expiry.sums(session, cutoffs, lots_from=lots_from)
            todo = [
                s.user_id for s in found
                if (p := rules.plan(s, through, lot_days)).expire or p.reminders
            ]
            expired = 0
            for i in range(0, len(todo), BATCH):
                batch = todo[i:i + BATCH]
                async with deps.db.transaction() as session:
                    await expiry.lock_members(session, batch)
                    plans = [
                        rules.plan(s, through, lot_days)
                        for s in await expiry.sums(
                            session, cutoffs, users=batch, lots_from=lots_from
                        )
                    ]
                    for plan in plans:
                        expired += await expiry.expire(session, plan, now=run.now)
                    await expiry.record_reminders(session, plans, days, now=run.now)
            if expired:
                log.info("points expired for %d member(s), lots through %s", expired, through)
        async with deps.db.transaction(readonly=True) as session:
            unsent = await expiry.unsent(session, today)
        remind(shop, unsent)

    scheduler.register(Job.birthdays, birthdays_due)
    scheduler.register(Job.points_expiry, expire_points)


async def ensure_tasks(scheduler: Scheduler, *, timezone: str, language: str) -> None:
    """At start: both tasks exist and are pending; the birthday check due at once (the
    catch-up of a bot that was down at the hour), the expiry at its next local time in
    the shop's current timezone unless a missed one is still due."""
    now = scheduler.clock()
    payload = {"timezone": timezone, "language": language}
    async with scheduler.db.transaction() as session:
        tz = (await shop_defaults(session, Fallback(timezone, language))).timezone
        wanted: list[tuple[str, str, str, datetime | None]] = [
            (Job.birthdays, BIRTHDAY_EVERY, "UTC", now),
            (Job.points_expiry, EXPIRY_AT, tz, None),
        ]
        for job, cron, zone_name, at in wanted:
            row = await session.get(ScheduledTask, job)
            nxt = next_cron_time(cron, zone_name, now)
            assert nxt is not None
            if row is None:
                await scheduler.schedule(
                    at or nxt, job, job, payload, session=session, cron=cron,
                    timezone=zone_name, catch_up=True,
                )
                continue
            values: dict[str, Any] = {"payload": payload, "cron": cron, "timezone": zone_name}
            if row.state == TaskState.pending:
                if at is not None and row.run_at > at:
                    values["run_at"] = at
                elif at is None and row.timezone != zone_name and row.run_at > now:
                    values["run_at"] = nxt
            elif row.state != TaskState.running:  # failed for good, cancelled: again
                values.update(state=TaskState.pending, run_at=at or nxt, attempts=0)
            await session.execute(
                update(ScheduledTask).where(col(ScheduledTask.key) == job).values(**values)
            )
