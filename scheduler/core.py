"""Durable scheduling on APScheduler: `schedule(at, job, key)`.

The `scheduled_task` table is the source of truth; APScheduler is only the alarm clock.
A task is a row (key, job name, time, JSON payload of ids). `schedule()` writes the row —
inside the caller's unit of work when given its session, so a red packet and its expiry
are created together — and arms an APScheduler date job with the task's key as its
stable id once the row is committed. On start every pending row is armed again
(`replace_existing=True`: restarts never add copies), and a sweep every few seconds
catches anything due that no alarm covers.

A run first *claims* its row: `UPDATE … SET state='running', owner=<this instance>,
claim=<a fresh token>, heartbeat_at=now WHERE key=… AND state='pending' AND run_at <= now`.
Only the process whose update changed the row runs the job, so a task runs once even
with two processes started by mistake. What the run ends with is recorded only under
its own token: a run that lost its claim cannot overwrite the run that took it over.
A task due while the bot was down runs late if it is a deadline (`catch_up=True`, the
default); a post (`catch_up=False`) runs within its grace window or is recorded as
`missed`.

Healing. Every process start is an *instance* with a random id. While it runs tasks it
refreshes their `heartbeat_at` every `HEARTBEAT_SECONDS`; a claim whose heartbeat is
older than `STALE_AFTER` belongs to an instance that is gone, and the sweep (and the
start) hands it back and runs it again — within seconds, not after a lease. Only one
instance schedules: on PostgreSQL the one holding an advisory lock, on SQLite the one
holding a file lock beside the database. The kernel releases that file lock only when
its process ends, so on SQLite the instance that gets it knows every other claim is
orphaned and takes them over at once. The others wait and try for the lock again. A run
whose heartbeat finds its claim taken is cancelled.

Leadership on PostgreSQL. An advisory lock belongs to a database session, so the leader
holds it on a connection of its own, outside the pool (a pooled connection would go back
with the lock still held). Every `LOCK_CHECK_SECONDS` the leader asks on that connection
whether the lock is still its own; when the answer is no, or does not come within
`LOCK_CHECK_TIMEOUT` (the connection was killed, the server restarted, the network is
gone), it stops scheduling at once: no new runs, its runs in flight cancelled and handed
back, and it waits for the lock like any other instance. The others try for the lock
every `LOCK_RETRY_SECONDS`; PostgreSQL frees it the moment the leader's session ends
(a SIGKILLed process's socket is closed by the kernel), so a new leader takes over within
seconds. Holding the lock, it knows no other instance leads, and an instance that stops
leading cancels its runs within `LOCK_CHECK_SECONDS + LOCK_CHECK_TIMEOUT`: another
instance's claim silent for `DEAD_AFTER` (longer than that, with the heartbeat's period)
is taken over then — the new leader watches for that moment — rather than after
`STALE_AFTER`: a dead leader's broadcast resumes within 10 s.

A job that raises is retried with exponential backoff (`retry_delay`: 10 s doubling to
30 min) for about a day (`MAX_ATTEMPTS`), each failure logged in one line with its
reason; only then is the task `failed`. A run longer than `RUN_TIMEOUT` is a failure.

APScheduler marks a run done when it is submitted, so a crash in the middle of a job is
not retried by it: the row is left `running` and is taken over as above, so every job
is written to be idempotent (ledger keys, guarded state changes, stored progress).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    create_async_engine,
)
from sqlalchemy.pool import NullPool
from sqlmodel import col

from games.checkin import zone
from games.promo import crontab_weekdays, within_grace
from services.logs import SecretFilter
from storage.db import Database, after_commit
from storage.dialect import insert_for
from storage.models import ScheduledTask, TaskState, utcnow

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0  # how often an instance says its runs are alive
STALE_AFTER = timedelta(seconds=10)  # a claim not refreshed for this long is orphaned
SWEEP_SECONDS = 3.0
LOCK_RETRY_SECONDS = 2.0  # a waiting instance tries for the scheduler lock this often
LOCK_CHECK_SECONDS = 2.0  # the leader checks its lock is still its own this often
LOCK_CHECK_TIMEOUT = 3.0  # a check not answered within this means the lock is lost
# While this instance holds the PostgreSQL lock, another's claim silent this long is
# orphaned (> HEARTBEAT_SECONDS + LOCK_CHECK_SECONDS + LOCK_CHECK_TIMEOUT: a former
# leader has stopped it by then, even one cut off from the database since its last beat).
DEAD_AFTER = timedelta(seconds=8)
RETRY_FIRST = timedelta(seconds=10)
RETRY_CAP = timedelta(minutes=30)
MAX_ATTEMPTS = 56  # 10 s, 20 s … 21 min, then every 30 min: about 24 h of retries
RUN_TIMEOUT = timedelta(hours=1)  # a run still going after this is a failure
STOP_WAIT_SECONDS = 10.0
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
    trigger = CronTrigger.from_crontab(" ".join(fields), timezone=zone(tz))
    nxt = trigger.get_next_fire_time(None, after.astimezone(zone(tz)) + timedelta(seconds=1))
    return None if nxt is None else nxt.astimezone(UTC)


LOOK_BACK = timedelta(days=400)  # a yearly crontab's last time is still found


def latest_time(cron: str, timezone: str, now: datetime) -> datetime | None:
    """The latest time the crontab fires at or before `now` (None: not within a year)."""
    back = timedelta(seconds=1)
    while back <= LOOK_BACK:
        at = next_cron_time(cron, timezone, now - back)
        if at is not None and at <= now:
            while (nxt := next_cron_time(cron, timezone, at)) is not None and nxt <= now:
                at = nxt
            return at
        back *= 2
    return None


def firing_time(at: datetime, cron: str | None, timezone: str, run: TaskRun) -> datetime:
    """Which time of a schedule a run fires: a one-off's own time `at`, a crontab's
    latest time at or before now in `timezone` (the task's time if none within a year).

    Worked out from the clock, never from the task's time: a retry runs later than its
    time, and a run taken over after a crash or handed back at a stop has its task's
    time reset to when it runs again — a job keying its work by that time would do the
    same firing twice."""
    if cron:
        return latest_time(cron, timezone, run.now) or run.due
    return at


def retry_delay(attempts: int) -> timedelta:
    """How long a task waits after its `attempts`-th run failed (10 s doubling, ≤ 30 min)."""
    doublings = min(max(attempts - 1, 0), 20)
    return min(RETRY_FIRST * (1 << doublings), RETRY_CAP)


def takeover_delay(attempts: int) -> timedelta:
    """How long a task waits after its `attempts`-th run died with its process: the first
    time it runs again at once; a task that keeps taking its process down backs off."""
    return timedelta(0) if attempts <= 1 else retry_delay(attempts - 1)


def new_instance_id() -> str:
    """This process start's name in claims: host and pid for people, random for safety."""
    host = socket.gethostname().split(".")[0][:32] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


_SCRUB = SecretFilter()
# What a claim holds, cleared when its run ends.
_RELEASED: dict[str, Any] = {"owner": None, "claim": None, "heartbeat_at": None}


def failure_reason(exc: BaseException) -> str:
    """One line saying why a run failed (what operators see, and the log), token-free."""
    detail = " ".join(str(exc).split())
    reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return _SCRUB.scrub(reason)[:255]


class RunInterrupted(Exception):
    """Raised by a job that stopped early because the scheduler is stopping (see
    `Scheduler.stopping`), having recorded its progress: the task is handed back to run
    again at the next start, and the run does not count as a failed attempt."""


@dataclass
class _Run:
    """A run in flight in this instance."""

    claim: str
    job: asyncio.Future[None]
    lost: bool = False  # its claim was taken over: the run was cancelled


@dataclass(frozen=True, slots=True)
class Orphan:
    key: str
    owner: str | None
    claim: str | None
    heartbeat_at: datetime | None
    attempts: int


def wall_clock_alarms() -> AsyncIOScheduler:
    """The alarm clock that wakes runs: APScheduler's, which reads the wall clock itself."""
    return AsyncIOScheduler(timezone=UTC)


@dataclass
class Scheduler:
    db: Database
    clock: Callable[[], datetime] = utcnow
    sweep_seconds: float = SWEEP_SECONDS
    jobs: dict[str, JobFunc] = field(default_factory=dict)
    instance: str = field(default_factory=new_instance_id)
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    stale_after: timedelta = STALE_AFTER
    lock_retry_seconds: float = LOCK_RETRY_SECONDS
    lock_check_seconds: float = LOCK_CHECK_SECONDS
    lock_check_timeout: float = LOCK_CHECK_TIMEOUT
    dead_after: timedelta = DEAD_AFTER
    max_attempts: int = MAX_ATTEMPTS
    run_timeout: timedelta = RUN_TIMEOUT
    stop_wait_seconds: float = STOP_WAIT_SECONDS
    # What wakes a task's run at its time; `pondbot demo` gives one on its virtual time.
    alarms: Callable[[], AsyncIOScheduler] = wall_clock_alarms

    def __post_init__(self) -> None:
        self._aps: AsyncIOScheduler | None = None
        self._lock_engine: AsyncEngine | None = None
        self._lock_conn: AsyncConnection | None = None
        self._leading: set[asyncio.Task[None]] = set()  # the leader's own loops
        # Spawned each time this instance takes the lead (the webhook's registration).
        self.on_lead: list[Callable[[], Awaitable[None]]] = []
        self._lock_file: IO[bytes] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._runs: dict[str, _Run] = {}
        # Outcomes of finished jobs being recorded: a step-down or stop waits for them
        # instead of cancelling them, or the job would run again on the next leader.
        self._recording: set[asyncio.Future[str | None]] = set()
        self._firing: Counter[str] = Counter()  # keys whose alarm is running now
        self._background: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopping = False
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
        # One statement that does nothing on an existing key: two instances scheduling
        # the same key at once (both at start, say) record it once, neither fails.
        values = row.model_dump()
        done = await session.execute(
            insert_for(session, ScheduledTask).values(values).on_conflict_do_nothing(
                index_elements=["key"]
            )
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            return False
        key, at = row.key, row.run_at
        after_commit(session, lambda: self._arm(key, at))
        return True

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> bool:
        """Start scheduling if this instance may; returns whether it does now. One that
        may not (another instance schedules) keeps trying, and takes over when it can."""
        if self._started:
            return self.active
        self._started, self._stopping = True, False
        self._spawn(self._heartbeats())
        if await self._take_lock():
            await self._lead()
            return True
        log.info("another instance runs the scheduler; this one waits to take over")
        self._spawn(self._wait_for_lock())
        return False

    @property
    def leading(self) -> bool:
        """Whether this instance runs the scheduler now (what the health check reports)."""
        return self.active

    async def _lead(self) -> None:
        self._aps = self.alarms()
        self._aps.start()
        self.active = True
        if self._lock_conn is not None:
            self._spawn(self._guard(), leading=True)
        await self._recover()
        self._spawn(self._ticks(), leading=True)
        if self._lock_conn is not None:
            self._spawn(self._watch_silent(), leading=True)
        for hook in self.on_lead:
            self._spawn(hook())
        log.info("scheduler running as instance %s", self.instance)

    async def _wait_for_lock(self) -> None:
        while self._started and not self.active:
            await asyncio.sleep(self.lock_retry_seconds)
            try:
                if await self._take_lock():
                    log.warning("instance %s takes over the scheduler", self.instance)
                    await self._lead()
            except Exception as exc:  # the database is away: try again later
                await self._drop_lock_conn()
                log.warning("scheduler lock: %s", failure_reason(exc))

    async def _guard(self) -> None:
        """The leader's check that its lock is still its own; on loss, step down."""
        while self.active:
            await asyncio.sleep(self.lock_check_seconds)
            try:
                held = await self._lock_held()
                why = "" if held else "the lock is no longer held"
            except Exception as exc:  # the connection is gone, or the check hangs
                held, why = False, failure_reason(exc)
            if not held and self.active:
                await self._step_down(why)
                return

    async def _step_down(self, why: str) -> None:
        """Stop scheduling at once: no new runs, the runs in flight cancelled and handed
        back (the new leader runs them), and wait for the lock again."""
        log.error("scheduler lock lost (%s): this instance stops scheduling", why)
        self.active = False
        me = asyncio.current_task()
        for task in list(self._leading):
            if task is not me:
                task.cancel()
        if self._aps is not None:
            self._aps.pause()
        if self._running:
            await self._abandon()
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        await self._drop_lock_conn()
        if self._started:
            self._spawn(self._wait_for_lock())

    @property
    def stopping(self) -> bool:
        """Whether the scheduler is stopping: a long job (a broadcast) hands nothing new
        over, finishes what is on the wire and raises `RunInterrupted`."""
        return self._stopping

    async def stop(self) -> None:
        self._started = False
        self._stopping = True
        self.active = False
        if self._aps is not None:
            self._aps.pause()  # no new runs; let the ones in flight finish first
        if self._running:
            await asyncio.wait(list(self._running), timeout=self.stop_wait_seconds)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background))
        if self._running:
            await self._abandon()
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        await self._drop_lock_conn()
        if self._lock_engine is not None:
            await self._lock_engine.dispose()
            self._lock_engine = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the file lock
            self._lock_file = None

    async def _abandon(self) -> None:
        """Runs still going at the end of a stop: cancel them and hand their tasks back
        at once, so the next start runs them without waiting for the heartbeat to age."""
        claims = [run.claim for run in self._runs.values()]
        for task in list(self._running):
            task.cancel()
        await asyncio.wait(list(self._running), timeout=2)
        if self._recording:  # jobs that ended: their outcome is written, not handed back
            await asyncio.wait(list(self._recording), timeout=2)
        if not claims:
            return
        now = self.clock()
        with contextlib.suppress(Exception):  # if the database is away they age instead
            async with self.db.transaction() as session:
                await session.execute(
                    update(ScheduledTask)
                    .where(
                        col(ScheduledTask.claim).in_(claims),
                        col(ScheduledTask.state) == TaskState.running,
                    )
                    .values(
                        state=TaskState.pending,
                        run_at=now,
                        owner=None,
                        claim=None,
                        heartbeat_at=None,
                        last_error="interrupted by a shutdown",
                    )
                )
            log.warning("scheduler stopped with %d run(s) in flight: handed back", len(claims))

    def _spawn(self, coro: Awaitable[None], *, leading: bool = False) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        if leading:
            self._leading.add(task)
            task.add_done_callback(self._leading.discard)

    async def _take_lock(self) -> bool:
        if self.db.is_sqlite:
            return self._take_file_lock()
        async with asyncio.timeout(self.lock_check_timeout + 5):
            if self._lock_conn is None:
                if self._lock_engine is None:
                    # Its own engine without a pool: closing the connection ends the session.
                    self._lock_engine = create_async_engine(self.db.url, poolclass=NullPool)
                conn = await self._lock_engine.connect()
                self._lock_conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = await self._lock_conn.scalar(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEDULER_LOCK_KEY}
            )
        return bool(got)

    async def _lock_held(self) -> bool:
        """Whether this instance's lock session still holds the scheduler lock."""
        conn = self._lock_conn
        if conn is None:
            return False
        async with asyncio.timeout(self.lock_check_timeout):
            held = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND objsubid = 1"
                    " AND classid::bigint = :hi AND objid::bigint = :lo"
                ),
                {"hi": SCHEDULER_LOCK_KEY >> 32, "lo": SCHEDULER_LOCK_KEY & 0xFFFFFFFF},
            )
        return bool(held)

    async def _drop_lock_conn(self) -> None:
        """Close the lock session (ending it frees the lock) without waiting on a dead
        server."""
        conn, self._lock_conn = self._lock_conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.lock_check_timeout):
                await conn.invalidate()

    def _take_file_lock(self) -> bool:
        """On SQLite, one scheduler per database file: a lock beside it that the kernel
        drops when its holder's process ends, however it ends."""
        name = self.db.url.database
        if not name or name == ":memory:" or name.startswith("file:"):
            return True  # a private database: nobody else can see it
        path = Path(name).expanduser().resolve()
        handle = path.with_name(path.name + "-scheduler.lock").open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    @property
    def exclusive(self) -> bool:
        """Whether holding the lock proves every other instance's claim orphaned: on
        SQLite the file lock is released only when its process ends. (A PostgreSQL
        session can lose its lock while its process lives on, so there the heartbeat
        decides.)"""
        return self.active and self.db.is_sqlite

    @property
    def _silent_for(self) -> timedelta:
        """How long another instance's claim may be silent before it is orphaned: on
        PostgreSQL, while this instance leads, `dead_after` (see the module doc)."""
        if self.active and self._lock_conn is not None:
            return min(self.dead_after, self.stale_after)
        return self.stale_after

    async def _watch_silent(self) -> None:
        """Just after taking the lead: take over each run of a former leader the moment
        it has been silent for `dead_after`, rather than at the sweep after."""
        while self.active:
            due = self.sweep_seconds
            try:
                mine = [run.claim for run in self._runs.values()]
                async with self.db.transaction(readonly=True) as session:
                    oldest = await session.scalar(
                        select(func.min(col(ScheduledTask.heartbeat_at))).where(
                            col(ScheduledTask.state) == TaskState.running,
                            col(ScheduledTask.heartbeat_at).is_not(None),
                            col(ScheduledTask.claim).not_in(mine),
                        )
                    )
                if oldest is None:
                    return
                due = (oldest + self._silent_for - self.clock()).total_seconds()
            except Exception as exc:  # the database is away: the sweeps carry on
                log.warning("scheduler watch: %s", failure_reason(exc))
            await asyncio.sleep(min(max(due, 0.0) + 0.05, self.sweep_seconds))
            with contextlib.suppress(Exception):  # as above
                await self.take_over()

    async def _recover(self) -> None:
        """Take over orphaned runs, then arm every pending task."""
        await self.take_over(everyone_else=self.exclusive, arm=False)  # armed below
        async with self.db.transaction(readonly=True) as session:
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

    async def _due(self, now: datetime) -> list[tuple[str, datetime]]:
        async with self.db.transaction(readonly=True) as session:
            rows = (
                await session.execute(
                    select(col(ScheduledTask.key), col(ScheduledTask.run_at))
                    .where(
                        col(ScheduledTask.state) == TaskState.pending,
                        col(ScheduledTask.run_at) <= now,
                    )
                    .order_by(col(ScheduledTask.run_at))
                    .limit(200)
                )
            ).all()
        return [(str(k), at) for k, at in rows]

    async def sweep(self) -> None:
        """Take over orphaned runs, then run whatever is due, one after the other."""
        await self.take_over()
        for key, _at in await self._due(self.clock()):
            await self._fire(key)

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            await self._tick()

    async def _tick(self) -> None:
        """The periodic sweep: orphans taken over, due tasks armed (each alarm runs its
        task on its own, so a long broadcast does not hold the others up)."""
        try:
            taken = set(await self.take_over())  # armed already
            for key, at in await self._due(self.clock()):
                if key not in taken and key not in self._firing:
                    self._arm(key, at)
        except Exception as exc:  # the database is away: the next tick tries again
            log.warning("scheduler sweep: %s", failure_reason(exc))

    # -- healing -----------------------------------------------------------------------

    async def orphans(self, *, everyone_else: bool = False) -> list[Orphan]:
        """Claims whose owner is gone: heartbeat older than `stale_after` (or, with
        `everyone_else`, every claim but this instance's own runs)."""
        now = self.clock()
        query = select(
            col(ScheduledTask.key),
            col(ScheduledTask.owner),
            col(ScheduledTask.claim),
            col(ScheduledTask.heartbeat_at),
            col(ScheduledTask.attempts),
        ).where(col(ScheduledTask.state) == TaskState.running)
        if not everyone_else:
            query = query.where(
                or_(
                    col(ScheduledTask.heartbeat_at).is_(None),
                    col(ScheduledTask.heartbeat_at) < now - self._silent_for,
                )
            )
        async with self.db.transaction(readonly=True) as session:
            rows = (await session.execute(query.limit(500))).all()
        mine = {run.claim for run in self._runs.values()}
        return [Orphan(*r) for r in rows if r[2] is None or r[2] not in mine]

    async def take_over(self, *, everyone_else: bool = False, arm: bool = True) -> list[str]:
        """Hand orphaned runs back (their own backoff if they keep dying) and arm them;
        the keys taken over."""
        found = await self.orphans(everyone_else=everyone_else)
        if not found:
            return []
        now = self.clock()
        taken: list[tuple[str, datetime]] = []
        async with self.db.transaction() as session:
            for o in found:
                at = now + takeover_delay(o.attempts)
                claim_is = (
                    col(ScheduledTask.claim).is_(None)
                    if o.claim is None
                    else col(ScheduledTask.claim) == o.claim
                )
                result = await session.execute(
                    update(ScheduledTask)
                    .where(
                        col(ScheduledTask.key) == o.key,
                        col(ScheduledTask.state) == TaskState.running,
                        claim_is,
                    )
                    .values(
                        state=TaskState.pending,
                        run_at=at,
                        owner=None,
                        claim=None,
                        heartbeat_at=None,
                        last_error=f"interrupted: instance {o.owner or '?'} stopped"[:255],
                    )
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    taken.append((o.key, at))
        for key, at in taken if arm else []:
            self._arm(key, at)
        for o in found:
            if any(key == o.key for key, _ in taken):
                silent = "never" if o.heartbeat_at is None else str(now - o.heartbeat_at)
                log.warning(
                    "task %s taken over from instance %s (last heartbeat: %s ago, attempt %d)",
                    o.key,
                    o.owner or "?",
                    silent,
                    o.attempts,
                )
        return [key for key, _ in taken]

    async def heartbeat(self) -> None:
        """Say this instance's runs are alive; cancel those whose claim was taken over."""
        runs = dict(self._runs)
        if not runs:
            return
        claims = [r.claim for r in runs.values()]
        now = self.clock()
        async with self.db.transaction() as session:
            result = await session.execute(
                update(ScheduledTask)
                .where(
                    col(ScheduledTask.claim).in_(claims),
                    col(ScheduledTask.state) == TaskState.running,
                )
                .values(heartbeat_at=now)
            )
            if result.rowcount == len(claims):  # type: ignore[attr-defined]
                return
            kept = set(
                (
                    await session.execute(
                        select(col(ScheduledTask.claim)).where(col(ScheduledTask.claim).in_(claims))
                    )
                )
                .scalars()
                .all()
            )
        for key, run in runs.items():
            if run.claim not in kept and not run.job.done():
                log.warning("task %s: this run lost its claim to another instance; stopped", key)
                run.lost = True
                run.job.cancel()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.heartbeat()
            except Exception as exc:  # the database is away: the next beat tries again
                log.warning("scheduler heartbeat: %s", failure_reason(exc))

    # -- one run -----------------------------------------------------------------------

    async def _fire(self, key: str) -> None:
        if self._started and not self.active:
            return  # stepped down (or waiting for the lock): the leader runs it
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        self._firing[key] += 1
        try:
            await self.run_now(key)
        except Exception as exc:  # the database is away: the sweep finds the task later
            log.warning("task %s not run: %s", key, failure_reason(exc))
        finally:
            self._firing[key] -= 1
            if self._firing[key] <= 0:
                del self._firing[key]
            if task is not None:
                self._running.discard(task)

    async def run_now(self, key: str) -> str | None:
        """Claim and run one task if it is due; returns its new state (None: not ours)."""
        now = self.clock()
        claim = secrets.token_hex(8)
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
                    owner=self.instance,
                    claim=claim,
                    claimed_at=now,
                    heartbeat_at=now,
                    attempts=col(ScheduledTask.attempts) + 1,
                )
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            row = await session.get(ScheduledTask, key)
            assert row is not None
            late = now - row.run_at
            grace = timedelta(seconds=row.grace_seconds)
            if not row.catch_up and not within_grace(row.run_at, now, grace):
                nxt = self._next(row, now)
                values: dict[str, Any] = {
                    "state": TaskState.missed,
                    "finished_at": now,
                    "attempts": 0,
                    **_RELEASED,
                }
                if nxt is not None:
                    values.update(state=TaskState.pending, run_at=nxt)
                    after_commit(session, lambda: self._arm(key, nxt))
                await session.execute(
                    update(ScheduledTask)
                    .where(col(ScheduledTask.key) == key, col(ScheduledTask.claim) == claim)
                    .values(**values)
                )
                log.warning("task %s missed: %s late", key, late)
                return TaskState.missed
            run = TaskRun(row.key, row.job, dict(row.payload), row.chat_id, row.run_at, now)
            attempts = row.attempts
        func = self.jobs.get(run.job)
        if func is None:
            return await self._after_failure(key, claim, attempts, LookupError(run.job))
        job: asyncio.Future[None] = asyncio.ensure_future(func(run))
        me = _Run(claim, job)
        self._runs[key] = me
        try:
            await asyncio.wait_for(job, self.run_timeout.total_seconds())
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if me.lost and (current is None or not current.cancelling()):
                return None  # taken over: the new owner records what happens
            raise
        except TimeoutError:
            slow = TimeoutError(f"still running after {self.run_timeout}")
            return await self._after_failure(key, claim, attempts, slow)
        except RunInterrupted as exc:
            return await self._hand_back(key, claim, exc)
        except Exception as exc:  # a failed job must not stop the scheduler
            return await self._after_failure(key, claim, attempts, exc)
        finally:
            if self._runs.get(key) is me:
                del self._runs[key]
        recording = asyncio.ensure_future(self._after_success(row, claim))
        self._recording.add(recording)
        recording.add_done_callback(self._recorded)
        return await asyncio.shield(recording)

    def _recorded(self, recording: asyncio.Future[str | None]) -> None:
        self._recording.discard(recording)
        exc = None if recording.cancelled() else recording.exception()
        if exc is not None:
            # Raised to the run too, unless the run was cancelled meanwhile: the task
            # then stays claimed until the sweep hands it over as an orphan.
            log.debug("task outcome not recorded: %s", failure_reason(exc))

    def _next(self, row: ScheduledTask, now: datetime) -> datetime | None:
        if not row.cron:
            return None
        return next_cron_time(row.cron, row.timezone or "UTC", max(now, row.run_at))

    async def _finish(self, key: str, claim: str, values: dict[str, Any]) -> bool:
        """Record a run's outcome if the run still holds its claim."""
        async with self.db.transaction() as session:
            result = await session.execute(
                update(ScheduledTask)
                .where(
                    col(ScheduledTask.key) == key,
                    col(ScheduledTask.claim) == claim,
                    col(ScheduledTask.state) == TaskState.running,
                )
                .values(**values, **_RELEASED)
            )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def _not_finished(self, key: str, claim: str) -> str | None:
        """Why an outcome was not recorded: cancelled while it ran, or taken over (None)."""
        async with self.db.transaction(readonly=True) as session:
            row = await session.get(ScheduledTask, key)
        if row is not None and row.claim == claim and row.state == TaskState.cancelled:
            return TaskState.cancelled
        return None

    async def _after_success(self, row: ScheduledTask, claim: str) -> str | None:
        now = self.clock()
        nxt = self._next(row, now)
        values: dict[str, Any] = {"finished_at": now, "last_error": "", "attempts": 0}
        if nxt is None:
            values["state"] = TaskState.done
        else:
            values.update(state=TaskState.pending, run_at=nxt)
        if not await self._finish(row.key, claim, values):
            return await self._not_finished(row.key, claim)
        if nxt is not None:
            self._arm(row.key, nxt)
            return TaskState.pending
        return TaskState.done

    async def _after_failure(
        self, key: str, claim: str, attempts: int, exc: BaseException
    ) -> str | None:
        now = self.clock()
        reason = failure_reason(exc)
        give_up = attempts >= self.max_attempts
        delay = retry_delay(attempts)
        values: dict[str, Any] = {"last_error": reason}
        if give_up:
            values.update(state=TaskState.failed, finished_at=now)
        else:
            values.update(state=TaskState.pending, run_at=now + delay)
        if not await self._finish(key, claim, values):
            return await self._not_finished(key, claim)
        if give_up:
            log.error("task %s failed for good after %d attempts: %s", key, attempts, reason)
            return TaskState.failed
        log.warning(
            "task %s failed (attempt %d of %d), next in %s: %s",
            key,
            attempts,
            self.max_attempts,
            delay,
            reason,
        )
        self._arm(key, now + delay)
        return TaskState.pending

    async def _hand_back(self, key: str, claim: str, exc: RunInterrupted) -> str | None:
        """A run cut short by a stop: pending again at once, the attempt not counted."""
        values: dict[str, Any] = {
            "state": TaskState.pending,
            "run_at": self.clock(),
            "attempts": col(ScheduledTask.attempts) - 1,
            "last_error": failure_reason(exc),
        }
        if not await self._finish(key, claim, values):
            return await self._not_finished(key, claim)
        log.info("task %s handed back for the next start: %s", key, exc)
        return TaskState.pending

    async def state_of(self, key: str) -> str | None:
        async with self.db.transaction(readonly=True) as session:
            row = await session.get(ScheduledTask, key)
            return None if row is None else row.state
