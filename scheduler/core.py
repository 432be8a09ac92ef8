"""Durable scheduling on APScheduler: `schedule(at, job, key)`.

The `scheduled_task` table is the source of truth; APScheduler is only the alarm clock.
A task is a row (key, job name, time, JSON payload of ids). `schedule()` writes the row —
inside the caller's unit of work when given its session, so a red packet and its expiry
are created together — and arms an APScheduler date job with the task's key as its
stable id once the row is committed. On start every pending row is armed again
(`replace_existing=True`: restarts never add copies), and a slow sweep catches anything
due that no alarm covers.

A run first *claims* its row: `UPDATE … SET state='running' WHERE key=… AND
state='pending' AND run_at <= now`. Only the process whose update changed the row runs
the job, so a task runs once even with two processes started by mistake. A job that
raises is retried a few times with a growing delay, then recorded as failed. A task due
while the bot was down runs late if it is a deadline (`catch_up=True`, the default);
a post (`catch_up=False`) runs within its grace window or is recorded as `missed`.

APScheduler marks a run done when it is submitted, so a crash in the middle of a job is
not retried by it: a row left `running` after a crash is handed back on the next start
(after `LEASE`), and jobs are written to be idempotent (ledger keys, stored progress).
On PostgreSQL only the instance holding an advisory lock runs the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from games.promo import crontab_weekdays
from storage.db import Database, after_commit
from storage.models import ScheduledTask, TaskState, utcnow

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=10)
SWEEP_SECONDS = 15
MAX_ATTEMPTS = 3
SCHEDULER_LOCK_KEY = 0x706F6E64_5343  # "pondSC"


@dataclass(frozen=True, slots=True)
class TaskRun:
    """What a job gets: the task's identity and payload (ids, never Telegram objects)."""

    key: str
    job: str
    payload: dict[str, Any]
    chat_id: int | None
    due: datetime
    now: datetime


JobFunc = Callable[[TaskRun], Awaitable[None]]


def next_cron_time(expr: str, tz: str, after: datetime) -> datetime | None:
    """The next time a crontab expression fires after `after`, in UTC.

    Weekdays follow crontab (0 or 7 = Sunday); they are turned into names first, since
    APScheduler numbers them from Monday = 0."""
    fields = expr.split()
    if len(fields) == 5:
        fields[4] = crontab_weekdays(fields[4])
    trigger = CronTrigger.from_crontab(" ".join(fields), timezone=ZoneInfo(tz))
    nxt = trigger.get_next_fire_time(None, after.astimezone(ZoneInfo(tz)) + timedelta(seconds=1))
    return None if nxt is None else nxt.astimezone(UTC)


@dataclass
class Scheduler:
    db: Database
    clock: Callable[[], datetime] = utcnow
    sweep_seconds: float = SWEEP_SECONDS
    jobs: dict[str, JobFunc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._aps: AsyncIOScheduler | None = None
        self._lock_conn: AsyncConnection | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.active = False

    # -- registry --------------------------------------------------------------------

    def register(self, name: str, func: JobFunc) -> None:
        if name in self.jobs and self.jobs[name] is not func:
            raise ValueError(f"job {name!r} registered twice")
        self.jobs[name] = func

    # -- the API the features use -------------------------------------------------------

    async def schedule(
        self,
        at: datetime,
        job: str,
        key: str,
        payload: dict[str, Any] | None = None,
        *,
        session: AsyncSession | None = None,
        chat_id: int | None = None,
        catch_up: bool = True,
        grace: timedelta = timedelta(minutes=10),
        cron: str | None = None,
        timezone: str | None = None,
    ) -> bool:
        """Record a task (once per key) and arm it after commit. False if the key exists."""
        if job not in self.jobs:
            raise KeyError(f"unknown job {job!r}")
        if at.tzinfo is None:
            raise ValueError("schedule() needs an aware datetime")
        row = ScheduledTask(
            key=key,
            job=job,
            run_at=at.astimezone(UTC),
            payload=dict(payload or {}),
            chat_id=chat_id,
            catch_up=catch_up,
            grace_seconds=int(grace.total_seconds()),
            cron=cron,
            timezone=timezone,
        )
        if session is None:
            async with self.db.transaction() as own:
                return await self._insert(own, row)
        return await self._insert(session, row)

    async def cancel(self, key: str, *, session: AsyncSession | None = None) -> bool:
        """Cancel a pending task; False if it is no longer pending."""
        stmt = (
            update(ScheduledTask)
            .where(
                col(ScheduledTask.key) == key,
                # A run in flight finishes, but a recurring task is not re-armed after it.
                col(ScheduledTask.state).in_([TaskState.pending, TaskState.running]),
            )
            .values(state=TaskState.cancelled, finished_at=self.clock())
        )
        if session is None:
            async with self.db.transaction() as own:
                done = bool((await own.execute(stmt)).rowcount == 1)  # type: ignore[attr-defined]
        else:
            done = bool((await session.execute(stmt)).rowcount == 1)  # type: ignore[attr-defined]
        if done and self._aps is not None and self._aps.get_job(key):
            self._aps.remove_job(key)
        return done

    async def _insert(self, session: AsyncSession, row: ScheduledTask) -> bool:
        if await session.get(ScheduledTask, row.key) is not None:
            return False
        session.add(row)
        await session.flush()
        key, at = row.key, row.run_at
        after_commit(session, lambda: self._arm(key, at))
        return True

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> bool:
        """Start if this process may run the scheduler; returns whether it does."""
        if not await self._take_lock():
            log.info("another instance runs the scheduler; this one only serves updates")
            return False
        self._aps = AsyncIOScheduler(timezone=UTC)
        self._aps.start()
        self.active = True
        await self._recover()
        self._aps.add_job(
            self.sweep,
            "interval",
            seconds=self.sweep_seconds,
            id="pondbot.sweep",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
        )
        return True

    async def stop(self) -> None:
        self.active = False
        if self._aps is not None:
            self._aps.pause()  # no new runs; let the ones in flight finish first
        if self._running:
            await asyncio.wait(list(self._running), timeout=10)
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        if self._lock_conn is not None:
            await self._lock_conn.close()
            self._lock_conn = None

    async def _take_lock(self) -> bool:
        if self.db.is_sqlite:
            return True  # one process serves a SQLite file; claims guard the rest
        conn = await self.db.engine.connect()
        got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEDULER_LOCK_KEY})
        await conn.commit()
        if got:
            self._lock_conn = conn  # held for the life of the process
            return True
        await conn.close()
        return False

    async def _recover(self) -> None:
        """Hand back interrupted runs, then arm every pending task."""
        now = self.clock()
        async with self.db.transaction() as session:
            await session.execute(
                update(ScheduledTask)
                .where(
                    col(ScheduledTask.state) == TaskState.running,
                    col(ScheduledTask.claimed_at) < now - LEASE,
                )
                .values(state=TaskState.pending)
            )
            rows = (
                await session.execute(
                    select(col(ScheduledTask.key), col(ScheduledTask.run_at)).where(
                        col(ScheduledTask.state) == TaskState.pending
                    )
                )
            ).all()
        for key, run_at in rows:
            self._arm(key, run_at)
        log.info("scheduler armed %d pending task(s)", len(rows))

    def _arm(self, key: str, at: datetime) -> None:
        if self._aps is None:
            return  # not the scheduling instance: the owner's sweep will find it
        self._aps.add_job(
            self._fire,
            DateTrigger(run_date=max(at, self.clock())),
            args=[key],
            id=key,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    async def sweep(self) -> None:
        """Run whatever is due and not running (alarms lost, rows added elsewhere)."""
        now = self.clock()
        async with self.db.transaction(readonly=True) as session:
            keys = (
                (
                    await session.execute(
                        select(col(ScheduledTask.key))
                        .where(
                            col(ScheduledTask.state) == TaskState.pending,
                            col(ScheduledTask.run_at) <= now,
                        )
                        .order_by(col(ScheduledTask.run_at))
                        .limit(200)
                    )
                )
                .scalars()
                .all()
            )
        for key in keys:
            await self._fire(key)

    # -- one run -----------------------------------------------------------------------

    async def _fire(self, key: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self.run_now(key)
        finally:
            if task is not None:
                self._running.discard(task)

    async def run_now(self, key: str) -> str | None:
        """Claim and run one task if it is due; returns its new state (None: not ours)."""
        now = self.clock()
        async with self.db.transaction() as session:
            claimed = await session.execute(
                update(ScheduledTask)
                .where(
                    col(ScheduledTask.key) == key,
                    col(ScheduledTask.state) == TaskState.pending,
                    col(ScheduledTask.run_at) <= now,
                )
                .values(
                    state=TaskState.running,
                    claimed_at=now,
                    attempts=col(ScheduledTask.attempts) + 1,
                )
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            row = await session.get(ScheduledTask, key)
            assert row is not None
            late = now - row.run_at
            if not row.catch_up and late > timedelta(seconds=row.grace_seconds):
                row.state = TaskState.missed
                row.finished_at = now
                session.add(row)
                nxt = self._next(row, now)
                if nxt is not None:
                    row.state, row.run_at = TaskState.pending, nxt
                    after_commit(session, lambda: self._arm(key, nxt))
                log.warning("task %s missed: %s late", key, late)
                return TaskState.missed
            run = TaskRun(row.key, row.job, dict(row.payload), row.chat_id, row.run_at, now)
            attempts, cron_row = row.attempts, row
        func = self.jobs.get(run.job)
        try:
            if func is None:
                raise LookupError(f"no job named {run.job!r}")
            await func(run)
        except Exception as exc:  # a failed job must not stop the scheduler
            log.exception("task %s failed (attempt %d)", key, attempts)
            return await self._after_failure(key, attempts, exc)
        return await self._after_success(cron_row)

    def _next(self, row: ScheduledTask, now: datetime) -> datetime | None:
        if not row.cron:
            return None
        return next_cron_time(row.cron, row.timezone or "UTC", max(now, row.run_at))

    async def _after_success(self, row: ScheduledTask) -> str:
        now = self.clock()
        nxt = self._next(row, now)
        async with self.db.transaction() as session:
            values: dict[str, Any] = {"finished_at": now, "last_error": "", "attempts": 0}
            if nxt is None:
                values["state"] = TaskState.done
            else:
                values.update(state=TaskState.pending, run_at=nxt)
            result = await session.execute(
                update(ScheduledTask)
                .where(
                    col(ScheduledTask.key) == row.key, col(ScheduledTask.state) == TaskState.running
                )
                .values(**values)
            )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return TaskState.cancelled  # cancelled while it ran
        if nxt is not None:
            self._arm(row.key, nxt)
            return TaskState.pending
        return TaskState.done

    async def _after_failure(self, key: str, attempts: int, exc: Exception) -> str:
        now = self.clock()
        retry = attempts < MAX_ATTEMPTS
        retry_at = now + timedelta(seconds=5 * 2**attempts)
        async with self.db.transaction() as session:
            await session.execute(
                update(ScheduledTask)
                .where(col(ScheduledTask.key) == key, col(ScheduledTask.state) == TaskState.running)
                .values(
                    state=TaskState.pending if retry else TaskState.failed,
                    run_at=retry_at if retry else col(ScheduledTask.run_at),
                    finished_at=None if retry else now,
                    last_error=type(exc).__name__[:255],
                )
            )
        if retry:
            self._arm(key, retry_at)
            return TaskState.pending
        return TaskState.failed

    async def state_of(self, key: str) -> str | None:
        async with self.db.transaction(readonly=True) as session:
            row = await session.get(ScheduledTask, key)
            return None if row is None else row.state
