"""The batched writes of check-ins and draws: few statements per batch, exact rows.

A check-in batch reads the members (locked), the ponds' settings with their counts of
the day (one query), writes the check-ins, looks the ledger keys up, and writes the
entries and the members' points and streaks (one update); a batch of draws takes every
prize it won in one guarded update and gets the draws' ids back from their insert.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select
from sqlmodel import col

from games import lottery as prize_rules
from games.checkin import local_day
from storage import checkin, ledger, lottery
from storage.db import Database
from storage.models import Checkin, LedgerKind, Member, Prize
from tests.storage.test_games_storage import members

POND = -100900
NOW = dt.datetime(2026, 3, 1, 1, 30, tzinfo=dt.UTC)
TODAY = local_day(NOW, "Asia/Shanghai")


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_a_check_in_batch_is_six_statements_and_exact(db: Database) -> None:
    await members(db, range(1, 31), POND)
    async with db.transaction() as s:  # two check-ins of the day already
        await checkin.CHECKIN_OP.run(s, [checkin.CheckinRequest(u, POND, TODAY, NOW)
                                         for u in (1, 2)])
    requests = [checkin.CheckinRequest(u, POND, TODAY, NOW) for u in range(1, 31)]
    requests.append(checkin.CheckinRequest(99, POND, TODAY, NOW))  # unknown: nothing
    with statements(db) as seen:
        async with db.transaction() as s:
            results = await checkin.CHECKIN_OP.run(s, requests)
    # members, settings + counts, check-ins, ledger keys, entries, points + streaks
    # (PostgreSQL's ledger locks and reads the members again: one more)
    assert len(seen) <= (6 if db.is_sqlite else 7), seen
    assert [r.applied for r in results] == [False, False] + [True] * 28 + [False]
    assert [r.rank for r in results[2:30]] == list(range(3, 31))  # after the two earlier
    assert all(r.balance == 5 and r.streak == 1 for r in results[:30])
    async with db.transaction(readonly=True) as s:
        rows = (await s.execute(
            select(col(Member.user_id), col(Member.balance), col(Member.streak),
                   col(Member.last_checkin_day))
            .where(col(Member.user_id).in_(range(1, 31)))
        )).all()
        assert {(b, st, d) for _, b, st, d in rows} == {(5, 1, TODAY)}
        assert len((await s.execute(select(Checkin.id))).all()) == 30
        report = await ledger.check_invariant(s)
    assert report.ok and report.entries_total == 30 * 5


async def test_award_many_sets_the_callers_columns_with_the_points(db: Database) -> None:
    """A member whose award was paid before still gets the caller's columns, and no
    points; the balances given are used as read."""
    await members(db, range(1, 3), POND)
    async with db.transaction() as s:
        await ledger.award(s, user_id=2, amount=4, kind=LedgerKind.checkin, key="k2")
    async with db.transaction() as s:
        moved = await ledger.award_many(
            s,
            [ledger.Award(1, 5, LedgerKind.checkin, "k1"),
             ledger.Award(2, 5, LedgerKind.checkin, "k2")],
            now=NOW, balances={1: 0, 2: 4}, credit=checkin._CREDIT_STREAKS,
            member_values={1: {"new_streak": 3, "new_day": TODAY},
                           2: {"new_streak": 7, "new_day": TODAY}},
        )
    assert [(m.applied, m.balance) for m in moved] == [(True, 5), (False, 4)]
    async with db.transaction(readonly=True) as s:
        rows = dict(
            ((u, (b, st)) for u, b, st in (await s.execute(
                select(col(Member.user_id), col(Member.balance), col(Member.streak))
            )).all())
        )
        assert rows == {1: (5, 3), 2: (4, 7)}
        assert (await ledger.check_invariant(s)).ok


async def test_taking_many_prizes_takes_none_it_cannot(db: Database) -> None:
    async with db.transaction() as s:
        a, _ = await lottery.add_prize(s, prize_rules.parse_prize("1 5 none A"),
                                       source_key="a", created_by=1, now=NOW)
        b, _ = await lottery.add_prize(s, prize_rules.parse_prize("1 1 none B"),
                                       source_key="b", created_by=1, now=NOW)
        c, _ = await lottery.add_prize(s, prize_rules.parse_prize("1 - none C"),
                                       source_key="c", created_by=1, now=NOW)
    async with db.transaction() as s:
        took = (await s.execute(lottery._take_many({a: 2, b: 2, c: 3}))).scalars().all()
        assert sorted(took) == sorted([a, c])
        rows = {p.id: (p.stock, p.won) for p in (await s.execute(select(Prize))).scalars()}
    assert rows == {a: (3, 2), b: (1, 0), c: (None, 3)}


async def test_a_batch_of_draws_gets_its_ids_from_the_insert(db: Database) -> None:
    await members(db, range(1, 21), POND)
    async with db.transaction() as s:
        await lottery.add_prize(s, prize_rules.parse_prize("1 - points=2 Two"),
                                source_key="two", created_by=1, now=NOW)
        await lottery.add_prize(s, prize_rules.parse_prize("1 - none Thanks"),
                                source_key="t", created_by=1, now=NOW)
    requests = [lottery.DrawRequest(u, POND, TODAY, f"d{u}", NOW, random.Random(u))
                for u in range(1, 21)]
    with statements(db) as seen:
        async with db.transaction() as s:
            outcomes = await lottery.DRAW_OP.run(s, requests)
    assert len(seen) <= (10 if db.is_sqlite else 11), seen
    async with db.transaction(readonly=True) as s:
        ids = dict((await s.execute(select(lottery.DRAW.c.source_key, lottery.DRAW.c.id))).all())
        for r, o in zip(requests, outcomes, strict=True):
            assert o.result is not None and o.result.applied
            assert o.result.draw_id == ids[r.source_key]
            assert o.result.balance == o.result.won_points
        assert (await ledger.check_invariant(s)).ok
