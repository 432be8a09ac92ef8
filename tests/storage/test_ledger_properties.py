"""Property test: the ledger behaves like a tiny pure-Python model of itself.

Random sequences of awards, spends and transfers over a handful of members (one of them
unknown), with keys drawn from a small pool so that replays are frequent and amounts that
often exceed balances, run against a fresh SQLite file per example and against `Model`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hypothesis import event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlmodel import col

from storage import ledger
from storage.db import Database
from storage.ledger import InsufficientPoints, LedgerError, UnknownMember
from storage.models import LedgerEntry, LedgerKind, Member
from storage.repo import UserInfo, upsert_member

MEMBERS = (1, 2, 3)
UNKNOWN = 99
KEYS = tuple(f"k{i}" for i in range(12))


@dataclass(frozen=True)
class Op:
    kind: Literal["award", "spend", "transfer"]
    user: int
    amount: int
    key: str
    to: int = 0


@dataclass
class Model:
    """What the ledger must do, in a dozen lines."""

    balances: dict[int, int] = field(default_factory=lambda: dict.fromkeys(MEMBERS, 0))
    earned: dict[int, int] = field(default_factory=lambda: dict.fromkeys(MEMBERS, 0))
    keys: dict[str, int] = field(default_factory=dict)  # key -> delta

    def _move(self, user: int, delta: int, key: str) -> bool:
        if key in self.keys:
            return False
        if user not in self.balances:
            raise UnknownMember(user)
        if self.balances[user] + delta < 0:
            raise InsufficientPoints(user, self.balances[user], -delta)
        self.balances[user] += delta
        self.earned[user] += max(delta, 0)
        self.keys[key] = delta
        return True

    def apply(self, op: Op) -> tuple[bool, ...] | type[LedgerError]:
        """One unit of work: all of it happens, or (on an error) none of it."""
        saved = (dict(self.balances), dict(self.earned), dict(self.keys))
        try:
            if op.kind == "award":
                return (self._move(op.user, op.amount, op.key),)
            if op.kind == "spend":
                return (self._move(op.user, -op.amount, op.key),)
            return (
                self._move(op.user, -op.amount, f"{op.key}:out"),
                self._move(op.to, op.amount, f"{op.key}:in"),
            )
        except LedgerError as e:
            self.balances, self.earned, self.keys = saved
            return type(e)


async def run_real(db: Database, op: Op) -> tuple[bool, ...] | type[LedgerError]:
    try:
        async with db.transaction() as s:
            if op.kind == "award":
                m = await ledger.award(
                    s, user_id=op.user, amount=op.amount, kind=LedgerKind.task_bonus, key=op.key
                )
                return (m.applied,)
            if op.kind == "spend":
                m = await ledger.spend(
                    s, user_id=op.user, amount=op.amount, kind=LedgerKind.redeem, key=op.key
                )
                return (m.applied,)
            out, into = await ledger.transfer(
                s, from_user=op.user, to_user=op.to, amount=op.amount,
                kind=LedgerKind.red_packet, key=op.key,
            )  # fmt: skip
            return (out.applied, into.applied)
    except LedgerError as e:
        return type(e)


# Mostly known members, sometimes an unknown one. Awards are generous; debits are small
# mostly, and sometimes larger than any balance.
users = st.sampled_from((*MEMBERS, *MEMBERS, UNKNOWN))
keys = st.sampled_from(KEYS)
credits = st.integers(1, 60)
debits = st.one_of(st.integers(1, 10), st.integers(1, 10), st.integers(11, 200))
awards = st.builds(Op, kind=st.just("award"), user=users, amount=credits, key=keys)
spends = st.builds(Op, kind=st.just("spend"), user=users, amount=debits, key=keys)
transfers = st.builds(
    lambda pair, amount, key: Op("transfer", pair[0], amount, key, to=pair[1]),
    st.lists(users, min_size=2, max_size=2, unique=True),
    debits,
    keys,
)
ops = st.lists(st.one_of(awards, awards, spends, transfers), min_size=3, max_size=30)


async def check_sequence(url: str, sequence: list[Op]) -> None:
    db = Database(url)
    model = Model()
    try:
        async with db.transaction() as s:
            for uid in MEMBERS:
                await upsert_member(s, UserInfo(id=uid, first_name=f"u{uid}"))
        # Every member starts with some points, so that debits succeed as well as fail.
        seed = [Op("award", uid, 30, f"seed:{uid}") for uid in MEMBERS]
        for op in [*seed, *sequence]:
            expected = model.apply(op)
            assert await run_real(db, op) == expected, op
            event(expected.__name__ if isinstance(expected, type) else f"{op.kind} {expected}")
        async with db.transaction(readonly=True) as s:
            rows = (await s.execute(select(Member))).scalars().all()
            report = await ledger.check_invariant(s)
            per_key = {
                key: n
                for key, n in await s.execute(
                    select(col(LedgerEntry.idem_key), func.count()).group_by(
                        col(LedgerEntry.idem_key)
                    )
                )
            }
            deltas = {
                key: delta
                for key, delta in await s.execute(
                    select(col(LedgerEntry.idem_key), col(LedgerEntry.delta))
                )
            }
    finally:
        await db.dispose()
    assert {m.user_id: m.balance for m in rows} == model.balances
    assert {m.user_id: m.lifetime_earned for m in rows} == model.earned
    assert all(m.balance >= 0 for m in rows)
    assert report.ok, report
    assert set(per_key.values()) <= {1}
    assert deltas == model.keys


@settings(max_examples=60, deadline=None)
@given(sequence=ops)
def test_ledger_matches_the_model(sqlite_template: Path, sequence: list[Op]) -> None:
    """A fresh database per example: a copy of the session's migrated template."""
    with tempfile.TemporaryDirectory(prefix="pondbot-prop-") as tmp:
        path = Path(tmp) / "ledger.db"
        shutil.copyfile(sqlite_template, path)
        asyncio.run(check_sequence(f"sqlite+aiosqlite:///{path}", sequence))
