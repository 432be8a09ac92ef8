"""A recurring promotion post fired once per time, through the real Dispatcher and
scheduler on a clock the test moves: when the process dies after the post's run
committed its deliveries but before the scheduler recorded the run's success, the run
taken over (or handed back at a stop) runs again with its task's time reset to then —
and finds its firing done: every pond gets one copy and has one delivery row."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from scheduler.core import Scheduler
from storage import promo as store
from storage import repo
from storage.db import Database
from storage.migrate import aupgrade
from storage.models import ScheduledTask, TaskState
from tests.dispatcher.conftest import OPERATOR_ID, running
from tests.dispatcher.test_promo import Clock, Rig, local, schedule, seed_ponds
from tests.rig.client import person, private_chat

PONDS = [-1007000000000 - i for i in range(4)]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'pond.db'}"
    await aupgrade(url)
    db = Database(url)
    clock = Clock()
    scheduler = Scheduler(db, clock=clock)
    async with running(db, scheduler) as h:
        yield Rig(h, db, clock, scheduler)
    await db.dispose()


@pytest.mark.parametrize("how", ["taken_over", "handed_back"])
async def test_a_firing_run_again_after_its_commit_sends_no_second_copy(
    rig: Rig, how: str
) -> None:
    await seed_ponds(rig.db, PONDS)
    async with rig.db.transaction() as s:  # no frequency cap: it would hide a second copy
        for chat_id in PONDS:
            await repo.change_pond_settings(s, chat_id, promo_cap_days=0)
    op_user = person(OPERATOR_ID, "Op")
    dm = rig.h.member(private_chat(op_user), op_user)
    post = await schedule(rig, dm, "/promo every 0 20 * * * 今晚直播")
    assert post.id is not None
    key = store.post_key(post.id)
    at = local("2026-10-20")  # 20:00 in Shanghai
    await rig.tick(at)
    assert {p: [m.text for m in rig.sent(p)] for p in PONDS} == {p: ["今晚直播"] for p in PONDS}

    # The process dies right after the run's commit: the scheduler never recorded its
    # success, so the task still says it is running (its time unchanged)...
    later = at + timedelta(minutes=1)
    async with rig.db.transaction() as s:
        values = {"run_at": at, "finished_at": None, "attempts": 1}
        if how == "taken_over":  # ... and a later sweep takes the silent claim over
            values.update(state=TaskState.running, owner="gone:1:x", claim="c", heartbeat_at=at)
        else:  # ... or a stop handed it back, to run again at once
            values.update(state=TaskState.pending, run_at=later)
        await s.execute(
            update(ScheduledTask).where(ScheduledTask.key == key).values(**values)  # type: ignore[arg-type]
        )
    await rig.tick(later)  # it runs again, a minute after its time
    await rig.tick(later + timedelta(minutes=1))

    copies = {p: [m.text for m in rig.sent(p)].count("今晚直播") for p in PONDS}
    assert copies == {p: 1 for p in PONDS}
    rows = await rig.deliveries()
    assert Counter(r.chat_id for r in rows) == {p: 1 for p in PONDS}
    assert {r.occurrence.replace(tzinfo=at.tzinfo) for r in rows} == {at}
    task = await rig.task(key)
    assert task is not None and task.state == TaskState.pending
    assert task.run_at.replace(tzinfo=at.tzinfo) == at + timedelta(days=1)
