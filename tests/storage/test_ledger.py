"""The points ledger on SQLite and PostgreSQL: exact, idempotent, never negative."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage import ledger
from storage.db import Database
from storage.ledger import InsufficientPoints, Movement, UnknownMember
from storage.models import LedgerEntry, LedgerKind, Member, utcnow
from storage.repo import UserInfo, upsert_member

ALICE, BOB, CAROL = 101, 202, 303


async def add_members(db: Database, *user_ids: int) -> None:
    async with db.transaction() as s:
        for uid in user_ids:
            await upsert_member(s, UserInfo(id=uid, first_name=f"user{uid}"))


async def balance(db: Database, user_id: int) -> int:
    async with db.transaction(readonly=True) as s:
        value = await s.scalar(select(col(Member.balance)).where(col(Member.user_id) == user_id))
    assert value is not None
    return int(value)


async def entries(db: Database) -> list[LedgerEntry]:
    async with db.transaction(readonly=True) as s:
        return list((await s.execute(select(LedgerEntry).order_by(col(LedgerEntry.id)))).scalars())


async def award(db: Database, user_id: int, amount: int, key: str) -> Movement:
    async with db.transaction() as s:
        return await ledger.award(
            s, user_id=user_id, amount=amount, kind=LedgerKind.checkin, key=key
        )


async def spend(db: Database, user_id: int, amount: int, key: str) -> Movement:
    async with db.transaction() as s:
        return await ledger.spend(
            s, user_id=user_id, amount=amount, kind=LedgerKind.redeem, key=key
        )


async def invariant_ok(db: Database) -> bool:
    async with db.transaction(readonly=True) as s:
        return (await ledger.check_invariant(s)).ok


async def test_award_credits_and_records_one_entry(db: Database) -> None:
    await add_members(db, ALICE)
    when = utcnow()
    async with db.transaction() as s:
        m = await ledger.award(
            s,
            user_id=ALICE,
            amount=5,
            kind=LedgerKind.checkin,
            key="checkin:101:2025-11-11",
            chat_id=-100123,
            actor_id=None,
            ref="daily",
            now=when,
        )
    assert m.applied and m.user_id == ALICE and m.delta == 5 and m.balance == 5
    assert m.entry_id is not None
    [e] = await entries(db)
    assert (e.id, e.user_id, e.chat_id, e.delta, e.balance_after) == (
        m.entry_id,
        ALICE,
        -100123,
        5,
        5,
    )
    assert (e.kind, e.ref, e.idem_key) == ("checkin", "daily", "checkin:101:2025-11-11")
    assert e.created_at == when and e.created_at.utcoffset() is not None
    async with db.transaction(readonly=True) as s:
        member = await s.get(Member, ALICE)
    assert member is not None and member.balance == 5 and member.lifetime_earned == 5


async def test_replayed_key_changes_nothing_and_returns_the_first_movement(db: Database) -> None:
    await add_members(db, ALICE)
    first = await award(db, ALICE, 7, "grab:1:101")
    again = await award(db, ALICE, 7, "grab:1:101")
    assert first.applied and not again.applied
    assert (again.entry_id, again.balance, again.delta) == (first.entry_id, first.balance, 7)
    # a replay inside the same unit of work, and one with a different amount
    async with db.transaction() as s:
        a = await ledger.award(s, user_id=ALICE, amount=7, kind=LedgerKind.red_packet, key="k2")
        b = await ledger.award(s, user_id=ALICE, amount=99, kind=LedgerKind.red_packet, key="k2")
    assert a.applied and not b.applied and b.entry_id == a.entry_id and b.delta == 7
    assert await balance(db, ALICE) == 14
    assert len(await entries(db)) == 2
    # a replayed spend as well
    s1 = await spend(db, ALICE, 4, "redeem:9")
    s2 = await spend(db, ALICE, 4, "redeem:9")
    assert s1.applied and not s2.applied and s2.entry_id == s1.entry_id and s2.balance == 10
    assert await balance(db, ALICE) == 10
    assert await invariant_ok(db)


async def test_spend_never_makes_a_balance_negative(db: Database) -> None:
    await add_members(db, ALICE)
    await award(db, ALICE, 10, "a")
    with pytest.raises(InsufficientPoints) as exc:
        await spend(db, ALICE, 11, "too-much")
    assert (exc.value.user_id, exc.value.balance, exc.value.needed) == (ALICE, 10, 11)
    assert await balance(db, ALICE) == 10
    assert [e.idem_key for e in await entries(db)] == ["a"]
    m = await spend(db, ALICE, 10, "all")
    assert m.applied and m.balance == 0 and m.delta == -10
    with pytest.raises(InsufficientPoints):
        await spend(db, ALICE, 1, "one-more")
    assert await balance(db, ALICE) == 0
    assert await invariant_ok(db)


async def test_a_refused_spend_leaves_the_unit_of_work_usable(db: Database) -> None:
    await add_members(db, ALICE, BOB)
    async with db.transaction() as s:
        with pytest.raises(InsufficientPoints):
            await ledger.spend(s, user_id=ALICE, amount=1, kind=LedgerKind.redeem, key="x")
        await ledger.award(s, user_id=BOB, amount=3, kind=LedgerKind.vote, key="y")
    assert [e.idem_key for e in await entries(db)] == ["y"]
    assert await balance(db, BOB) == 3


async def test_unknown_member_is_refused(db: Database) -> None:
    with pytest.raises(UnknownMember) as exc:
        await award(db, 999, 5, "ghost")
    assert exc.value.user_id == 999
    with pytest.raises(UnknownMember):
        await spend(db, 999, 5, "ghost-spend")
    assert await entries(db) == []


@pytest.mark.parametrize("amount", [0, -3, True, 10**12 + 1, 2.5])
async def test_amounts_must_be_positive_integers(db: Database, amount: object) -> None:
    await add_members(db, ALICE)
    with pytest.raises((ValueError, TypeError)):
        await award(db, ALICE, amount, "bad")  # type: ignore[arg-type]
    assert await entries(db) == []


async def test_transfer_moves_points_with_two_entries(db: Database) -> None:
    await add_members(db, ALICE, BOB)
    await award(db, ALICE, 30, "seed")
    async with db.transaction() as s:
        out, into = await ledger.transfer(
            s, from_user=ALICE, to_user=BOB, amount=12, kind=LedgerKind.red_packet, key="rp:1"
        )
    assert (out.delta, out.balance, into.delta, into.balance) == (-12, 18, 12, 12)
    async with db.transaction() as s:
        out2, into2 = await ledger.transfer(
            s, from_user=ALICE, to_user=BOB, amount=12, kind=LedgerKind.red_packet, key="rp:1"
        )
    assert not out2.applied and not into2.applied
    assert (out2.entry_id, into2.entry_id) == (out.entry_id, into.entry_id)
    with pytest.raises(InsufficientPoints):
        async with db.transaction() as s:
            await ledger.transfer(
                s, from_user=BOB, to_user=ALICE, amount=13, kind=LedgerKind.red_packet, key="rp:2"
            )
    with pytest.raises(UnknownMember):  # the debit is rolled back with the unit of work
        async with db.transaction() as s:
            await ledger.transfer(
                s, from_user=ALICE, to_user=999, amount=1, kind=LedgerKind.red_packet, key="rp:3"
            )
    with pytest.raises(ValueError):
        async with db.transaction() as s:
            await ledger.transfer(
                s, from_user=ALICE, to_user=ALICE, amount=1, kind=LedgerKind.red_packet, key="x"
            )
    assert (await balance(db, ALICE), await balance(db, BOB)) == (18, 12)
    assert [e.idem_key for e in await entries(db)] == ["seed", "rp:1:out", "rp:1:in"]
    assert await invariant_ok(db)


async def test_check_invariant_detects_a_tampered_balance(db: Database) -> None:
    await add_members(db, ALICE, BOB, CAROL)
    await award(db, ALICE, 10, "a")
    await award(db, BOB, 5, "b")
    async with db.transaction(readonly=True) as s:
        report = await ledger.check_invariant(s)
    assert report.ok
    assert (report.entries_total, report.balances_total, report.mismatched_members) == (15, 15, ())
    async with db.transaction() as s:
        await s.execute(update(Member).where(col(Member.user_id) == BOB).values(balance=6))
    async with db.transaction(readonly=True) as s:
        report = await ledger.check_invariant(s)
    assert not report.ok
    assert report.mismatched_members == (BOB,)
    assert (report.entries_total, report.balances_total) == (15, 16)


async def test_awards_racing_over_separate_units_of_work(db: Database) -> None:
    """200 concurrent awards, 20 distinct keys: exactly 20 entries, each paid once."""
    await add_members(db, ALICE)
    keys = [f"race:{i % 20}" for i in range(200)]

    moves = await asyncio.gather(*(award(db, ALICE, 3, key) for key in keys))
    assert sum(m.applied for m in moves) == 20
    by_key: dict[str, set[int | None]] = {}
    for key, m in zip(keys, moves, strict=True):
        by_key.setdefault(key, set()).add(m.entry_id)
    assert all(len(ids) == 1 for ids in by_key.values())  # every replay saw the winner
    rows = await entries(db)
    assert len(rows) == 20 and len({e.idem_key for e in rows}) == 20
    assert await balance(db, ALICE) == 60
    assert await invariant_ok(db)


async def test_spends_racing_for_a_small_balance(db: Database) -> None:
    """100 concurrent 1-point spends against a balance of 50: exactly 50 succeed."""
    await add_members(db, ALICE)
    await award(db, ALICE, 50, "seed")

    async def one(i: int) -> str:
        try:
            await spend(db, ALICE, 1, f"spend:{i}")
        except InsufficientPoints:
            return "refused"
        return "ok"

    outcome = Counter(await asyncio.gather(*(one(i) for i in range(100))))
    assert outcome == {"ok": 50, "refused": 50}
    assert await balance(db, ALICE) == 0
    assert len(await entries(db)) == 51
    assert await invariant_ok(db)


async def _wait_until_blocked(task: asyncio.Task[Movement]) -> None:
    await asyncio.sleep(0.3)
    assert not task.done(), "the second delivery should wait for the first transaction"


@pytest.mark.parametrize("second_user", [ALICE, BOB], ids=["same-member", "other-member"])
async def test_two_first_deliveries_of_one_event(db: Database, second_user: int) -> None:
    """Both deliveries pass the key look-up before either commits; the loser reports
    the winner's movement (applied=False) and its unit of work carries on.

    On PostgreSQL the loser's insert hits the winner's key: ON CONFLICT DO NOTHING, then
    its own balance change is undone. On SQLite the loser waits at BEGIN IMMEDIATE."""
    await add_members(db, ALICE, BOB, CAROL)
    await award(db, ALICE, 5, "seed-a")
    await award(db, BOB, 5, "seed-b")

    async def loser() -> Movement:
        async with db.transaction() as s:
            m = await ledger.spend(
                s, user_id=second_user, amount=5, kind=LedgerKind.redeem, key="redeem:42"
            )
            await ledger.award(s, user_id=CAROL, amount=1, kind=LedgerKind.vote, key="after")
            return m

    async with db.transaction() as s:
        won = await ledger.spend(
            s, user_id=ALICE, amount=5, kind=LedgerKind.redeem, key="redeem:42"
        )
        task = asyncio.create_task(loser())
        await _wait_until_blocked(task)
    lost = await asyncio.wait_for(task, 30)
    assert won.applied and not lost.applied
    assert (lost.entry_id, lost.user_id, lost.delta, lost.balance) == (won.entry_id, ALICE, -5, 0)
    assert (await balance(db, ALICE), await balance(db, BOB), await balance(db, CAROL)) == (0, 5, 1)
    async with db.transaction(readonly=True) as s:
        bob = await s.get(Member, BOB)
    assert bob is not None and bob.lifetime_earned == 5
    assert [e.idem_key for e in await entries(db)] == ["seed-a", "seed-b", "redeem:42", "after"]
    assert await invariant_ok(db)


async def _raw_duplicate_insert(s: AsyncSession, key: str) -> None:
    await s.execute(
        insert(LedgerEntry).values(
            user_id=ALICE,
            delta=1,
            balance_after=1,
            kind="checkin",
            ref="",
            idem_key=key,
            created_at=utcnow(),
        )
    )


async def test_unique_key_violation_rolls_back_the_whole_unit_of_work(db: Database) -> None:
    """A plain INSERT racing for a taken key raises IntegrityError; the unit of work is
    rolled back as a whole, and replaying it through the ledger is then a no-op for the
    taken key."""
    await add_members(db, ALICE, BOB)
    won = await award(db, ALICE, 1, "checkin:day1")
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            await ledger.award(s, user_id=BOB, amount=2, kind=LedgerKind.vote, key="vote:1")
            await _raw_duplicate_insert(s, "checkin:day1")
    assert await balance(db, BOB) == 0  # nothing of the failed unit of work survived
    assert [e.idem_key for e in await entries(db)] == ["checkin:day1"]
    async with db.transaction() as s:
        retry = await ledger.award(
            s, user_id=ALICE, amount=1, kind=LedgerKind.checkin, key="checkin:day1"
        )
        vote = await ledger.award(s, user_id=BOB, amount=2, kind=LedgerKind.vote, key="vote:1")
    assert not retry.applied and retry.entry_id == won.entry_id and vote.applied
    assert (await balance(db, ALICE), await balance(db, BOB)) == (1, 2)
    async with db.transaction(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(LedgerEntry)) == 2
    assert await invariant_ok(db)
