"""The durable scheduler: claims, lateness, retries with backoff, cron, recovery,
restarts."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from scheduler.core import (
    MAX_ATTEMPTS,
    RETRY_CAP,
    Scheduler,
    TaskRun,
    next_cron_time,
    retry_delay,
)
from storage.db import Database
from storage.models import ScheduledTask, TaskState

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make(db: Database, clock: Clock) -> tuple[Scheduler, list[TaskRun]]:
    runs: list[TaskRun] = []

    async def job(run: TaskRun) -> None:
        await asyncio.sleep(0.01)
        runs.append(run)

    s = Scheduler(db, clock=clock)
    s.register("test.job", job)
    return s, runs


async def test_task_written_with_the_callers_unit_of_work(db: Database) -> None:
    s, _ = make(db, Clock())
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await s.schedule(T0, "test.job", "k-rolled-back", session=session)
            raise RuntimeError("the feature failed")
    assert await s.state_of("k-rolled-back") is None
    async with db.transaction() as session:
        assert await s.schedule(T0, "test.job", "k1", {"id": 7}, session=session)
        assert not await s.schedule(T0, "test.job", "k1", session=session)  # same key: once
    assert await s.state_of("k1") == TaskState.pending


async def test_runs_once_when_due_even_under_concurrent_claims(db: Database) -> None:
    clock = Clock()
    s, runs = make(db, clock)
    await s.schedule(T0 + timedelta(minutes=5), "test.job", "k", {"id": 1})
    assert await s.run_now("k") is None  # not due yet
    clock.now = T0 + timedelta(minutes=5)
    other, other_runs = make(db, clock)  # a second process started by mistake
    results = await asyncio.gather(*(x.run_now("k") for x in [s, other] * 5))
    assert sorted(r for r in results if r) == [TaskState.done]
    assert len(runs) + len(other_runs) == 1
    assert (runs or other_runs)[0].payload == {"id": 1}
    assert await s.run_now("k") is None


async def test_late_posts_are_missed_but_deadlines_still_run(db: Database) -> None:
    clock = Clock()
    s, runs = make(db, clock)
    await s.schedule(T0, "test.job", "post", catch_up=False, grace=timedelta(minutes=10))
    await s.schedule(T0, "test.job", "post-in-grace", catch_up=False, grace=timedelta(hours=2))
    await s.schedule(T0, "test.job", "deadline")
    clock.now = T0 + timedelta(hours=1)  # the bot was down for an hour
    await s.sweep()
    assert await s.state_of("post") == TaskState.missed
    assert await s.state_of("post-in-grace") == TaskState.done
    assert await s.state_of("deadline") == TaskState.done
    assert sorted(r.key for r in runs) == ["deadline", "post-in-grace"]


async def test_failing_job_backs_off_for_a_day_then_is_recorded_failed(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    s = Scheduler(db, clock=clock)
    calls: list[datetime] = []

    async def broken(run: TaskRun) -> None:
        calls.append(run.now)
        raise ValueError("boom\nsecond line")

    s.register("broken", broken)
    await s.schedule(T0, "broken", "b")
    caplog.set_level(logging.WARNING, logger="scheduler.core")
    state, error = str(TaskState.pending), ""
    for _ in range(MAX_ATTEMPTS + 3):
        await s.sweep()
        async with db.transaction(readonly=True) as session:
            row = await session.get(ScheduledTask, "b")
        assert row is not None
        state, error = row.state, row.last_error
        if state != TaskState.pending:
            break
        clock.now = row.run_at  # the next attempt's time
    assert state == TaskState.failed
    assert error == "ValueError: boom second line"
    assert len(calls) == MAX_ATTEMPTS
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(calls)]
    assert gaps[:5] == [10, 20, 40, 80, 160]
    assert gaps == sorted(gaps) and max(gaps) == RETRY_CAP.total_seconds()
    assert calls[-1] - calls[0] >= timedelta(hours=24)
    # One line per failure, with the reason and no traceback.
    lines = [r for r in caplog.records if r.name == "scheduler.core"]
    assert len(lines) == MAX_ATTEMPTS
    assert all(r.exc_info is None and "boom" in r.getMessage() for r in lines)
    assert "\n" not in lines[0].getMessage()
    assert "failed for good" in lines[-1].getMessage()


def test_retry_delays_double_to_the_cap() -> None:
    first = [10, 20, 40, 80, 160, 320, 640, 1280, 1800]
    assert [retry_delay(n).total_seconds() for n in range(1, 10)] == first
    assert retry_delay(10_000) == RETRY_CAP
    total = sum((retry_delay(n) for n in range(1, MAX_ATTEMPTS)), timedelta())
    assert timedelta(hours=23) < total < timedelta(hours=26)


async def test_cron_in_the_ponds_timezone(db: Database) -> None:
    # 20:00 in Shanghai is 12:00 UTC.
    assert next_cron_time("0 20 * * *", "Asia/Shanghai", T0) == T0 + timedelta(days=1)
    assert next_cron_time("0 20 * * *", "Asia/Shanghai", T0 - timedelta(minutes=1)) == T0
    clock = Clock(T0)
    s, runs = make(db, clock)
    await s.schedule(
        T0, "test.job", "daily", cron="0 20 * * *", timezone="Asia/Shanghai", catch_up=False
    )
    await s.sweep()
    await s.sweep()
    assert len(runs) == 1
    async with db.transaction(readonly=True) as session:
        row = await session.get(ScheduledTask, "daily")
    assert row is not None and row.state == TaskState.pending
    assert row.run_at == T0 + timedelta(days=1)


async def test_interrupted_run_is_handed_back_on_start(db: Database) -> None:
    clock = Clock()
    s, _runs = make(db, clock)
    await s.schedule(T0, "test.job", "crashy")
    async with db.transaction() as session:  # as if the process died mid-job
        await session.execute(
            update(ScheduledTask)
            .where(ScheduledTask.key == "crashy")  # type: ignore[arg-type]
            .values(state=TaskState.running, claimed_at=T0)
        )
    clock.now = T0 + timedelta(hours=1)
    fresh, fresh_runs = make(db, clock)
    assert await fresh.start()
    try:
        await fresh.sweep()
    finally:
        await fresh.stop()
    assert [r.key for r in fresh_runs] == ["crashy"]
    assert await fresh.state_of("crashy") == TaskState.done


async def test_real_alarm_fires_once_and_restarts_add_no_copies(db: Database) -> None:
    s, runs = make(db, Clock(datetime.now(UTC)))
    s.clock = lambda: datetime.now(UTC)
    assert await s.start()
    try:
        await s.schedule(datetime.now(UTC) + timedelta(seconds=0.3), "test.job", "soon")
        await s._recover()  # a second arming of the same rows (as after a restart)
        await s._recover()
        assert s._aps is not None
        assert len([j for j in s._aps.get_jobs() if j.id == "soon"]) == 1
        for _ in range(100):
            if runs:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        await s.stop()
    assert [r.key for r in runs] == ["soon"]


async def test_cancel(db: Database) -> None:
    clock = Clock()
    s, runs = make(db, clock)
    await s.schedule(T0, "test.job", "c")
    assert await s.cancel("c")
    assert not await s.cancel("c")
    await s.sweep()
    assert runs == [] and await s.state_of("c") == TaskState.cancelled


def test_cron_weekdays_follow_crontab_numbering() -> None:
    # 2026-11-01 is a Sunday. "5" in crontab is Friday (APScheduler alone reads Saturday).
    friday = next_cron_time("0 20 * * 5", "UTC", T0)
    assert friday is not None and friday.strftime("%a %H:%M") == "Fri 20:00"
    sunday = next_cron_time("0 20 * * 0", "UTC", T0)
    assert sunday is not None and sunday.date() == T0.date()
    assert next_cron_time("0 20 * * 7", "UTC", T0) == sunday
    assert next_cron_time("0 20 * * fri", "UTC", T0) == friday


async def test_recurring_task_cancelled_while_running_is_not_rearmed(db: Database) -> None:
    clock = Clock()
    s = Scheduler(db, clock=clock)

    async def cancels_itself(run: TaskRun) -> None:
        assert await s.cancel(run.key)  # an operator cancels while the post goes out

    s.register("self.cancel", cancels_itself)
    await s.schedule(T0, "self.cancel", "r", cron="0 20 * * *", timezone="UTC")
    assert await s.run_now("r") == TaskState.cancelled
    assert await s.state_of("r") == TaskState.cancelled
