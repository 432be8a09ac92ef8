"""Segments (F10): every member's RFM figures and last activity in one query, then
classified by the pure rules of games/segments.py.

One pass: the orders grouped by member (count, last `paid_at`) and the seats grouped by
member (last seen, in the pond or anywhere) joined to the member rows; the money is the
member's `lifetime_spent_cents` (kept with every recorded purchase, storage/orders.py).
A shop of 10,000 members and 50,000 orders reads in well under a second on SQLite
(bench/segments.py) — no per-member statement.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games.orders import yuan
from games.segments import Segment, Standing, Thresholds, in_target, standing
from games.settings import PondSettings
from storage import deliveries
from storage.db import Database
from storage.dialect import insert_for
from storage.models import DeliveryState, Member, Membership, Order, SegmentDelivery
from storage.repo import GONE
from storage.settings import shop_settings

MEMBER = Member.__table__  # type: ignore[attr-defined]
SEAT = Membership.__table__  # type: ignore[attr-defined]
ORDER = Order.__table__  # type: ignore[attr-defined]


def thresholds(settings: PondSettings) -> Thresholds:
    return Thresholds(
        recent_days=settings.segment_recent_days,
        min_orders=settings.segment_min_orders,
        min_spend_cents=settings.segment_min_spend * 100,
        churn_days=settings.churn_days,
    )


@dataclass(frozen=True, slots=True)
class MemberStanding:
    user_id: int
    dm_linked: bool
    last_seen_at: datetime | None
    standing: Standing


async def standings(
    session: AsyncSession,
    t: Thresholds,
    now: datetime,
    *,
    chat_id: int | None = None,
) -> list[MemberStanding]:
    """Every member's standing (bots left out), ordered by user id: of pond `chat_id`'s
    present members, or (None) of the whole shop. Last seen is in that pond, or anywhere."""
    orders = (
        select(
            ORDER.c.user_id,
            func.count().label("n"),
            func.max(ORDER.c.paid_at).label("last_paid"),
        )
        .group_by(ORDER.c.user_id)
        .subquery("o")
    )
    seen_q = select(SEAT.c.user_id, func.max(SEAT.c.last_seen_at).label("last_seen"))
    if chat_id is not None:
        seen_q = seen_q.where(SEAT.c.chat_id == chat_id, SEAT.c.status.not_in(GONE))
    seen = seen_q.group_by(SEAT.c.user_id).subquery("s")
    query = (
        select(
            MEMBER.c.user_id,
            MEMBER.c.dm_linked,
            MEMBER.c.lifetime_spent_cents,
            orders.c.n,
            orders.c.last_paid,
            seen.c.last_seen,
        )
        .select_from(MEMBER)
        .outerjoin(orders, orders.c.user_id == MEMBER.c.user_id)
        .where(MEMBER.c.is_bot.is_(False))
        .order_by(MEMBER.c.user_id)
    )
    if chat_id is not None:
        query = query.join(seen, seen.c.user_id == MEMBER.c.user_id)
    else:
        query = query.outerjoin(seen, seen.c.user_id == MEMBER.c.user_id)
    rows = (await session.execute(query)).all()
    return [
        MemberStanding(
            user_id,
            bool(linked),
            last_seen,
            standing(last_paid, int(n or 0), int(spent or 0), last_seen, now, t),
        )
        for user_id, linked, spent, n, last_paid, last_seen in rows
    ]


def counts(rows: list[MemberStanding]) -> tuple[dict[Segment, int], int]:
    """Members per segment (every segment named, zeros too) and how many at churn risk."""
    by = Counter(r.standing.segment for r in rows)
    return {s: by.get(s, 0) for s in Segment}, sum(r.standing.churn_risk for r in rows)


def targets(rows: list[MemberStanding], target: str) -> Iterator[int]:
    """The members of `target` (a segment, or churn) whose private chat is linked."""
    return (r.user_id for r in rows if r.dm_linked and in_target(r.standing, target))


# -- pondbot export segments ---------------------------------------------------------------

SEGMENT_COLUMNS = (
    "user_id", "recency_days", "orders", "spent", "segment", "churn_risk", "last_seen_at",
)


async def export_segments(db: Database, out: TextIO, now: datetime | None = None) -> int:
    """Every member's standing under the shop-wide thresholds:
    `user_id,recency_days,orders,spent,segment,churn_risk,last_seen_at` — `recency_days`
    empty for a member who never bought, `spent` in yuan with two decimals, `churn_risk`
    1/0, `last_seen_at` ISO 8601 in UTC (their latest in any pond)."""
    now = now or datetime.now(UTC)
    async with db.transaction(readonly=True) as session:
        t = thresholds(await shop_settings(session))
        rows = await standings(session, t, now)
    writer = csv.writer(out)
    writer.writerow(SEGMENT_COLUMNS)
    writer.writerows(
        (
            r.user_id,
            "" if r.standing.recency_days is None else r.standing.recency_days,
            r.standing.orders,
            yuan(r.standing.spent_cents),
            str(r.standing.segment),
            int(r.standing.churn_risk),
            "" if r.last_seen_at is None else r.last_seen_at.astimezone(UTC).isoformat(),
        )
        for r in rows
    )
    return len(rows)


# -- posts and drops `to=<segment>`: one DM per member and occurrence ----------------------
#
# The same at-most-once bookkeeping as a broadcast's (storage/promo.py): rows are made
# once per occurrence (a re-run inserts nothing new), claimed `queued` in a committed
# transaction before they are handed to the outbox, marked `sending` (committed) right
# before the outbox issues their request, and finished with Telegram's answer. A row
# found `queued` by a later run never went out: it is `pending` again. One found
# `sending` was on the wire when its process died: `unknown`, never sent again — no
# member gets a second copy, also across a restart.

DELIVERY = SegmentDelivery.__table__  # type: ignore[attr-defined]


def deliver_key(post_id: int, occurrence: datetime) -> str:
    return f"segment.deliver:{post_id}:{occurrence.isoformat()}"


async def create_deliveries(
    session: AsyncSession, post_id: int, occurrence: datetime, chat_id: int,
    user_ids: Sequence[int], now: datetime,
) -> int:
    """One pending row per member for this occurrence (existing rows are kept)."""
    rows = [
        {
            "post_id": post_id, "occurrence": occurrence, "user_id": u, "chat_id": chat_id,
            "state": str(DeliveryState.pending), "claim": None, "updated_at": now,
        }
        for u in user_ids
    ]
    stmt = insert_for(session, DELIVERY)
    for start in range(0, len(rows), 500):
        await session.execute(
            stmt.values(rows[start : start + 500]).on_conflict_do_nothing(
                index_elements=["post_id", "occurrence", "user_id"]
            )
        )
    return len(rows)


def _of(post_id: int, occurrence: datetime) -> list[Any]:
    return deliveries.of_occurrence(SegmentDelivery, post_id, occurrence)


async def release_orphans(
    session: AsyncSession, post_id: int, occurrence: datetime, now: datetime
) -> tuple[int, int]:
    """Rows a dead run left (storage/deliveries.py): (put back, unknown)."""
    return await deliveries.release_orphans(session, SegmentDelivery, post_id, occurrence, now)


async def mark_sending(session: AsyncSession, delivery_id: int, claim: str, now: datetime) -> bool:
    """Right before the row's DM is issued: `queued` → `sending`; False when the row is
    no longer this claim's (the DM must not go)."""
    return await deliveries.mark_sending(session, SegmentDelivery, delivery_id, claim, now)


async def claim_deliveries(
    session: AsyncSession, post_id: int, occurrence: datetime, limit: int, now: datetime
) -> list[tuple[int, int, str]]:
    """Mark up to `limit` pending rows `queued`: their (row id, member id, claim token)."""
    ids = (
        await session.execute(
            select(col(SegmentDelivery.id))
            .where(*_of(post_id, occurrence), col(SegmentDelivery.state) == DeliveryState.pending)
            .order_by(col(SegmentDelivery.id))
            .limit(limit)
        )
    ).scalars().all()
    if not ids:
        return []
    token = await deliveries.queue(session, SegmentDelivery, ids, now)
    rows = await session.execute(
        select(col(SegmentDelivery.id), col(SegmentDelivery.user_id))
        .where(col(SegmentDelivery.claim) == token)
        .order_by(col(SegmentDelivery.id))
    )
    return [(i, u, token) for i, u in rows.all() if i is not None]


async def finish_deliveries(
    session: AsyncSession,
    outcomes: Sequence[tuple[int, DeliveryState]],
    now: datetime,
    *,
    claim: str | None = None,
) -> None:
    """Record the answers; `pending` puts back a row whose DM was never issued; with
    `claim`, only that claim's rows."""
    for delivery_id, state in outcomes:
        await deliveries.finish(session, SegmentDelivery, delivery_id, state, now, claim=claim)


async def delivery_counts(
    session: AsyncSession, post_id: int, occurrence: datetime
) -> dict[str, int]:
    rows = await session.execute(
        select(col(SegmentDelivery.state), func.count())
        .where(*_of(post_id, occurrence))
        .group_by(col(SegmentDelivery.state))
    )
    return {str(state): int(n) for state, n in rows.all()}
