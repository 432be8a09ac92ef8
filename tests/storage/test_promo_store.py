"""Broadcast progress and campaigns on SQLite and PostgreSQL: one row per (occurrence,
pond) however often a firing is repeated, concurrent claims never share a row, rows
left `sending` by a dead run become `unknown` and are never claimed again."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

from games.campaign import DayRange, Phase
from storage import promo as store
from storage import repo
from storage.db import Database
from storage.models import DeliveryState, PondStatus

OCC = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PONDS = [-1007000000000 - i for i in range(40)]


async def seed(db: Database) -> None:
    async with db.transaction() as s:
        for chat_id in PONDS:
            await repo.upsert_pond(s, chat_id, title=f"P{chat_id}", chat_type="supergroup")
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
        assert await store.delivery_counts(s, 1, OCC) == {"sending": 39, "skipped": 1}


async def test_rows_of_a_dead_run_are_never_claimed_again(db: Database) -> None:
    await seed(db)
    async with db.transaction() as s:
        await store.create_deliveries(s, 1, OCC, PONDS[1:6])
        first = await store.claim_deliveries(s, 1, OCC, 2)
    async with db.transaction() as s:
        await store.finish_deliveries(s, [(first[0].delivery_id, DeliveryState.sent, 9)])
    # The process dies here; on the next run:
    async with db.transaction() as s:
        assert await store.orphans_to_unknown(s, 1, OCC) == 1
        rest = await store.claim_deliveries(s, 1, OCC, 10)
    assert {c.pond.chat_id for c in rest} == set(PONDS[3:6])
    async with db.transaction(readonly=True) as s:
        counts = await store.delivery_counts(s, 1, OCC)
    assert counts == {"sent": 1, "unknown": 1, "sending": 3}


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
