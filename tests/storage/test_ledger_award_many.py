"""`ledger.award_many`: many credits in a few statements, with `award`'s guarantees."""

from __future__ import annotations

import asyncio

import pytest

from storage import ledger, repo
from storage.db import Database
from storage.models import LedgerKind


async def _members(db: Database, *ids: int) -> None:
    async with db.transaction() as s:
        for uid in ids:
            await repo.upsert_member(s, repo.UserInfo(uid, f"U{uid}"))


async def test_award_many_is_idempotent_and_exact(db: Database) -> None:
    await _members(db, 1, 2)
    awards = [
        ledger.Award(1, 5, LedgerKind.checkin, "k1"),
        ledger.Award(2, 7, LedgerKind.checkin, "k2"),
        ledger.Award(1, 20, LedgerKind.streak_bonus, "k3"),
        ledger.Award(1, 5, LedgerKind.checkin, "k1"),  # the same event twice in one call
    ]
    async with db.transaction() as s:
        moved = await ledger.award_many(s, awards)
    assert [m.applied for m in moved] == [True, True, True, False]
    assert [m.balance for m in moved] == [5, 7, 25, 5]
    async with db.transaction() as s:
        again = await ledger.award_many(s, awards)
        assert not any(m.applied for m in again)
        assert (await repo.get_member(s, 1)).balance == 25  # type: ignore[union-attr]
        report = await ledger.check_invariant(s)
    assert report.ok and report.entries_total == 32


async def test_award_many_unknown_member_changes_nothing(db: Database) -> None:
    await _members(db, 1)
    with pytest.raises(ledger.UnknownMember):
        async with db.transaction() as s:
            await ledger.award_many(s, [ledger.Award(1, 5, LedgerKind.checkin, "a"),
                                        ledger.Award(9, 5, LedgerKind.checkin, "b")])
    async with db.transaction() as s:
        assert (await repo.get_member(s, 1)).balance == 0  # type: ignore[union-attr]


async def test_concurrent_award_many_and_award_pay_once(db: Database) -> None:
    await _members(db, 1, 2)

    async def batch() -> None:
        async with db.transaction() as s:
            await ledger.award_many(s, [ledger.Award(1, 5, LedgerKind.checkin, "day"),
                                        ledger.Award(2, 5, LedgerKind.checkin, "day2")])

    async def single() -> None:
        async with db.transaction() as s:
            await ledger.award(s, user_id=1, amount=5, kind=LedgerKind.checkin, key="day")

    await asyncio.gather(*(batch() if i % 2 else single() for i in range(10)))
    async with db.transaction() as s:
        report = await ledger.check_invariant(s)
        assert (await repo.get_member(s, 1)).balance == 5  # type: ignore[union-attr]
    assert report.ok and report.entries_total == 10
