"""The points ledger: append-only entries plus a cached balance, changed together.

Every movement of points is one `LedgerEntry` and one guarded `UPDATE member SET balance
= balance + :delta WHERE balance + :delta >= 0`, in the caller's transaction. Every call
carries an idempotency key naming the domain event (a check-in day, a grab, an
operator's command message): a replayed update, a retried job or a double click finds
the key taken and changes nothing, and gets back the `Movement` of the first delivery
(`applied=False`).

Order of statements: (1) look the key up, (2) guarded balance update, (3) insert the entry
with `ON CONFLICT (idem_key) DO NOTHING`. Under SQLite's BEGIN IMMEDIATE nothing can slip
between (1) and (3). On PostgreSQL two concurrent first deliveries of one event can both
pass (1); the second one's insert then waits for the first transaction and, once that has
committed, inserts nothing. That loser undoes its own balance update (a compensating
update in the same transaction, never visible to anyone) and reports the first delivery's
movement with `applied=False`, exactly like a later replay. No exception is raised, so
the rest of the caller's unit of work carries on — a plain INSERT would raise
IntegrityError there, abort the whole PostgreSQL transaction and force the caller to
retry everything. A SAVEPOINT around (2)+(3) would achieve the same at the price of two
extra round trips on every movement; the compensating update costs one statement, and
only in the rare race. When the guarded update refuses (not enough points, unknown member)
the key is looked up again before raising, since the refusal may be caused by the
concurrent first delivery of the very same event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage.bulk import Bulk
from storage.dialect import insert_for
from storage.models import LedgerEntry, LedgerKind, Member, utcnow

MAX_POINTS = 10**12  # no single movement may exceed this; keeps every sum inside BIGINT


class LedgerError(Exception):
    """Base class for refused movements."""


class InsufficientPoints(LedgerError):
    def __init__(self, user_id: int, balance: int, needed: int) -> None:
        super().__init__(f"user {user_id} has {balance} points, needs {needed}")
        self.user_id = user_id
        self.balance = balance
        self.needed = needed


class UnknownMember(LedgerError):
    def __init__(self, user_id: int) -> None:
        super().__init__(f"unknown member {user_id}")
        self.user_id = user_id


@dataclass(frozen=True, slots=True)
class Movement:
    """What a ledger call did. `applied` is False when the key had been used before."""

    applied: bool
    user_id: int
    delta: int
    balance: int
    entry_id: int | None


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError("points are integers")
    if amount <= 0 or amount > MAX_POINTS:
        raise ValueError(f"amount must be within 1..{MAX_POINTS}")


async def _existing(session: AsyncSession, key: str) -> Movement | None:
    row = (
        await session.execute(
            select(
                col(LedgerEntry.id),
                col(LedgerEntry.user_id),
                col(LedgerEntry.delta),
                col(LedgerEntry.balance_after),
            ).where(col(LedgerEntry.idem_key) == key)
        )
    ).first()
    if row is None:
        return None
    return Movement(False, row.user_id, row.delta, row.balance_after, row.id)


def _insert_entry(session: AsyncSession) -> Any:
    return insert_for(session, LedgerEntry)


async def _change_balance(session: AsyncSession, user_id: int, delta: int) -> int | None:
    """Apply `delta` unless it would make the balance negative; the new balance or None."""
    new_balance = await session.scalar(
        update(Member)
        .where(col(Member.user_id) == user_id)
        .where(col(Member.balance) + delta >= 0)
        .values(
            balance=col(Member.balance) + delta,
            lifetime_earned=col(Member.lifetime_earned) + max(delta, 0),
        )
        .returning(col(Member.balance))
    )
    return None if new_balance is None else int(new_balance)


async def _move(
    session: AsyncSession,
    *,
    user_id: int,
    delta: int,
    kind: LedgerKind,
    key: str,
    chat_id: int | None,
    actor_id: int | None,
    ref: str,
    now: datetime | None,
) -> Movement:
    done = await _existing(session, key)
    if done is not None:
        return done
    balance = await _change_balance(session, user_id, delta)
    if balance is None:
        done = await _existing(session, key)  # a concurrent first delivery, see docstring
        if done is not None:
            return done
        current = await session.scalar(
            select(col(Member.balance)).where(col(Member.user_id) == user_id)
        )
        if current is None:
            raise UnknownMember(user_id)
        raise InsufficientPoints(user_id, int(current), -delta)
    entry_id = await session.scalar(
        _insert_entry(session)
        .values(
            user_id=user_id,
            chat_id=chat_id,
            delta=delta,
            balance_after=balance,
            kind=str(kind),
            ref=ref[:255],
            actor_id=actor_id,
            idem_key=key,
            created_at=now or utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["idem_key"])
        .returning(col(LedgerEntry.id))
    )
    if entry_id is None:
        # Lost the race for this key to a transaction that has committed meanwhile.
        await session.execute(
            update(Member)
            .where(col(Member.user_id) == user_id)
            .values(
                balance=col(Member.balance) - delta,
                lifetime_earned=col(Member.lifetime_earned) - max(delta, 0),
            )
        )
        done = await _existing(session, key)
        if done is None:  # pragma: no cover - the conflicting row is committed by now
            raise RuntimeError(f"ledger key {key!r} conflicted but cannot be found")
        return done
    return Movement(True, user_id, delta, balance, int(entry_id))


async def award(
    session: AsyncSession,
    *,
    user_id: int,
    amount: int,
    kind: LedgerKind,
    key: str,
    chat_id: int | None = None,
    actor_id: int | None = None,
    ref: str = "",
    now: datetime | None = None,
) -> Movement:
    """Credit `amount` (> 0) points once per `key`."""
    _check_amount(amount)
    return await _move(
        session, user_id=user_id, delta=amount, kind=kind, key=key,
        chat_id=chat_id, actor_id=actor_id, ref=ref, now=now,
    )


async def spend(
    session: AsyncSession,
    *,
    user_id: int,
    amount: int,
    kind: LedgerKind,
    key: str,
    chat_id: int | None = None,
    actor_id: int | None = None,
    ref: str = "",
    now: datetime | None = None,
) -> Movement:
    """Debit `amount` (> 0) points once per `key`; raises `InsufficientPoints`."""
    _check_amount(amount)
    return await _move(
        session, user_id=user_id, delta=-amount, kind=kind, key=key,
        chat_id=chat_id, actor_id=actor_id, ref=ref, now=now,
    )


async def transfer(
    session: AsyncSession,
    *,
    from_user: int,
    to_user: int,
    amount: int,
    kind: LedgerKind,
    key: str,
    chat_id: int | None = None,
    actor_id: int | None = None,
    ref: str = "",
    now: datetime | None = None,
) -> tuple[Movement, Movement]:
    """Move points between members: two entries, keys `key:out` and `key:in`."""
    if from_user == to_user:
        raise ValueError("cannot transfer to oneself")
    out = await spend(
        session, user_id=from_user, amount=amount, kind=kind, key=f"{key}:out",
        chat_id=chat_id, actor_id=actor_id, ref=ref, now=now,
    )
    into = await award(
        session, user_id=to_user, amount=amount, kind=kind, key=f"{key}:in",
        chat_id=chat_id, actor_id=actor_id, ref=ref, now=now,
    )
    return out, into


@dataclass(frozen=True, slots=True)
class Award:
    """One credit for `award_many`; the fields mean what `award`'s arguments mean."""

    user_id: int
    amount: int
    kind: LedgerKind
    key: str
    chat_id: int | None = None
    actor_id: int | None = None
    ref: str = ""


async def award_many(
    session: AsyncSession,
    awards: Sequence[Award],
    *,
    now: datetime | None = None,
    balances: Mapping[int, int] | None = None,
    credit: Bulk | None = None,
    member_values: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[Movement]:
    """Credit many awards in a few statements, with `award`'s guarantees: one entry and
    the balance change together, once per key (a key used before, or twice in
    `awards`, reports the first movement with `applied=False`). Raises `UnknownMember`.

    The members' rows are read first — on PostgreSQL locked `FOR UPDATE`, in user id
    order — so a concurrent first delivery of the same key has committed (and is found)
    or waits for this transaction: no compensating update is ever needed here.
    The movements of new entries carry `entry_id=None` (look the entry up by its key).

    `balances`: the members' balances as this unit of work has them, read by the caller
    with the same lock (`FOR UPDATE` on PostgreSQL, in user id order) and not changed
    since; given, the members are not read again. A member missing from it is unknown.

    `credit` with `member_values`: the caller's own columns of the members' rows, set
    in the statement that credits them — an update of the members' rows by `uid`
    adding `gain` to `balance` and `lifetime_earned` (as `_credit` does) and setting
    what `member_values[uid]` gives; every member named there gets it (gain 0 if
    nothing is credited to them).
    """
    if not awards:
        return []
    for a in awards:
        _check_amount(a.amount)
    member = Member.__table__  # type: ignore[attr-defined]
    entry = LedgerEntry.__table__  # type: ignore[attr-defined]
    have: dict[int, int]
    if balances is None:
        users = sorted({a.user_id for a in awards})
        read = (
            select(member.c.user_id, member.c.balance)
            .where(member.c.user_id.in_(users))
            .order_by(member.c.user_id)
        )
        if session.get_bind().dialect.name == "postgresql":
            read = read.with_for_update()
        have = {int(u): int(b) for u, b in (await session.execute(read)).all()}
    else:
        have = dict(balances)
    keys = list({a.key: None for a in awards})
    done: dict[str, Movement] = {
        row.idem_key: Movement(False, row.user_id, row.delta, row.balance_after, row.id)
        for row in (
            await session.execute(
                select(
                    entry.c.id, entry.c.user_id, entry.c.delta, entry.c.balance_after,
                    entry.c.idem_key,
                ).where(entry.c.idem_key.in_(keys))
            )
        ).all()
    }
    created = now or utcnow()
    rows: list[dict[str, Any]] = []
    results: list[Movement] = []
    gained: dict[int, int] = {}
    for a in awards:
        if a.key in done:
            results.append(replace(done[a.key], applied=False))
            continue
        if a.user_id not in have:
            raise UnknownMember(a.user_id)
        have[a.user_id] += a.amount
        gained[a.user_id] = gained.get(a.user_id, 0) + a.amount
        rows.append(
            {
                "user_id": a.user_id,
                "chat_id": a.chat_id,
                "delta": a.amount,
                "balance_after": have[a.user_id],
                "kind": str(a.kind),
                "ref": a.ref[:255],
                "actor_id": a.actor_id,
                "idem_key": a.key,
                "created_at": created,
            }
        )
        movement = Movement(True, a.user_id, a.amount, have[a.user_id], None)
        done[a.key] = movement
        results.append(movement)
    extra = member_values if credit is not None and member_values else {}
    if extra:
        assert credit is not None
        await credit.execute(
            session, [{"uid": u, "gain": gained.get(u, 0), **v} for u, v in extra.items()]
        )
    rest = [{"uid": u, "gain": g} for u, g in gained.items() if u not in extra]
    if rest:
        await _CREDIT.execute(session, rest)
    if not rows:
        return results
    # A plain multi-row insert: asking for the new ids back in order would make SQLite
    # insert row by row. Callers that need an entry's id look it up by its key.
    await _ENTRIES.execute(session, rows)
    return results


def _credit(_dialect: str) -> Any:
    member = Member.__table__  # type: ignore[attr-defined]
    return (
        update(member)
        .where(member.c.user_id == bindparam("uid"))
        .values(
            balance=member.c.balance + bindparam("gain"),
            lifetime_earned=member.c.lifetime_earned + bindparam("gain"),
        )
    )


_CREDIT = Bulk(_credit, ["uid", "gain"])
_ENTRIES = Bulk(
    lambda _dialect: insert(LedgerEntry.__table__),  # type: ignore[attr-defined]
    ["user_id", "chat_id", "delta", "balance_after", "kind", "ref", "actor_id", "idem_key",
     "created_at"],
)


@dataclass(frozen=True, slots=True)
class InvariantReport:
    entries_total: int
    balances_total: int
    negative_balances: int
    mismatched_members: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return (
            self.entries_total == self.balances_total
            and self.negative_balances == 0
            and not self.mismatched_members
        )


async def check_invariant(session: AsyncSession) -> InvariantReport:
    """Sum of entries == sum of balances, per member and overall; no negative balance."""
    entries_total = await session.scalar(
        select(func.coalesce(func.sum(col(LedgerEntry.delta)), 0))
    )
    balances_total = await session.scalar(select(func.coalesce(func.sum(col(Member.balance)), 0)))
    negative = await session.scalar(
        select(func.count()).select_from(Member).where(col(Member.balance) < 0)
    )
    per_user = (
        select(col(LedgerEntry.user_id), func.sum(col(LedgerEntry.delta)).label("s"))
        .group_by(col(LedgerEntry.user_id))
        .subquery()
    )
    mismatched = (
        await session.execute(
            select(col(Member.user_id))
            .outerjoin(per_user, per_user.c.user_id == col(Member.user_id))
            .where(func.coalesce(per_user.c.s, 0) != col(Member.balance))
        )
    ).scalars().all()
    return InvariantReport(
        int(entries_total or 0),
        int(balances_total or 0),
        int(negative or 0),
        tuple(int(u) for u in mismatched),
    )
