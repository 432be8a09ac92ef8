"""Purchases and tiers on SQLite and PostgreSQL: one order pays once, under any
concurrency; lifetime spend and tiers move at the thresholds exactly; an import is all
or nothing, idempotent, and leaves tier notices for the running bot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from games.orders import OrderRow, parse_orders_csv
from games.tiers import parse_tiers
from storage import ledger, orders
from storage.db import Database
from storage.models import Job, LedgerEntry, LedgerKind, Member, Order, ScheduledTask
from storage.repo import UserInfo, link_dm, upsert_member

ALICE, BOB, CAROL = 101, 202, 303
TIERS = parse_tiers("VIP1:0.01:9.8,VIP2:300:9.5")
NOW = datetime(2025, 11, 11, 4, 0, tzinfo=UTC)


async def add_members(db: Database, *user_ids: int, linked: bool = False) -> None:
    async with db.transaction() as s:
        for uid in user_ids:
            await upsert_member(s, UserInfo(id=uid, first_name=f"user{uid}"))
            if linked:
                await link_dm(s, uid)


async def record(
    db: Database, order_no: str, user_id: int, cents: int, ppy: float = 1.0
) -> orders.Recorded:
    async with db.transaction() as s:
        return await orders.record_order(
            s, order_no=order_no, user_id=user_id, cents=cents, points_per_yuan=ppy,
            tiers=TIERS, now=NOW,
        )


async def member(db: Database, user_id: int) -> Member:
    async with db.transaction(readonly=True) as s:
        row = await s.get(Member, user_id)
    assert row is not None
    return row


async def count(db: Database, table: type) -> int:
    async with db.transaction(readonly=True) as s:
        return int(await s.scalar(select(func.count()).select_from(table)) or 0)


async def invariant_ok(db: Database) -> bool:
    async with db.transaction(readonly=True) as s:
        return (await ledger.check_invariant(s)).ok


async def test_an_order_pays_once_and_adds_to_lifetime_spend(db: Database) -> None:
    await add_members(db, ALICE)
    first = await record(db, "A-1", ALICE, 29950)
    assert first.applied and first.points == 299 and first.balance == 299
    assert (first.tier_before, first.tier_after, first.promoted) == ("member", "VIP1", True)
    again = await record(db, "A-1", ALICE, 99900)
    assert not again.applied and again.existing is not None
    assert (again.cents, again.points, again.existing.source) == (29950, 299, "command")
    alice = await member(db, ALICE)
    assert (alice.balance, alice.lifetime_spent_cents, alice.tier) == (299, 29950, "VIP1")
    async with db.transaction(readonly=True) as s:
        [entry] = (await s.execute(select(LedgerEntry))).scalars().all()
    assert (entry.kind, entry.idem_key, entry.ref, entry.delta) == (
        LedgerKind.purchase, "order:A-1", "A-1", 299
    )
    assert await count(db, Order) == 1
    assert await invariant_ok(db)


async def test_tiers_change_at_the_thresholds_exactly(db: Database) -> None:
    await add_members(db, ALICE)
    one = await record(db, "t1", ALICE, 1)  # ¥0.01: the first cent makes VIP1
    assert (one.tier_after, one.promoted, one.points) == ("VIP1", True, 0)
    two = await record(db, "t2", ALICE, 29998)  # ¥299.99 in all: still VIP1
    assert (two.spent_cents, two.tier_after, two.promoted) == (29999, "VIP1", False)
    three = await record(db, "t3", ALICE, 1)  # ¥300.00: VIP2
    assert (three.spent_cents, three.tier_before, three.tier_after, three.promoted) == (
        30000, "VIP1", "VIP2", True
    )
    assert (await member(db, ALICE)).tier == "VIP2"
    # An order worth no points (¥0.01 at 1 point per yuan) still counts as spend.
    assert await count(db, LedgerEntry) == 1
    assert await invariant_ok(db)


async def test_points_per_yuan_is_exact(db: Database) -> None:
    await add_members(db, ALICE)
    assert (await record(db, "p1", ALICE, 1000, ppy=1.1)).points == 11
    assert (await record(db, "p2", ALICE, 199, ppy=0.5)).points == 0  # ⌊0.995⌋
    assert (await record(db, "p3", ALICE, 30950, ppy=2.0)).points == 619
    assert (await member(db, ALICE)).balance == 630


async def test_an_unknown_member_records_nothing(db: Database) -> None:
    with pytest.raises(ledger.UnknownMember):
        await record(db, "x1", 999, 100)
    assert await count(db, Order) == 0


async def test_two_first_deliveries_of_one_order(db: Database) -> None:
    """Both pass before either commits. On PostgreSQL the second insert waits for the
    first transaction, then inserts nothing and reports "already recorded" without
    aborting its own unit of work; on SQLite the second waits for its turn."""
    await add_members(db, ALICE, BOB)

    async def second() -> tuple[orders.Recorded, int]:
        async with db.transaction() as s:
            done = await orders.record_order(
                s, order_no="R-9", user_id=BOB, cents=50000, points_per_yuan=1.0,
                tiers=TIERS, now=NOW,
            )
            # the unit of work carries on after losing the race
            more = await ledger.award(
                s, user_id=BOB, amount=1, kind=LedgerKind.vote, key="after"
            )
            return done, more.balance

    async with db.transaction() as s:
        won = await orders.record_order(
            s, order_no="R-9", user_id=ALICE, cents=10000, points_per_yuan=1.0, tiers=TIERS,
            now=NOW,
        )
        task = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not task.done()
    lost, bob_balance = await asyncio.wait_for(task, 30)
    assert won.applied and not lost.applied
    assert (lost.user_id, lost.cents, lost.points) == (ALICE, 10000, 100)
    assert bob_balance == 1
    alice, bob = await member(db, ALICE), await member(db, BOB)
    assert (alice.balance, alice.lifetime_spent_cents, alice.tier) == (100, 10000, "VIP1")
    assert (bob.balance, bob.lifetime_spent_cents, bob.tier) == (1, 0, "")
    assert await invariant_ok(db)


async def test_a_storm_of_one_order_number_pays_once(db: Database) -> None:
    await add_members(db, ALICE)
    results = await asyncio.gather(*(record(db, "S-1", ALICE, 31000) for _ in range(20)))
    assert sum(r.applied for r in results) == 1
    alice = await member(db, ALICE)
    assert (alice.balance, alice.lifetime_spent_cents, alice.tier) == (310, 31000, "VIP2")
    assert await count(db, Order) == 1
    assert await invariant_ok(db)


def rows(*spec: tuple[str, int, int]) -> list[OrderRow]:
    return [OrderRow(i + 2, no, uid, cents, None) for i, (no, uid, cents) in enumerate(spec)]


async def import_rows(db: Database, batch: list[OrderRow]) -> orders.ImportResult:
    async with db.transaction() as s:
        return await orders.import_orders(
            s, batch, points_per_yuan=1.0, tiers=TIERS, now=NOW
        )


async def test_import_records_new_orders_and_counts_the_old(db: Database) -> None:
    await add_members(db, ALICE, BOB, linked=True)
    await add_members(db, CAROL)
    await record(db, "O-1", ALICE, 10000)  # typed before: VIP1 already
    batch = rows(
        ("O-1", ALICE, 10000),
        ("O-2", ALICE, 20000),  # ¥300 in all: VIP2
        ("O-3", BOB, 5000),  # VIP1
        ("O-4", CAROL, 40000),  # VIP2, but no DM: no notice
        ("O-5", BOB, 50),
    )
    result = await import_rows(db, batch)
    assert (result.imported, result.already, result.points) == (4, 1, 200 + 50 + 400 + 0)
    assert (result.promoted, result.notices) == (3, 2)
    alice, bob, carol = [await member(db, u) for u in (ALICE, BOB, CAROL)]
    assert (alice.balance, alice.lifetime_spent_cents, alice.tier) == (300, 30000, "VIP2")
    assert (bob.balance, bob.lifetime_spent_cents, bob.tier) == (50, 5050, "VIP1")
    assert (carol.balance, carol.lifetime_spent_cents, carol.tier) == (400, 40000, "VIP2")
    async with db.transaction(readonly=True) as s:
        tasks = (await s.execute(select(ScheduledTask).order_by(col(ScheduledTask.key)))).scalars()
        notices = [(t.key, t.job, t.payload, t.state) for t in tasks]
        sources = {
            no: source
            for no, source in (await s.execute(select(col(Order.order_no), col(Order.source))))
        }
    assert notices == [
        (f"orders.tier:{ALICE}:VIP2", Job.tier_notice, {"user_id": ALICE, "tier": "VIP2"},
         "pending"),
        (f"orders.tier:{BOB}:VIP1", Job.tier_notice, {"user_id": BOB, "tier": "VIP1"},
         "pending"),
    ]
    assert sources == {"O-1": "command", "O-2": "import", "O-3": "import", "O-4": "import",
                       "O-5": "import"}
    again = await import_rows(db, batch)
    assert (again.imported, again.already) == (0, 5)
    assert (await member(db, ALICE)).balance == 300
    assert await invariant_ok(db)


async def test_import_with_an_unknown_member_imports_nothing(db: Database) -> None:
    await add_members(db, ALICE)
    batch = rows(("U-1", ALICE, 100), ("U-2", 999, 100), ("U-3", ALICE, 100), ("U-4", 998, 1))
    with pytest.raises(orders.ImportRefused) as refused:
        await import_rows(db, batch)
    assert [str(b) for b in refused.value.bad] == [
        "line 3: user_id 999 is not a member the bot has seen",
        "line 5: user_id 998 is not a member the bot has seen",
    ]
    assert await count(db, Order) == 0 and await count(db, LedgerEntry) == 0


async def test_a_large_import_is_set_based(db: Database) -> None:
    """12,000 orders over 3,000 members (more than one chunk of every statement)."""
    users = list(range(10_000, 13_000))
    async with db.transaction() as s:
        for uid in users:
            await upsert_member(s, UserInfo(id=uid, first_name="m"))
    text = "order_no,user_id,amount\n" + "".join(
        f"N{i},{users[i % len(users)]},{(i % 200) + 1}.50\n" for i in range(12_000)
    )
    parsed, bad = parse_orders_csv(text.splitlines(), now=NOW)
    assert not bad
    result = await import_rows(db, parsed)
    assert (result.imported, result.already) == (12_000, 0)
    assert await count(db, Order) == 12_000
    async with db.transaction(readonly=True) as s:
        spent = await s.scalar(select(func.sum(col(Member.lifetime_spent_cents))))
        vip2 = await s.scalar(
            select(func.count()).select_from(Member).where(col(Member.tier) == "VIP2")
        )
    assert spent == sum((i % 200) * 100 + 150 for i in range(12_000))
    per_user: dict[int, int] = {}
    for i in range(12_000):
        uid = users[i % len(users)]
        per_user[uid] = per_user.get(uid, 0) + (i % 200) * 100 + 150
    assert vip2 == sum(1 for c in per_user.values() if c >= 30000) > 0
    assert await invariant_ok(db)
