"""`storage.bulk.Bulk` and the batch writer's ops that use it, on both backends."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select
from sqlalchemy.dialects import sqlite

from games.checkin import local_day
from storage import batch, checkin, ledger, repo
from storage.bulk import Bulk
from storage.db import Database
from storage.models import Checkin, Member, Membership, utcnow

POND = -100123


def test_member_columns_are_the_new_member_row() -> None:
    row = repo.member_row(repo.UserInfo(1, "A"), utcnow())
    assert list(row) == repo.MEMBER_COLUMNS
    assert set(Member.__table__.columns.keys()) >= set(row)  # type: ignore[attr-defined]


def test_statements_needing_defaults_or_missing_values_are_refused() -> None:
    table = Table(
        "t", MetaData(), Column("id", Integer, primary_key=True),
        Column("a", Integer), Column("b", String, default="x"),
    )
    with pytest.raises(ValueError, match="defaults"):
        Bulk(lambda _d: insert(table), ["a"])._plan(sqlite.dialect())
    with pytest.raises(ValueError, match="not given"):
        Bulk(
            lambda _d: table.update()
            .where(table.c.id == bindparam("key"))
            .values(a=bindparam("value"), b="y"),
            ["value"],
        )._plan(sqlite.dialect())


async def test_seen_and_checkin_ops_write_exact_rows(db: Database) -> None:
    now = dt.datetime(2025, 3, 1, 1, 30, tzinfo=dt.UTC)
    today = local_day(now, "Asia/Shanghai")
    people = [repo.UserInfo(i, f"Name{i}", "", f"User{i}" if i % 2 else None) for i in range(1, 41)]
    async with db.transaction() as s:
        await batch.SEEN.run(s, [batch.SeenRequest(p.id, p, POND) for p in people])
    renamed = repo.UserInfo(3, "Renamed", "", "NewName")
    async with db.transaction() as s:
        await batch.SEEN.run(s, [batch.SeenRequest(3, renamed, POND)])
        results = await checkin.CHECKIN_OP.run(
            s, [checkin.CheckinRequest(p.id, POND, today, now) for p in people]
        )
    assert all(r.applied and r.streak == 1 for r in results)
    assert sorted(r.rank for r in results) == list(range(1, 41))  # type: ignore[type-var]
    async with db.transaction() as s:
        again = await checkin.CHECKIN_OP.run(
            s, [checkin.CheckinRequest(p.id, POND, today, now) for p in people[:5]]
        )
    assert not any(r.applied for r in again)
    async with db.transaction(readonly=True) as s:
        three = await s.get(Member, 3)
        assert three is not None
        assert (three.first_name, three.username_lower, three.balance) == ("Renamed", "newname", 5)
        assert three.last_checkin_day == today
        seat = await s.get(Membership, (POND, 7))
        assert seat is not None and seat.first_seen_at.tzinfo is not None
        rows = (await s.execute(select(Checkin.user_id, Checkin.day))).all()
        assert len(rows) == 40 and {d for _, d in rows} == {today}
        report = await ledger.check_invariant(s)
    assert report.ok and report.entries_total == 40 * 5


async def test_a_seat_recorded_as_gone_is_present_again_when_seen(db: Database) -> None:
    """The seat upsert (compiled once, constants inlined) turns a `left` seat back into a
    member's on both backends, and leaves a present one's join time alone."""
    people = [repo.UserInfo(i, f"Name{i}", "") for i in (1, 2)]
    async with db.transaction() as s:
        await batch.SEEN.run(s, [batch.SeenRequest(p.id, p, POND) for p in people])
        await repo.touch_membership(s, POND, 1, status="left")
    async with db.transaction(readonly=True) as s:
        before = await s.get(Membership, (POND, 2))
        assert before is not None
        joined_2 = before.joined_at
    async with db.transaction() as s:
        await batch.SEEN.run(s, [batch.SeenRequest(p.id, None, POND) for p in people])
    async with db.transaction(readonly=True) as s:
        one, two = await s.get(Membership, (POND, 1)), await s.get(Membership, (POND, 2))
        assert one is not None and (one.status, one.left_at) == ("member", None)
        assert one.joined_at is not None
        assert two is not None and two.status == "member" and two.joined_at == joined_2
