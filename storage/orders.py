"""Purchases (SPEC F2) and the tiers they lead to (F10): recording one order, importing
many, and the notices of a member's new tier.

Recording an order is one unit of work: the `purchase_order` row, the points (ledger
kind `purchase`, key `order:<order_no>`), the member's lifetime spend and their tier
change together or not at all. The order number is the idempotency key: the row is
inserted first with `ON CONFLICT (order_no) DO NOTHING`, and only the delivery whose
insert took the number goes on. On SQLite write transactions take turns (BEGIN
IMMEDIATE); on PostgreSQL a second concurrent delivery of the same number waits in its
insert for the first transaction and, once that has committed, inserts nothing — no
IntegrityError aborts its transaction (see storage/ledger.py) — and reports the order as
already recorded. The ledger key is then never contested.

The member's row is changed by `UPDATE … SET lifetime_spent_cents = lifetime_spent_cents
+ :c RETURNING …`, which locks it on PostgreSQL before the tier is read from it: two
orders of one member cannot both compute a tier from the same old spend.

Tiers are shop-wide names stored on the member (`member.tier`, empty for a plain member)
as computed by the last recorded purchase, from the tiers setting the caller passes: a
typed `/order` in a pond uses that pond's settings, an `/order` in a private chat and
an import the defaults (`PondSettings()`). A member who moves up a tier is told by DM
(only when their DM is linked): a typed order's handler sends it after its commit; an
import, run by the command line without a bot, leaves a `scheduled_task` (job
`orders.tier_notice`, key `orders.tier:<user_id>:<tier>`) in the same transaction, which
the running bot's scheduler finds within seconds (its sweep) — or at its next start.

An import is all-or-nothing and built for large files: a handful of set-based
statements per few thousand rows inside one transaction, never one per row. On
PostgreSQL it first locks `purchase_order` against other writers (`SHARE ROW
EXCLUSIVE`), so an `/order` typed meanwhile waits for it instead of slipping an order
number in between the import's check and its insert.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games import orders as rules
from games.orders import BadLine, OrderRow
from games.settings import PondSettings
from games.tiers import MEMBER, Tiers, parse_tiers, tier_for
from storage import ledger
from storage.bulk import Bulk
from storage.db import Database
from storage.dialect import insert_for
from storage.export import SchemaNotReady
from storage.ledger import Award
from storage.models import Job, LedgerKind, Member, Order, ScheduledTask, TaskState, utcnow

SOURCE_COMMAND = "command"
SOURCE_IMPORT = "import"
CHUNK = 5_000  # rows per set-based statement (SQLite allows 32,766 parameters)

T = TypeVar("T")


def ledger_key(order_no: str) -> str:
    return f"order:{order_no}"


def notice_key(user_id: int, tier: str) -> str:
    return f"orders.tier:{user_id}:{tier}"


def stored_tier(name: str) -> str:
    """What `member.tier` holds: the tier's name, empty for a plain member."""
    return "" if name == MEMBER else name


def promoted(before: str, after: str, tiers: Tiers) -> bool:
    """A move up the tiers (a tier renamed or removed from the setting counts as
    below all of them); a member moved down by a changed setting is not told."""
    rank = {t.name: i for i, t in enumerate(tiers)}
    return after != before and rank.get(after, -1) > rank.get(before or MEMBER, -1)


@dataclass(frozen=True, slots=True)
class OrderView:
    order_no: str
    user_id: int
    cents: int
    points: int
    paid_at: datetime
    source: str


@dataclass(frozen=True, slots=True)
class Recorded:
    """What `record_order` did. `applied` False: the order number was recorded before
    (`existing` is that order) and nothing changed."""

    applied: bool
    order_no: str
    user_id: int
    cents: int
    points: int
    balance: int = 0
    spent_cents: int = 0
    tier_before: str = MEMBER
    tier_after: str = MEMBER
    promoted: bool = False
    dm_linked: bool = False
    language_code: str | None = None
    existing: OrderView | None = None


def _order_view(o: Any) -> OrderView:
    return OrderView(o.order_no, o.user_id, o.amount_cents, o.points, o.paid_at, o.source)


async def find_order(session: AsyncSession, order_no: str) -> OrderView | None:
    row = (
        await session.execute(
            select(
                col(Order.order_no), col(Order.user_id), col(Order.amount_cents),
                col(Order.points), col(Order.paid_at), col(Order.source),
            ).where(col(Order.order_no) == order_no)
        )
    ).first()
    return None if row is None else _order_view(row)


async def record_order(
    session: AsyncSession,
    *,
    order_no: str,
    user_id: int,
    cents: int,
    points_per_yuan: float,
    tiers: Tiers,
    source: str = SOURCE_COMMAND,
    chat_id: int | None = None,
    actor_id: int | None = None,
    paid_at: datetime | None = None,
    now: datetime | None = None,
) -> Recorded:
    """Record one purchase once per order number (see module docstring). Raises
    `ledger.UnknownMember` (the caller's transaction then rolls back the order)."""
    if cents <= 0:
        raise ValueError("an order's amount is positive")
    now = now or utcnow()
    points = rules.points_for(cents, points_per_yuan)
    order_id = await session.scalar(
        insert_for(session, Order.__table__)  # type: ignore[attr-defined]
        .values(
            order_no=order_no, user_id=user_id, amount_cents=cents, points=points,
            paid_at=paid_at or now, source=source, chat_id=chat_id, actor_id=actor_id,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["order_no"])
        .returning(col(Order.id))
    )
    if order_id is None:
        existing = await find_order(session, order_no)
        if existing is None:  # pragma: no cover - the conflicting row is committed by now
            raise RuntimeError(f"order {order_no!r} conflicted but cannot be found")
        return Recorded(
            False, order_no, existing.user_id, existing.cents, existing.points,
            existing=existing,
        )
    member = (
        await session.execute(
            update(Member)
            .where(col(Member.user_id) == user_id)
            .values(lifetime_spent_cents=col(Member.lifetime_spent_cents) + cents)
            .returning(
                col(Member.lifetime_spent_cents), col(Member.tier), col(Member.balance),
                col(Member.dm_linked), col(Member.language_code),
            )
        )
    ).first()
    if member is None:
        raise ledger.UnknownMember(user_id)
    balance = int(member.balance)
    if points > 0:
        move = await ledger.award(
            session, user_id=user_id, amount=points, kind=LedgerKind.purchase,
            key=ledger_key(order_no), chat_id=chat_id, actor_id=actor_id, ref=order_no,
            now=now,
        )
        balance = move.balance
    spent = int(member.lifetime_spent_cents)
    before = member.tier or MEMBER
    tier = tier_for(spent, tiers)
    after = tier.name if tier is not None else MEMBER
    if stored_tier(after) != member.tier:
        await session.execute(
            update(Member).where(col(Member.user_id) == user_id).values(tier=stored_tier(after))
        )
    return Recorded(
        True, order_no, user_id, cents, points, balance, spent, before, after,
        promoted(before, after, tiers), bool(member.dm_linked), member.language_code,
    )


async def spent_of(session: AsyncSession, user_id: int) -> int:
    """The member's lifetime spend in cents (0 for someone unknown)."""
    spent = await session.scalar(
        select(col(Member.lifetime_spent_cents)).where(col(Member.user_id) == user_id)
    )
    return int(spent or 0)


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who a tier notice goes to, as the member's row says now."""

    user_id: int
    tier: str
    dm_linked: bool
    language_code: str | None


async def recipient(session: AsyncSession, user_id: int) -> Recipient | None:
    row = (
        await session.execute(
            select(
                col(Member.tier), col(Member.dm_linked), col(Member.language_code)
            ).where(col(Member.user_id) == user_id)
        )
    ).first()
    if row is None:
        return None
    return Recipient(user_id, row.tier or MEMBER, bool(row.dm_linked), row.language_code)


# -- import ------------------------------------------------------------------------------


class ImportRefused(Exception):
    """Bad lines in the file: nothing was imported."""

    def __init__(self, bad: Sequence[BadLine]) -> None:
        super().__init__(f"{len(bad)} bad line(s)")
        self.bad = list(bad)


@dataclass(frozen=True, slots=True)
class ImportResult:
    imported: int
    already: int
    points: int = 0
    promoted: int = 0  # members who moved up a tier
    notices: int = 0  # tier notices left for the bot (members with a linked DM)


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


async def import_orders(
    session: AsyncSession,
    rows: Sequence[OrderRow],
    *,
    points_per_yuan: float,
    tiers: Tiers,
    bad: Sequence[BadLine] = (),
    now: datetime | None = None,
) -> ImportResult:
    """Record every order of `rows` that is not recorded yet, in the caller's unit of
    work. With lines already found bad (`bad`, from reading the file), or rows naming a
    member the bot has not seen, raises `ImportRefused` listing all of them, in line
    order, before writing anything."""
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("LOCK TABLE purchase_order IN SHARE ROW EXCLUSIVE MODE"))
    users = sorted({r.user_id for r in rows})
    known: dict[int, tuple[int, str, bool]] = {}
    member = Member.__table__  # type: ignore[attr-defined]
    for users_part in _chunks(users):
        for uid, spent, tier, linked in (
            await session.execute(
                select(
                    member.c.user_id, member.c.lifetime_spent_cents, member.c.tier,
                    member.c.dm_linked,
                ).where(member.c.user_id.in_(users_part))
            )
        ).all():
            known[int(uid)] = (int(spent), str(tier or ""), bool(linked))
    unknown = [
        BadLine(r.line, f"user_id {r.user_id} is not a member the bot has seen")
        for r in rows if r.user_id not in known
    ]
    if unknown or bad:
        raise ImportRefused(sorted([*bad, *unknown], key=lambda b: b.line))
    recorded: set[str] = set()
    order = Order.__table__  # type: ignore[attr-defined]
    numbers = [r.order_no for r in rows]
    for numbers_part in _chunks(numbers):
        recorded.update(
            (await session.scalars(
                select(order.c.order_no).where(order.c.order_no.in_(numbers_part))
            ))
            .all()
        )
    new = [r for r in rows if r.order_no not in recorded]
    already = len(rows) - len(new)
    if not new:
        return ImportResult(0, already)
    order_rows: list[dict[str, Any]] = []
    awards: list[Award] = []
    spent_more: dict[int, int] = {}
    for r in new:
        points = rules.points_for(r.cents, points_per_yuan)
        order_rows.append({
            "order_no": r.order_no, "user_id": r.user_id, "amount_cents": r.cents,
            "points": points, "paid_at": r.paid_at or now, "source": SOURCE_IMPORT,
            "chat_id": None, "actor_id": None, "created_at": now,
        })
        if points > 0:
            awards.append(
                Award(r.user_id, points, LedgerKind.purchase, ledger_key(r.order_no),
                      ref=r.order_no)
            )
        spent_more[r.user_id] = spent_more.get(r.user_id, 0) + r.cents
    for rows_part in _chunks(order_rows):
        await _ORDERS.execute(session, rows_part)
    for awards_part in _chunks(awards):
        await ledger.award_many(session, awards_part, now=now)
    changes: list[dict[str, Any]] = []
    notices: list[dict[str, Any]] = []
    moved_up = 0
    for uid, more in spent_more.items():
        spent, stored, linked = known[uid]
        tier = tier_for(spent + more, tiers)
        after = tier.name if tier is not None else MEMBER
        changes.append({"uid": uid, "more": more, "tier": stored_tier(after)})
        if promoted(stored, after, tiers):
            moved_up += 1
            if linked:
                notices.append(_notice_row(uid, after, now))
    for changes_part in _chunks(changes):
        await _SPENT.execute(session, changes_part)
    for notices_part in _chunks(notices):
        await session.execute(
            insert_for(session, ScheduledTask.__table__)  # type: ignore[attr-defined]
            .on_conflict_do_nothing(index_elements=["key"]),
            list(notices_part),
        )
    return ImportResult(
        len(new), already, sum(a.amount for a in awards), moved_up, len(notices)
    )


def _notice_row(user_id: int, tier: str, now: datetime) -> dict[str, Any]:
    return {
        "key": notice_key(user_id, tier),
        "job": str(Job.tier_notice),
        "run_at": now,
        "payload": {"user_id": user_id, "tier": tier},
        "chat_id": None,
        "state": str(TaskState.pending),
        "catch_up": True,
        "grace_seconds": int(timedelta(minutes=10).total_seconds()),
        "attempts": 0,
        "last_error": "",
        "created_at": now,
    }


_ORDERS = Bulk(
    lambda _dialect: insert(Order.__table__),  # type: ignore[attr-defined]
    ["order_no", "user_id", "amount_cents", "points", "paid_at", "source", "chat_id",
     "actor_id", "created_at"],
)


def _spent(_dialect: str) -> Any:
    member = Member.__table__  # type: ignore[attr-defined]
    return (
        update(member)
        .where(member.c.user_id == bindparam("uid"))
        .values(
            lifetime_spent_cents=member.c.lifetime_spent_cents + bindparam("more"),
            tier=bindparam("tier"),
        )
    )


_SPENT = Bulk(_spent, ["uid", "more", "tier"])


class FileProblem(Exception):
    """The file cannot be read at all (missing, not UTF-8)."""


def import_file(
    url: str | URL,
    path: str | os.PathLike[str],
    *,
    settings: PondSettings | None = None,
    now: datetime | None = None,
) -> ImportResult:
    """`pondbot import orders FILE`: read, check every line, import all or nothing.

    Raises `FileProblem`, `SchemaNotReady` or `ImportRefused` (every bad line, nothing
    imported). Points per yuan and tiers are the shop-wide defaults (`PondSettings()`)."""
    settings = settings or PondSettings()
    now = now or utcnow()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FileProblem(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileProblem(f"line {line}: not UTF-8 (save the file as UTF-8)") from None
    rows, bad = rules.parse_orders_csv(io.StringIO(decoded, newline=""), now=now)
    from storage.migrate import ais_up_to_date, run_blocking  # alembic: only when called

    if not run_blocking(lambda: ais_up_to_date(url)):
        raise SchemaNotReady
    tiers = parse_tiers(settings.tiers)

    async def run() -> ImportResult:
        db = Database(url)
        try:
            async with db.transaction() as session:
                return await import_orders(
                    session, rows, points_per_yuan=settings.points_per_yuan, tiers=tiers,
                    bad=bad, now=now,
                )
        finally:
            await db.dispose()

    return run_blocking(run)


__all__ = [
    "SOURCE_COMMAND",
    "SOURCE_IMPORT",
    "FileProblem",
    "ImportRefused",
    "ImportResult",
    "OrderView",
    "Recipient",
    "Recorded",
    "SchemaNotReady",
    "find_order",
    "import_file",
    "import_orders",
    "ledger_key",
    "notice_key",
    "promoted",
    "recipient",
    "record_order",
    "spent_of",
    "stored_tier",
]
