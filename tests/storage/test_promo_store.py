"""Broadcast progress and campaigns on SQLite and PostgreSQL: one row per (occurrence,
pond) however often a firing is repeated, concurrent claims never share a row, rows
left `sending` by a dead run become `unknown` and are never claimed again; the scheduled
work `/promo list` flags (stuck, retrying, failed)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import update

from games.campaign import DayRange, Phase
from scheduler.core import Scheduler, TaskRun
from services.i18n import make_i18n
from services.texts import promo as t
from storage import promo as store
from storage import repo
from storage.db import Database
from storage.models import DeliveryState, PondStatus, PondTrust, ScheduledTask, TaskState

OCC = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T0 = OCC
PONDS = [-1007000000000 - i for i in range(40)]


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def seed(db: Database) -> None:
    async with db.transaction() as s:
        for chat_id in PONDS:
            await repo.upsert_pond(s, chat_id, title=f"P{chat_id}", chat_type="supergroup")
            await repo.set_trust(s, chat_id, PondTrust.operator)  # ponds of the shop
        await repo.set_pond_status(s, PONDS[0], PondStatus.inactive)


async def test_deliveries_once_per_occurrence_and_pond(db: Database) -> None:
    await seed(db)
    for _ in range(2):  # the same firing recorded twice (a re-run of the post job)
        async with db.transaction() as s:
            await store.create_deliveries(s, 1, OCC, PONDS, capped=frozenset({PONDS[1]}))
    async with db.transaction(readonly=True) as s:
        counts = await store.delivery_counts(s, 1, OCC)
    assert counts == {"pending": 39, "capped": 1}


async def test_concurrent_claims_never_share_a_row(db: Database) -> None:
    await seed(db)
    async with db.transaction() as s:
        await store.create_deliveries(s, 1, OCC, PONDS)

    async def claimer() -> list[int]:
        got: list[int] = []
        while True:
            async with db.transaction() as s:
                batch = await store.claim_deliveries(s, 1, OCC, 3)
            if not batch:
                return got
            got += [c.delivery_id for c in batch]
            await asyncio.sleep(0)

    results = await asyncio.gather(*(claimer() for _ in range(4)))
    claimed = [i for r in results for i in r]
    assert len(claimed) == len(set(claimed)) == 39  # the inactive pond is skipped
    async with db.transaction(readonly=True) as s:
        assert await store.delivery_counts(s, 1, OCC) == {"queued": 39, "skipped": 1}


async def test_rows_of_a_dead_run_are_never_claimed_again(db: Database) -> None:
    await seed(db)
    async with db.transaction() as s:
        await store.create_deliveries(s, 1, OCC, PONDS[1:6])
        first = await store.claim_deliveries(s, 1, OCC, 3)
    claim = first[0].claim
    async with db.transaction() as s:
        # Two requests issued (one answered and recorded), the third still queued.
        assert await store.mark_sending(s, first[0].delivery_id, claim)
        assert await store.mark_sending(s, first[1].delivery_id, claim)
        await store.finish_deliveries(s, [(first[0].delivery_id, DeliveryState.sent, 9)])
    # The process dies here; on the next run:
    async with db.transaction() as s:
        assert await store.release_orphans(s, 1, OCC) == (1, 1)
        rest = await store.claim_deliveries(s, 1, OCC, 10)
    assert {c.pond.chat_id for c in rest} == {PONDS[3], *PONDS[4:6]}
    assert rest[0].claim != claim
    async with db.transaction() as s:
        # The dead run's hook (its process still alive) finds the row no longer its own.
        assert not await store.mark_sending(s, first[2].delivery_id, claim)
        # Nor does its late answer overwrite the new run's rows.
        await store.finish_deliveries(
            s, [(first[2].delivery_id, DeliveryState.skipped, None)], claim=claim
        )
    async with db.transaction(readonly=True) as s:
        counts = await store.delivery_counts(s, 1, OCC)
    assert counts == {"sent": 1, "unknown": 1, "queued": 3}
    async with db.transaction() as s:
        # A request never issued is put back (a stop), one issued is not.
        await store.finish_deliveries(
            s, [(c.delivery_id, DeliveryState.pending, None) for c in rest], claim=rest[0].claim
        )
        assert await store.delivery_counts(s, 1, OCC) == {"sent": 1, "unknown": 1, "pending": 3}
        await store.finish_deliveries(s, [(first[1].delivery_id, DeliveryState.pending, None)])
        assert await store.delivery_counts(s, 1, OCC) == {"sent": 1, "unknown": 1, "pending": 3}


async def test_campaigns_per_pond_and_shop_wide(db: Database) -> None:
    await seed(db)
    async with db.transaction() as s:
        assert await store.save_campaign(s, store.ALL_PONDS, "双十一", date(2026, 11, 11), by=1)
        assert await store.save_campaign(s, PONDS[1], "店庆", date(2026, 12, 1), by=1)
        assert not await store.save_campaign(s, PONDS[1], "店庆", date(2026, 12, 2), by=1)
        row = await store.find_campaign(s, [PONDS[1], store.ALL_PONDS], "店庆")
        assert row is not None
        await store.set_phase(s, row, Phase.warmup, DayRange(date(2026, 11, 20), date(2026, 12, 1)))
    async with db.transaction(readonly=True) as s:
        by_scope = await store.campaigns_by_scope(s, [PONDS[1], PONDS[2]])
    assert [c.name for c in by_scope[PONDS[2]]] == ["双十一"]
    [shared, own] = by_scope[PONDS[1]]
    assert shared.name == "双十一" and own.sale_day == date(2026, 12, 2)
    assert own.phase_on(date(2026, 11, 25)) == Phase.warmup


async def test_troubles_list_what_is_stuck_retrying_or_failed(db: Database) -> None:
    """What `/promo list` shows besides the posts: a run whose owner went silent, a task
    retrying after a failure (with its next attempt and error), one that gave up."""
    clock = Clock()
    s = Scheduler(db, clock=clock, max_attempts=2)

    async def ok(run: TaskRun) -> None:
        return None

    async def broken(run: TaskRun) -> None:
        raise ConnectionError("Telegram is away " + "x" * 300)

    s.register("guess.close", broken)
    s.register("red_packet.expire", ok)
    s.register("vote.close", ok)
    pond, other = PONDS[1], PONDS[2]
    await s.schedule(T0, "guess.close", "g1", {"round_id": 7}, chat_id=pond)  # retrying
    await s.schedule(T0, "guess.close", "g2", {"round_id": 8}, chat_id=other)  # will fail
    await s.schedule(T0, "red_packet.expire", "r1", {"packet_id": 3}, chat_id=pond)  # stuck
    await s.schedule(T0, "vote.close", "v1", {"vote_id": 4}, chat_id=pond)  # fine: done
    await s.schedule(T0 + timedelta(hours=1), "vote.close", "v2", {"vote_id": 5}, chat_id=pond)
    assert await s.run_now("g1") == TaskState.pending
    for _ in range(2):
        clock.now += timedelta(minutes=5)
        await s.run_now("g2")
    assert await s.run_now("v1") == TaskState.done
    async with db.transaction() as session:
        await session.execute(
            update(ScheduledTask)
            .where(ScheduledTask.key == "r1")  # type: ignore[arg-type]
            .values(state="running", owner="gone:1:x", claim="c", heartbeat_at=T0, attempts=1)
        )

    async with db.transaction(readonly=True) as session:
        here = await store.task_troubles(
            session, pond, everywhere=False, now=clock.now, stale_after=timedelta(seconds=10)
        )
        everywhere = await store.task_troubles(
            session, None, everywhere=True, now=clock.now, stale_after=timedelta(seconds=10)
        )
    assert [(x.key, x.trouble) for x in here] == [("r1", "stuck"), ("g1", "retrying")]
    assert [(x.key, x.trouble) for x in everywhere] == [
        ("r1", "stuck"),
        ("g2", "failed"),
        ("g1", "retrying"),
    ]
    retrying = here[1]
    assert retrying.at == T0 + timedelta(seconds=10) and retrying.attempts == 1
    assert retrying.error.startswith("ConnectionError: Telegram is away")

    i18n = make_i18n("zh")
    for lang in ("en", "zh"):
        with i18n.context(), i18n.use_locale(lang):
            lines = [
                t.trouble(
                    x.trouble,
                    t.task_label(x.job, x.payload, x.key),
                    x.attempts,
                    x.at,
                    x.error,
                    "Asia/Shanghai",
                )
                for x in everywhere
            ]
            text = t.listing([(1, "tomorrow", "here", "Hello", "pending")], lines)
        assert "#3" in lines[0] and "#8" in lines[1] and "#7" in lines[2]
        assert "20:00" in lines[2]  # the next attempt, 12:00:10 UTC, in the pond's time
        assert "xxxxx…" in lines[2] and "x" * 100 not in lines[2]  # the error, short
        assert all(line in text for line in lines) and "#1" in text
    assert "猜价格" in lines[2]
