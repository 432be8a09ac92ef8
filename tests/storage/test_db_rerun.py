"""Deadlocks on PostgreSQL: `Database.run_in_transaction` runs a transaction the server
aborted (deadlock, serialization failure) again from the start; a paid lottery draw and a
/redeem of the same member and item take their rows in one order and never deadlock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from games import lottery as rules
from games.shop import ItemArgs
from storage import ledger, lottery, repo, shop
from storage.batch import SEEN, BatchWriter, SeenRequest
from storage.db import Database, must_rerun
from storage.models import LedgerKind

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
DAY = date(2026, 12, 6)
POND = -100900


async def test_a_deadlock_victim_is_run_again_and_both_commit(pg: Database) -> None:
    async with pg.transaction() as s:
        await s.execute(text("CREATE TABLE crossing (id int PRIMARY KEY, n int NOT NULL)"))
        await s.execute(text("INSERT INTO crossing VALUES (1, 0), (2, 0)"))
    first_locked = {1: asyncio.Event(), 2: asyncio.Event()}
    runs = {1: 0, 2: 0}

    def body(first: int, second: int) -> object:
        async def fn(session: AsyncSession) -> int:
            runs[first] += 1
            bump = text("UPDATE crossing SET n = n + 1 WHERE id = :id")
            await session.execute(bump, {"id": first})
            first_locked[first].set()
            await first_locked[second].wait()  # both hold one row: they wait in a circle
            await session.execute(bump, {"id": second})
            return first

        return fn

    done = await asyncio.gather(
        pg.run_in_transaction(body(1, 2)),  # type: ignore[arg-type]
        pg.run_in_transaction(body(2, 1)),  # type: ignore[arg-type]
    )
    assert sorted(done) == [1, 2]
    assert sorted(runs.values()) == [1, 2]  # the server aborted one; it ran again
    async with pg.transaction(readonly=True) as s:
        rows = (await s.execute(text("SELECT n FROM crossing ORDER BY id"))).scalars().all()
    assert list(rows) == [2, 2]  # each bumped both rows once: the aborted run left nothing


async def test_other_errors_and_the_last_attempt_are_raised(pg: Database) -> None:
    calls = 0

    async def broken(session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        await session.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(DBAPIError) as caught:
        await pg.run_in_transaction(broken)
    assert calls == 1 and not must_rerun(caught.value)

    async def always_aborted(session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        await session.execute(text(
            "DO $$ BEGIN RAISE EXCEPTION 'aborted' USING ERRCODE = '40001'; END $$"
        ))

    calls = 0
    with pytest.raises(DBAPIError) as caught:
        await pg.run_in_transaction(always_aborted, attempts=3, pause=0.001)
    assert calls == 3 and must_rerun(caught.value)


async def test_paid_draws_and_redemptions_of_one_member_never_deadlock(pg: Database) -> None:
    """Each member at once draws (paid, the prize is the item) and redeems the item: the
    draw takes the prize, then the item, then the member's row, as a redemption takes
    the item, then the member's row — no circle, so no transaction is aborted."""
    people = range(7001, 7031)
    async with pg.transaction() as s:
        await repo.upsert_pond(s, POND, title="P", chat_type="supergroup")
        for uid in people:
            await repo.upsert_member(s, repo.UserInfo(uid, f"M{uid}"))
            await ledger.award(s, user_id=uid, amount=100, kind=LedgerKind.admin_adjust,
                               key=f"seed:{uid}")
        item, _ = await shop.add_item(
            s, ItemArgs(10, 1000, "满100减10", limit=0), source_key="op:item", created_by=1,
            now=NOW,
        )
        await lottery.add_prize(s, rules.parse_prize(f"1 - item={item.id} Coupon"),
                                source_key="op:prize", created_by=1, now=NOW)

    async def a_draw(uid: int) -> None:
        async with pg.transaction() as s:
            await lottery.draw(s, user_id=uid, chat_id=POND, day=DAY, source_key=f"d:{uid}",
                               free_per_day=0, cost=10, rng=random.Random(uid), now=NOW)

    async def a_redemption(uid: int) -> None:
        async with pg.transaction() as s:
            await shop.redeem(s, item_id=item.id, user_id=uid, chat_id=POND,
                              source_key=f"r:{uid}", now=NOW)

    results = await asyncio.gather(
        *(f(uid) for uid in people for f in (a_draw, a_redemption)), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    async with pg.transaction(readonly=True) as s:
        balances = (await s.execute(
            text("SELECT DISTINCT balance FROM member WHERE user_id BETWEEN 7001 AND 7030")
        )).scalars().all()
    assert list(balances) == [80]  # 100 - a draw's 10 - the item's 10, for every one


class Bump:
    """A batched write that touches members' rows in the order it is given them."""

    order = 0

    async def run(self, session: AsyncSession, requests: Sequence[int]) -> list[None]:
        for uid in requests:
            await session.execute(
                text("UPDATE member SET first_name = first_name WHERE user_id = :u"), {"u": uid}
            )
        return [None] * len(requests)


async def test_a_batch_aborted_as_a_deadlock_is_written_again_whole(pg: Database) -> None:
    """Two instances' writers touch the same crowd's rows in opposite orders at once:
    PostgreSQL aborts one batch as a deadlock, and it is written again whole (not one by
    one). The member records themselves are written in key order: they never meet so."""
    crowd = [repo.UserInfo(uid, f"M{uid}") for uid in range(8001, 8061)]
    writers = [BatchWriter(pg), BatchWriter(pg)]
    await asyncio.gather(*(  # first seen by both instances at once, in opposite orders
        w.enqueue(SEEN, SeenRequest(p.id, p, POND))
        for w, order in zip(writers, (crowd, crowd[::-1]), strict=True) for p in order
    ))
    assert [w.batches for w in writers] == [1, 1]
    bump = Bump()
    for _ in range(3):
        await asyncio.gather(*(
            w.enqueue(bump, p.id)
            for w, order in zip(writers, (crowd, crowd[::-1]), strict=True) for p in order
        ))
    # Each round one transaction per writer (written one by one, it would be 60 more).
    assert [w.batches for w in writers] == [4, 4]
