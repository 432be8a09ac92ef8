"""A scheduler that heals: claims carry their owner and a heartbeat; the runs of an
instance that is gone are taken over within seconds (at start and while running), a live
instance's never; a run that lost its claim stops and records nothing; a failing job
backs off and keeps trying; the same task never runs twice at the same time."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from scheduler.core import RunInterrupted, Scheduler, TaskRun
from storage.db import Database
from storage.models import ScheduledTask, TaskState

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# Short periods so the real-time tests take seconds; the defaults are 2 s / 10 s / 3 s.
FAST: dict[str, Any] = {
    "heartbeat_seconds": 0.2,
    "stale_after": timedelta(seconds=1.5),
    "sweep_seconds": 0.3,
    "lock_retry_seconds": 0.3,
}


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def wall() -> datetime:
    return datetime.now(UTC)


class Jobs:
    """Job bodies that record their runs and how many run at once, per task."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.release = asyncio.Event()
        self.fail_first: int = 0
        self.failures = 0

    async def _enter(self, run: TaskRun) -> None:
        self.started.append(run.key)
        self.now[run.key] += 1
        self.most[run.key] = max(self.most[run.key], self.now[run.key])

    async def quick(self, run: TaskRun) -> None:
        await self._enter(run)
        try:
            await asyncio.sleep(random.uniform(0, 0.05))
            self.finished.append(run.key)
        finally:
            self.now[run.key] -= 1

    async def held(self, run: TaskRun) -> None:
        """Runs until `release` is set."""
        await self._enter(run)
        try:
            await self.release.wait()
            self.finished.append(run.key)
        finally:
            self.now[run.key] -= 1

    async def flaky(self, run: TaskRun) -> None:
        await self._enter(run)
        try:
            if self.failures < self.fail_first:
                self.failures += 1
                raise ConnectionError(f"Telegram is away ({self.failures})")
            self.finished.append(run.key)
        finally:
            self.now[run.key] -= 1


def make(db: Database, jobs: Jobs, clock: Callable[[], datetime] = wall, **kw: Any) -> Scheduler:
    s = Scheduler(db, clock=clock, **kw)
    s.register("quick", jobs.quick)
    s.register("held", jobs.held)
    s.register("flaky", jobs.flaky)
    return s


async def row(db: Database, key: str) -> ScheduledTask:
    async with db.transaction(readonly=True) as session:
        found = await session.get(ScheduledTask, key)
    assert found is not None
    return found


async def until(check: Callable[[], Any], within: float = 10.0) -> float:
    """Wait until `check()` is true (it may be a coroutine function); the seconds taken."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return loop.time() - start
        if loop.time() - start > within:
            raise TimeoutError(f"not within {within}s")
        await asyncio.sleep(0.02)


async def claimed_by_the_dead(db: Database, key: str, at: datetime) -> None:
    """As a process that died in the middle of a run leaves its task."""
    async with db.transaction() as session:
        await session.execute(
            update(ScheduledTask)
            .where(ScheduledTask.key == key)  # type: ignore[arg-type]
            .values(
                state=TaskState.running,
                owner="gone-host:4242:deadbeef",
                claim="0123456789abcdef",
                claimed_at=at,
                heartbeat_at=at,
                attempts=1,
            )
        )


# -- with a fake clock: the rules ----------------------------------------------------------


async def test_a_live_heartbeat_keeps_the_claim_a_silent_one_loses_it(db: Database) -> None:
    clock = Clock()
    jobs = Jobs()
    a, b = make(db, jobs, clock), make(db, jobs, clock)
    await a.schedule(T0, "held", "k")
    a_run = asyncio.create_task(a.run_now("k"))
    await until(lambda: jobs.started == ["k"])
    first = await row(db, "k")
    assert (first.state, first.owner, first.heartbeat_at) == ("running", a.instance, T0)
    assert first.claim

    # a beats its heart every few seconds: however long the job runs, its claim stays.
    for _ in range(10):
        clock.now += timedelta(seconds=5)
        await a.heartbeat()
        assert await b.take_over() == []
        await b.sweep()
    assert jobs.started == ["k"] and (await row(db, "k")).owner == a.instance

    # a falls silent (its process is gone as far as anyone can tell): b takes over.
    clock.now += b.stale_after + timedelta(seconds=1)
    assert await b.take_over() == ["k"]
    taken = await row(db, "k")
    assert (taken.state, taken.owner, taken.claim) == ("pending", None, None)
    assert taken.run_at == clock.now  # the first time, at once
    assert "interrupted" in taken.last_error and a.instance in taken.last_error

    # a, should it still be alive, learns at its next beat and stops; b runs it again.
    await a.heartbeat()
    assert await a_run is None  # cancelled: it records nothing
    jobs.release.set()
    assert await b.run_now("k") == TaskState.done
    done = await row(db, "k")
    assert (done.state, done.owner, done.attempts) == ("done", None, 0)
    assert jobs.started == ["k", "k"] and jobs.finished == ["k"]
    assert set(jobs.most.values()) == {1}


async def test_a_run_that_lost_its_claim_is_stopped_and_records_nothing(db: Database) -> None:
    clock = Clock()
    jobs = Jobs()
    a, b = make(db, jobs, clock), make(db, jobs, clock)
    await a.schedule(T0, "held", "k")
    a_run = asyncio.create_task(a.run_now("k"))
    await until(lambda: jobs.started == ["k"])
    clock.now += timedelta(minutes=1)  # a's heartbeat stalled (an overloaded machine)
    assert await b.take_over() == ["k"]
    await a.heartbeat()  # a notices at once: its run is cancelled
    assert await a_run is None
    assert jobs.finished == [] and jobs.now["k"] == 0
    assert (await row(db, "k")).state == TaskState.pending  # b's to run, untouched by a


async def test_failing_job_backs_off_and_succeeds_after_70_seconds(db: Database) -> None:
    clock = Clock()
    jobs = Jobs()
    jobs.fail_first = 5
    s = make(db, jobs, clock)
    await s.schedule(T0, "flaky", "f")
    attempts_at: list[float] = []
    for _ in range(20):
        due = (await row(db, "f")).run_at
        clock.now = max(clock.now, due)
        attempts_at.append((clock.now - T0).total_seconds())
        assert await s.run_now("f") in (TaskState.pending, TaskState.done)
        if (await row(db, "f")).state == TaskState.done:
            break
        assert (await row(db, "f")).last_error.startswith("ConnectionError: Telegram is away")
        assert await s.run_now("f") is None  # not due again before its backoff
    # Five failures 10, 20, 40, 80 s apart (growing), then success on the sixth attempt,
    # past the 70 s the old three attempts covered.
    assert attempts_at == [0, 10, 30, 70, 150, 310]
    assert jobs.finished == ["f"]
    done = await row(db, "f")
    assert (done.state, done.attempts, done.last_error) == ("done", 0, "")


async def test_a_run_past_its_timeout_counts_as_a_failure(db: Database) -> None:
    jobs = Jobs()
    s = make(db, jobs, run_timeout=timedelta(seconds=0.2))
    await s.schedule(wall(), "held", "slow")
    assert await s.run_now("slow") == TaskState.pending
    after = await row(db, "slow")
    assert after.last_error.startswith("TimeoutError") and after.owner is None
    assert jobs.now["slow"] == 0  # the body was cancelled


# -- real time: instances, alarms, sweeps --------------------------------------------------


async def test_running_scheduler_takes_over_a_dead_instances_claim_within_seconds(
    db: Database,
) -> None:
    jobs = Jobs()
    live = make(db, jobs, **FAST)
    assert await live.start()
    try:
        await live.schedule(wall() + timedelta(hours=1), "quick", "orphan")
        await claimed_by_the_dead(db, "orphan", wall())  # it died a moment ago
        taken = await until(lambda: jobs.finished == ["orphan"])
        print(f"\ntaken over {taken:.2f} s after the claim (stale after 1.5 s)")
        assert taken < FAST["stale_after"].total_seconds() + 3

        async def done() -> bool:
            return (await row(db, "orphan")).state == TaskState.done

        await until(done, within=5)
    finally:
        await live.stop()


async def test_a_live_instances_claim_is_not_stolen(db: Database) -> None:
    jobs = Jobs()
    leader = make(db, jobs, **FAST)
    assert await leader.start()
    other = make(db, jobs, **FAST)
    try:
        assert not await other.start()  # the leader holds the lock: it waits, heart beating
        assert leader._aps is not None
        leader._aps.pause()  # only so that `other` is the one to claim the task below
        await other.schedule(wall(), "held", "k")
        other_run = asyncio.create_task(other.run_now("k"))
        await until(lambda: jobs.started == ["k"])
        leader._aps.resume()
        await asyncio.sleep(FAST["stale_after"].total_seconds() * 3)  # sweeps go by
        claim = await row(db, "k")
        assert (claim.state, claim.owner) == ("running", other.instance)
        assert jobs.started == ["k"]
        jobs.release.set()
        assert await other_run == TaskState.done
        assert jobs.finished == ["k"]
    finally:
        await other.stop()
        await leader.stop()


async def test_same_task_never_runs_twice_at_once(db: Database) -> None:
    """Three instances race for forty tasks: alarms, sweeps, direct runs."""
    jobs = Jobs()
    leader = make(db, jobs, **FAST)
    others = [make(db, jobs, **FAST) for _ in range(2)]
    assert await leader.start()
    keys = [f"t{i}" for i in range(40)]
    try:
        for k in keys:
            await leader.schedule(
                wall() + timedelta(milliseconds=random.randint(0, 500)), "quick", k
            )

        async def racer(s: Scheduler) -> None:
            while len(jobs.finished) < len(keys):
                for k in random.sample(keys, len(keys)):
                    await s.run_now(k)
                await s.take_over()
                await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(*(racer(s) for s in others)), timeout=30)
        await until(lambda: not leader._runs)
    finally:
        await leader.stop()
    assert sorted(jobs.finished) == sorted(keys)  # each once
    assert set(jobs.most.values()) == {1}
    assert Counter(jobs.started) == Counter(keys)


async def test_new_scheduler_takes_over_a_crashed_ones_runs_at_start(sqlite_url: str) -> None:
    """On SQLite the scheduling process holds a file lock the kernel releases only when
    that process ends: whoever gets it next takes the orphans over at once."""
    db = Database(sqlite_url)
    jobs = Jobs()
    old = make(db, jobs)  # the default 10 s staleness: the lock, not the age, decides
    try:
        assert await old.start()
        await old.schedule(wall(), "held", "k")
        await until(lambda: jobs.started == ["k"])
        waiting = make(db, jobs)
        assert not await waiting.start()  # a second process started by mistake
        await waiting.stop()
        # The old process dies: everything it ran stops, its lock goes with it, its
        # claim stays `running` with a fresh heartbeat.
        for task in [*old._background, *old._running]:
            task.cancel()
        await asyncio.sleep(0.05)
        assert old._aps is not None and old._lock_file is not None
        old._aps.shutdown(wait=False)
        old._lock_file.close()
        assert (await row(db, "k")).owner == old.instance
        fresh = make(db, jobs)
        jobs.release.set()
        loop = asyncio.get_running_loop()
        t = loop.time()
        assert await fresh.start()
        try:
            await until(lambda: jobs.finished == ["k"])
            taken = loop.time() - t
        finally:
            await fresh.stop()
        print(f"\nresumed {taken:.2f} s after the new scheduler started")
        assert taken < 3
        assert jobs.started == ["k", "k"]
        assert (await row(db, "k")).state == TaskState.done
    finally:
        await db.dispose()


async def test_stop_hands_back_runs_in_flight_for_the_next_start(db: Database) -> None:
    jobs = Jobs()
    s = make(db, jobs, stop_wait_seconds=0.2)
    assert await s.start()
    await s.schedule(wall(), "held", "k")
    await until(lambda: jobs.started == ["k"])
    await s.stop()
    back = await row(db, "k")
    assert (back.state, back.owner, back.claim) == ("pending", None, None)
    assert back.run_at <= wall()
    nxt = make(db, jobs)
    jobs.release.set()
    assert await nxt.start()
    try:
        await until(lambda: jobs.finished == ["k"])
    finally:
        await nxt.stop()
    assert (await row(db, "k")).state == TaskState.done


@pytest.mark.parametrize("attempts", [1, 2, 5])
async def test_a_task_that_keeps_killing_its_process_backs_off(db: Database, attempts: int) -> None:
    clock = Clock()
    s = make(db, Jobs(), clock)
    await s.schedule(T0, "quick", "k")
    async with db.transaction() as session:
        await session.execute(
            update(ScheduledTask)
            .where(ScheduledTask.key == "k")  # type: ignore[arg-type]
            .values(
                state=TaskState.running, owner="x", claim="c", heartbeat_at=T0, attempts=attempts
            )
        )
    clock.now = T0 + timedelta(minutes=1)
    assert await s.take_over() == ["k"]
    delay = (await row(db, "k")).run_at - clock.now
    assert delay == {1: timedelta(0), 2: timedelta(seconds=10), 5: timedelta(seconds=80)}[attempts]


async def test_a_run_cut_short_by_a_stop_is_handed_back_without_counting(db: Database) -> None:
    s = Scheduler(db, clock=wall)
    started = asyncio.Event()

    async def broadcast(run: TaskRun) -> None:
        started.set()
        for _window in range(1000):  # sends, a window at a time, until the stop
            if s.stopping:
                break
            await asyncio.sleep(0.01)
        raise RunInterrupted("stopped with 3 pond(s) still to send to")

    s.register("broadcast", broadcast)
    assert await s.start()
    await s.schedule(wall(), "broadcast", "b")
    await asyncio.wait_for(started.wait(), 10)
    await s.stop()
    back = await row(db, "b")
    assert (back.state, back.owner, back.attempts) == ("pending", None, 0)
    assert back.run_at <= wall() and "3 pond(s)" in back.last_error
