"""One scheduler leader on PostgreSQL: the advisory lock on a session of its own, checked
while held; a leader whose session is killed or closed stops at once and another takes
over within seconds; a run in flight is finished by exactly one instance."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from scheduler.core import SCHEDULER_LOCK_KEY
from storage.db import Database
from storage.models import TaskState
from tests.scheduler.test_healing import Jobs, make, row, until, wall

pytestmark = pytest.mark.postgres

# Short periods so the tests take seconds; the defaults are 2 s / 2 s / 3 s / 6 s.
QUICK: dict[str, Any] = {
    "heartbeat_seconds": 0.2,
    "sweep_seconds": 0.3,
    "lock_retry_seconds": 0.3,
    "lock_check_seconds": 0.3,
    "lock_check_timeout": 1.0,
    "dead_after": timedelta(seconds=1.5),
}


async def lock_holder(db: Database) -> int | None:
    """The backend pid of the session holding the scheduler lock."""
    async with db.transaction(readonly=True) as session:
        pid = await session.scalar(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND objsubid = 1 AND classid::bigint = :hi AND objid::bigint = :lo"
            ),
            {"hi": SCHEDULER_LOCK_KEY >> 32, "lo": SCHEDULER_LOCK_KEY & 0xFFFFFFFF},
        )
    return None if pid is None else int(pid)


async def kill_session(db: Database, pid: int) -> None:
    async with db.transaction() as session:
        await session.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})


async def test_one_leads_and_a_killed_session_hands_over_with_every_job_run_once(
    pg: Database,
) -> None:
    jobs = Jobs()
    a, b = make(pg, jobs, **QUICK), make(pg, jobs, **QUICK)
    try:
        assert await a.start()
        assert not await b.start()
        await asyncio.sleep(1)  # b keeps trying meanwhile; a keeps the lock
        assert a.leading and not b.leading
        pid = await lock_holder(pg)
        assert pid is not None
        # Tasks due before, during and after the switch.
        now = wall()
        keys = [f"t{i}" for i in range(12)]
        for i, k in enumerate(keys):
            await a.schedule(now + timedelta(milliseconds=250 * i), "quick", k)
        await asyncio.sleep(0.6)
        loop = asyncio.get_running_loop()
        t = loop.time()
        await kill_session(pg, pid)
        stepped_down = await until(lambda: not a.leading, within=5)
        took = await until(lambda: b.leading, within=10)
        print(f"\nold leader stopped after {stepped_down:.2f} s, new one led after "
              f"{loop.time() - t:.2f} s")
        assert took < 10
        assert await lock_holder(pg) not in (None, pid)
        await until(lambda: len(jobs.finished) == len(keys), within=10)
        await asyncio.sleep(1)  # nothing runs a second time
        assert Counter(jobs.finished) == Counter(keys)
        assert set(jobs.most.values()) == {1}
    finally:
        await b.stop()
        await a.stop()


async def test_a_closed_leader_hands_over_and_the_old_one_follows(pg: Database) -> None:
    jobs = Jobs()
    a, b = make(pg, jobs, **QUICK), make(pg, jobs, **QUICK)
    try:
        assert await a.start()
        assert not await b.start()
        await a.stop()  # its session ends: the lock is free
        await until(lambda: b.leading, within=5)
        c = make(pg, jobs, **QUICK)
        assert not await c.start()  # a third instance waits behind the new leader
        await c.stop()
        await b.schedule(wall(), "quick", "after")
        await until(lambda: jobs.finished == ["after"], within=5)
    finally:
        await b.stop()
        await a.stop()


async def test_a_run_in_flight_on_a_leader_that_loses_its_session_finishes_once(
    pg: Database,
) -> None:
    """The leader's session is killed mid-run: it stops the run and hands it back at once;
    the new leader runs it to the end. The job ran twice, never at the same time, and
    finished once."""
    jobs = Jobs()
    a, b = make(pg, jobs, **QUICK), make(pg, jobs, **QUICK)
    try:
        assert await a.start()
        assert not await b.start()
        await a.schedule(wall(), "held", "broadcast")
        await until(lambda: jobs.started == ["broadcast"])
        pid = await lock_holder(pg)
        assert pid is not None
        await kill_session(pg, pid)
        await until(lambda: b.leading, within=10)
        await until(lambda: jobs.started == ["broadcast", "broadcast"], within=10)
        jobs.release.set()
        await until(lambda: jobs.finished == ["broadcast"], within=5)

        async def done() -> bool:
            return (await row(pg, "broadcast")).state == TaskState.done

        await until(done, within=5)
        assert set(jobs.most.values()) == {1}
    finally:
        await b.stop()
        await a.stop()


async def test_a_job_that_ended_as_the_leader_stepped_down_is_recorded_not_run_again(
    pg: Database,
) -> None:
    """The job's body has ended and its outcome is being written when the leader loses
    its session: the step-down lets that write finish instead of cancelling it, so the
    new leader finds the task done and does not run it a second time."""
    jobs = Jobs()
    a, b = make(pg, jobs, **QUICK), make(pg, jobs, **QUICK)
    real_finish = a._finish
    writing = asyncio.Event()

    async def finish_after_the_step_down(key: str, claim: str, values: dict[str, Any]) -> bool:
        writing.set()
        await until(lambda: not a.active, within=10)  # the step-down has begun
        return await real_finish(key, claim, values)

    a._finish = finish_after_the_step_down  # type: ignore[method-assign]
    try:
        assert await a.start()
        assert not await b.start()
        pid = await lock_holder(pg)
        assert pid is not None
        await a.schedule(wall(), "quick", "edge")
        await asyncio.wait_for(writing.wait(), 5)
        assert jobs.finished == ["edge"]
        await kill_session(pg, pid)
        await until(lambda: b.leading, within=10)
        await asyncio.sleep(QUICK["dead_after"].total_seconds() + 1)  # an orphan by now
        assert (await row(pg, "edge")).state == TaskState.done
        assert jobs.started == ["edge"]
    finally:
        await b.stop()
        await a.stop()


async def test_a_dead_leaders_run_is_taken_over_within_seconds(pg: Database) -> None:
    """The leader's process dies mid-run (nothing of it runs any more, its sessions end):
    the new leader takes the lock within seconds and the run the moment the claim has
    been silent for `dead_after` — not at a later sweep, nor after the `stale_after` a
    non-leader would wait."""
    jobs = Jobs()
    a = make(pg, jobs, **QUICK)
    b = make(pg, jobs, **{**QUICK, "sweep_seconds": 30.0, "stale_after": timedelta(seconds=30)})
    try:
        assert await a.start()
        assert not await b.start()
        await a.schedule(wall(), "held", "broadcast")
        await until(lambda: jobs.started == ["broadcast"])
        loop = asyncio.get_running_loop()
        t = loop.time()
        # As SIGKILL: every task of a's stops where it is, its lock session ends.
        for task in [*a._background, *a._running]:
            task.cancel()
        assert a._aps is not None and a._lock_conn is not None
        a._aps.shutdown(wait=False)
        await a._lock_conn.invalidate()
        await until(lambda: b.leading, within=10)
        led = loop.time() - t
        await until(lambda: len(jobs.started) == 2, within=10)
        resumed = loop.time() - t
        print(f"\nnew leader after {led:.2f} s, run resumed after {resumed:.2f} s")
        assert resumed < QUICK["dead_after"].total_seconds() + 2
        jobs.release.set()
        await until(lambda: jobs.finished == ["broadcast"], within=5)
        assert set(jobs.most.values()) == {1}
    finally:
        a._started = False
        await b.stop()


async def test_two_instances_scheduling_one_key_at_once_record_it_once(pg: Database) -> None:
    """Both instances create the shop's recurring tasks at start: the second insert of a
    key waits for the first and does nothing (it used to fail the start with a
    duplicate key)."""
    jobs = Jobs()
    a, b = make(pg, jobs), make(pg, jobs)
    at = wall() + timedelta(hours=1)
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def first() -> bool:
        async with pg.transaction() as session:
            done = await a.schedule(at, "quick", "shop-task", session=session)
            first_in.set()
            await release.wait()  # the row is written, not yet committed
        return done

    async def second() -> bool:
        await first_in.wait()
        async with pg.transaction() as session:
            return await b.schedule(at, "quick", "shop-task", session=session)

    one = asyncio.create_task(first())
    two = asyncio.create_task(second())
    await asyncio.sleep(0.3)  # the second insert now waits on the first's row
    release.set()
    assert sorted([await one, await two]) == [False, True]
    assert (await row(pg, "shop-task")).state == TaskState.pending
