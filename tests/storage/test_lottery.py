"""The lottery's prize table and draws, on SQLite and PostgreSQL: free then paid draws,
refusals that record nothing, replays, stock under concurrency, and the odds."""

from __future__ import annotations

import asyncio
import csv
import io
import math
import random
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from games import lottery as rules
from games.parsing import ParseError
from storage import ledger, lottery, repo
from storage.batch import BatchWriter
from storage.db import Database
from storage.export import export_draws
from storage.models import Draw, LedgerEntry, LedgerKind, Member, Prize

T0 = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
DAY = date(2026, 11, 1)
POND = -100700


async def members(db: Database, ids: range, balance: int = 0) -> None:
    async with db.transaction() as s:
        await repo.upsert_pond(s, POND, title="P", chat_type="supergroup")
        for uid in ids:
            await repo.upsert_member(s, repo.UserInfo(uid, f"M{uid}"))
            if balance:
                await ledger.award(s, user_id=uid, amount=balance,
                                   kind=LedgerKind.admin_adjust, key=f"seed:{uid}")


async def add(db: Database, args: str, key: str) -> int:
    async with db.transaction() as s:
        prize_id, added = await lottery.add_prize(s, rules.parse_prize(args), source_key=key,
                                                  created_by=1, now=T0)
    assert added
    return prize_id


async def draw(db: Database, uid: int, key: str, *, free: int = 1, cost: int = 10,
               day: date = DAY, rng: random.Random | None = None) -> lottery.DrawResult:
    async with db.transaction() as s:
        return await lottery.draw(
            s, user_id=uid, chat_id=POND, day=day, source_key=key, free_per_day=free,
            cost=cost, rng=rng or random.Random(key), now=T0,
        )


async def count(db: Database, model: Any, *where: Any) -> int:
    async with db.transaction(readonly=True) as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def balance(db: Database, uid: int) -> int:
    async with db.transaction(readonly=True) as s:
        member = await s.get(Member, uid)
        assert member is not None
        return member.balance


async def prize_row(db: Database, prize_id: int) -> Prize:
    async with db.transaction(readonly=True) as s:
        prize = await s.get(Prize, prize_id)
        assert prize is not None
        return prize


async def test_a_shop_without_prizes_refuses_and_records_nothing(db: Database) -> None:
    await members(db, range(1, 2), balance=100)
    with pytest.raises(lottery.DrawRefused) as refused:
        await draw(db, 1, "k1")
    assert refused.value.code == "closed"
    pid = await add(db, "1 1 points=5 Five", "p1")
    await draw(db, 1, "k2")  # wins the only unit
    with pytest.raises(lottery.DrawRefused) as refused:
        await draw(db, 1, "k3")
    assert refused.value.code == "sold_out"
    async with db.transaction() as s:
        await lottery.prize_off(s, pid)
    assert await count(db, Draw) == 1 and await balance(db, 1) == 105


async def test_free_draw_then_paid_then_refused_without_points(db: Database) -> None:
    await members(db, range(1, 2), balance=15)
    await add(db, "1 - none Thanks", "p1")
    first = await draw(db, 1, "a")
    assert (first.free, first.cost, first.free_left, first.balance) == (True, 0, 0, 15)
    paid = await draw(db, 1, "b")
    assert (paid.free, paid.cost, paid.balance) == (False, 10, 5)
    with pytest.raises(lottery.DrawRefused) as refused:
        await draw(db, 1, "c")
    assert (refused.value.code, refused.value.balance, refused.value.cost) == ("no_points", 5, 10)
    # Nothing of the refused draw is left: no row, no ledger entry, the balance as it was.
    assert await count(db, Draw) == 2
    assert await count(db, LedgerEntry, LedgerEntry.idem_key == "draw:c") == 0
    assert await balance(db, 1) == 5
    # The next day brings a new free draw.
    nxt = await draw(db, 1, "d", day=date(2026, 11, 2))
    assert nxt.free and nxt.balance == 5
    async with db.transaction(readonly=True) as s:
        assert (await ledger.check_invariant(s)).ok


async def test_a_replayed_draw_returns_the_first_result(db: Database) -> None:
    await members(db, range(1, 2), balance=50)
    await add(db, "1 - points=7 Seven", "p1")
    one = await draw(db, 1, "same", free=0)
    two = await draw(db, 1, "same", free=0, rng=random.Random(99))
    assert one.applied and not two.applied
    assert (two.draw_id, two.prize_id, two.won_points, two.cost) == (
        one.draw_id, one.prize_id, 7, 10)
    assert await count(db, Draw) == 1 and await balance(db, 1) == 50 - 10 + 7


async def test_cost_zero_makes_paid_draws_free_but_recorded(db: Database) -> None:
    await members(db, range(1, 2))
    await add(db, "1 - none Thanks", "p1")
    results = [await draw(db, 1, f"k{i}", free=1, cost=0) for i in range(3)]
    assert [r.free for r in results] == [True, False, False]
    assert await count(db, Draw) == 3 and await balance(db, 1) == 0


async def test_prize_table_odds_and_off(db: Database) -> None:
    a = await add(db, "3 - points=5 A", "pa")
    b = await add(db, "1 2 none B", "pb")
    async with db.transaction() as s:
        again, added = await lottery.add_prize(s, rules.parse_prize("9 - none X"),
                                               source_key="pa", created_by=1)
        assert (again, added) == (a, False)  # the same command message: added once
        lines = await lottery.prizes(s)
        assert [(p.id, p.odds) for p in lines] == [(a, 0.75), (b, 0.25)]
        assert await lottery.prize_off(s, b) == "B"
        assert [(p.id, p.odds) for p in await lottery.prizes(s)] == [(a, 1.0)]
        with pytest.raises(lottery.PrizeRefused):
            await lottery.prize_off(s, 12345)
        with pytest.raises(lottery.PrizeRefused):
            await lottery.add_prize(s, rules.parse_prize("1 1 item=999 Ghost"),
                                    source_key="pg", created_by=1)


async def test_200_concurrent_draws_never_take_more_than_the_stock(db: Database) -> None:
    await members(db, range(1, 201))
    star = await add(db, "1000 2 points=100 Star", "star")
    thanks = await add(db, "1 - none Thanks", "thanks")
    results = await asyncio.gather(*(draw(db, uid, f"c{uid}") for uid in range(1, 201)))
    winners = [r.user_id for r in results if r.prize_id == star]
    assert len(winners) == 2  # the heavy prize went while it lasted, never beyond
    assert all(r.prize_id == thanks for r in results if r.prize_id != star)
    row = await prize_row(db, star)
    assert (row.stock, row.won) == (0, 2)
    assert await count(db, Draw) == 200
    assert sorted([await balance(db, uid) for uid in winners]) == [100, 100]
    async with db.transaction(readonly=True) as s:
        assert (await ledger.check_invariant(s)).ok


async def test_concurrent_draws_of_one_member_take_one_free_slot(db: Database) -> None:
    await members(db, range(1, 2), balance=30)
    await add(db, "1 - none Thanks", "p1")
    outcomes = await asyncio.gather(*(draw(db, 1, f"m{i}") for i in range(8)),
                                    return_exceptions=True)
    done = [o for o in outcomes if isinstance(o, lottery.DrawResult)]
    refused = [o for o in outcomes if isinstance(o, lottery.DrawRefused)]
    assert len(done) + len(refused) == 8
    assert sum(r.free for r in done) == 1  # one free draw a day, however they race
    assert sum(not r.free for r in done) == 3  # then 30 points buy three
    assert all(r.code == "no_points" for r in refused)
    assert await balance(db, 1) == 0 and await count(db, Draw) == 4


async def test_the_last_unit_raced_for_refuses_the_losers_and_charges_nobody(
    db: Database
) -> None:
    await members(db, range(1, 11), balance=10)
    only = await add(db, "1 1 points=1 One", "p1")
    outcomes = await asyncio.gather(*(draw(db, uid, f"l{uid}", free=0) for uid in range(1, 11)),
                                    return_exceptions=True)
    done = [o for o in outcomes if isinstance(o, lottery.DrawResult)]
    assert len(done) == 1 and done[0].prize_id == only
    assert all(isinstance(o, lottery.DrawRefused) and o.code == "sold_out"
               for o in outcomes if o not in done)
    balances = [await balance(db, uid) for uid in range(1, 11)]
    assert sorted(balances) == [1] + [10] * 9  # the winner paid 10 and won 1
    assert (await prize_row(db, only)).stock == 0


async def test_10000_draws_follow_the_weights(sqlite_url: str) -> None:
    """Unlimited stock, a seeded source, the batched path: each prize's frequency is
    within 3σ of its weight's share (σ of a binomial count: √(n·p·(1−p)))."""
    db = Database(sqlite_url)
    try:
        await members(db, range(1, 101))
        weights = {"A": 50, "B": 30, "C": 15, "D": 5}
        ids = {}
        for name, w in weights.items():
            kind = "points=1" if name == "D" else "none"
            ids[await add(db, f"{w} - {kind} {name}", f"p{name}")] = name
        async with db.transaction() as s:
            await repo.change_pond_settings(s, POND, lottery_cost=0)  # paid draws cost 0
        rng = random.Random(20261101)
        n = 10_000
        won: Counter[str] = Counter()
        writer = BatchWriter(db)
        for batch in range(10):  # a crowd of a thousand draws at a time
            outcomes = await asyncio.gather(*(
                writer.submit(lottery.DRAW_OP, lottery.DrawRequest(
                    1 + i % 100, POND, DAY, f"f{batch}:{i}", T0, rng))
                for i in range(1000)
            ))
            for o in outcomes:
                assert o.result is not None and o.result.prize_id is not None
                won[ids[o.result.prize_id]] += 1
        total = sum(weights.values())
        for name, w in weights.items():
            p = w / total
            sigma = math.sqrt(n * p * (1 - p))
            assert abs(won[name] - n * p) <= 3 * sigma, (name, won[name], n * p, sigma)
        assert sum(won.values()) == n
        assert await count(db, Draw) == n
        async with db.transaction(readonly=True) as s:
            assert int(await s.scalar(select(func.sum(Member.balance))) or 0) == won["D"]
    finally:
        await db.dispose()


def test_pick_and_parse_rules() -> None:
    class Fixed:
        def __init__(self, value: int) -> None:
            self.value = value

        def randrange(self, stop: int, /) -> int:
            assert 0 <= self.value < stop
            return self.value

    table = [(1, 3), (2, 1)]
    assert [rules.pick(table, Fixed(v)) for v in range(4)] == [1, 1, 1, 2]
    assert rules.pick([], Fixed(0)) is None
    spec = rules.parse_prize("５ - points=20  Twenty  points ")
    assert (spec.weight, spec.stock, spec.kind, spec.points, spec.name) == (
        5, None, "points", 20, "Twenty points")
    assert rules.parse_prize("1 3 item=7 Coupon").item_id == 7
    assert rules.parse_prize("1 3 none 谢谢参与").kind == "none"
    for bad in ("", "1 - none", "0 - none X", "1 0 none X", "1 x none X", "1 - points=0 X",
                "1 - prize X", "1 - item= X", "-1 - none X", "1 - none " + "x" * 200):
        with pytest.raises(ParseError):
            rules.parse_prize(bad)


async def test_export_draws_lists_every_draw_and_no_refused_one(db: Database) -> None:
    await members(db, range(1, 3))
    five = await add(db, "1 - points=5 =Five", "p1")
    await draw(db, 1, "e1")
    with pytest.raises(lottery.DrawRefused):
        await draw(db, 1, "e2")  # no points for a paid draw: not a draw
    await draw(db, 2, "e3", free=0, cost=0)
    out = io.StringIO()
    assert await export_draws(db, out) == 2
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["id", "user_id", "chat_id", "cost", "prize_id", "prize_name",
                       "won_points", "redemption_id", "created_at"]
    assert [r[1:8] for r in rows[1:]] == [
        ["1", str(POND), "0", str(five), "'=Five", "5", ""],
        ["2", str(POND), "0", str(five), "'=Five", "5", ""],
    ]


def request(uid: int, key: str, day: date = DAY) -> lottery.DrawRequest:
    return lottery.DrawRequest(uid, POND, day, key, T0, random.Random(key))


async def test_a_batch_of_draws_decides_in_order_and_refusals_write_nothing(
    db: Database
) -> None:
    await members(db, range(1, 4))
    await add(db, "1 - points=3 Three", "p1")
    writer = BatchWriter(db)
    reqs = [request(1, "b1"), request(1, "b1"), request(1, "b2"), request(2, "b3"),
            request(3, "b4")]
    outcomes = await asyncio.gather(*(writer.submit(lottery.DRAW_OP, r) for r in reqs))
    assert writer.batches == 1  # one unit of work for the crowd
    first, double, broke, other, third = outcomes
    assert first.result is not None and first.result.applied and first.result.free
    assert double.result is not None and not double.result.applied  # a double press
    assert double.result.draw_id == first.result.draw_id
    assert broke.refused is not None and broke.refused.code == "no_points"
    assert broke.refused.balance == 3  # the free draw's prize, decided just before
    assert other.result is not None and third.result is not None
    assert await count(db, Draw) == 3
    assert [await balance(db, u) for u in (1, 2, 3)] == [3, 3, 3]
    again = await writer.submit(lottery.DRAW_OP, request(1, "b1"))  # replayed later
    assert again.result is not None and again.result.draw_id == first.result.draw_id
    assert not again.result.applied
    async with db.transaction(readonly=True) as s:
        assert (await ledger.check_invariant(s)).ok


async def test_concurrent_batches_never_take_more_than_the_stock(db: Database) -> None:
    """Two writers (two instances of the bot) draw for 100 members each at once."""
    await members(db, range(1, 201), balance=20)
    star = await add(db, "1000 3 points=100 Star", "star")
    await add(db, "1 - none Thanks", "thanks")
    writers = [BatchWriter(db), BatchWriter(db)]

    async def crowd(w: BatchWriter, uids: range) -> list[lottery.DrawOutcome]:
        futures = []
        for uid in uids:  # a free draw and a paid one each
            futures += [w.submit(lottery.DRAW_OP, request(uid, f"x{uid}")),
                        w.submit(lottery.DRAW_OP, request(uid, f"y{uid}"))]
        return list(await asyncio.gather(*futures))

    halves = await asyncio.gather(crowd(writers[0], range(1, 101)),
                                  crowd(writers[1], range(101, 201)))
    outcomes = [o for half in halves for o in half]
    assert all(o.result is not None for o in outcomes)
    won = [o for o in outcomes if o.result is not None and o.result.prize_id == star]
    assert len(won) == 3
    row = await prize_row(db, star)
    assert (row.stock, row.won) == (0, 3)
    assert await count(db, Draw) == 400
    async with db.transaction(readonly=True) as s:
        report = await ledger.check_invariant(s)
        assert report.ok and report.balances_total == 200 * 20 - 200 * 10 + 300
