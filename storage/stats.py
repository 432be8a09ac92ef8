"""What operators' reports count (`/stats`, `/review`): aggregates in SQL, one pond.

A pond's rows are those under its chat id and under the ids its group had before it
became a supergroup (`repo.pond_chat_ids`): the memberships move with the upgrade, the
history (ledger, check-ins, games, orders) stays where it was written.

Every figure is a `GROUP BY` or a conditional sum computed by the database, never a
walk over rows in Python, so a report costs a few statements however big the pond;
the statements are plain SQL that SQLite and PostgreSQL both run.

Spans are local days of the pond (its timezone), turned into UTC instants by
`LocalSpan`: `since` is the first day's midnight, `until` the midnight after the last
day (a span ending today counts what happened so far).

Definitions:

* members — the pond's seats that did not leave (as `/top` counts them), bots aside;
  "members on a day" — seats first seen by the end of that day and not gone by then;
* active members — those members seen in the span (`last_seen_at`), or with a ledger
  entry or a check-in in this pond in it;
* check-in rate of a day — the day's check-ins made in this pond (make-ups aside, they
  are bought later) ÷ the members on that day;
* points issued — the positive ledger entries of the pond (`ledger_entry.chat_id`) by
  kind; refunds (`refund`, `red_packet_refund`) give back what was spent and are counted
  apart as returned; points spent — the negative entries by kind;
* game participation — votes cast, guesses made, red-packet shares grabbed and lottery
  draws, in this pond's games, in the span;
* buyers (review) — members of the pond (any seat) or orders typed in the pond, whose
  orders were paid in the span: new when their first order ever was paid in the span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from games.checkin import zone
from storage.models import (
    Checkin,
    Draw,
    GuessRound,
    LedgerEntry,
    Member,
    Membership,
    Order,
    PriceGuess,
    RedPacket,
    RedPacketShare,
    UTCDateTime,
    Vote,
    VoteBallot,
)
from storage.repo import GONE, pond_chat_ids

RETURNS = ("refund", "red_packet_refund")
GAMES = ("votes", "guesses", "grabs", "draws")


@dataclass(frozen=True, slots=True)
class LocalSpan:
    """Local days `first`..`last` of a timezone, and the UTC instants around them."""

    first: date
    last: date
    timezone: str

    @classmethod
    def ending(cls, today: date, days: int, timezone: str) -> LocalSpan:
        return cls(today - timedelta(days=days - 1), today, timezone)

    def start_of(self, day: date) -> datetime:
        return datetime.combine(day, time(), zone(self.timezone)).astimezone(UTC)

    @property
    def since(self) -> datetime:
        return self.start_of(self.first)

    @property
    def until(self) -> datetime:
        return self.start_of(self.last + timedelta(days=1))

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


@dataclass(frozen=True, slots=True)
class Points:
    issued: dict[str, int] = field(default_factory=dict)  # kind -> points, refunds aside
    returned: dict[str, int] = field(default_factory=dict)  # refund kinds -> points
    spent: dict[str, int] = field(default_factory=dict)  # kind -> points (positive)

    @property
    def total_issued(self) -> int:
        return sum(self.issued.values())

    @property
    def total_spent(self) -> int:
        return sum(self.spent.values())

    @property
    def purchase_share(self) -> float | None:
        """Points from purchases ÷ all points issued (None: nothing issued)."""
        total = self.total_issued
        return self.issued.get("purchase", 0) / total if total else None


@dataclass(frozen=True, slots=True)
class DayCheckins:
    day: date
    checkins: int
    members: int

    @property
    def rate(self) -> float:
        return self.checkins / self.members if self.members else 0.0


@dataclass(frozen=True, slots=True)
class PondStats:
    members: int
    active: int
    days: list[DayCheckins]
    points: Points
    games: dict[str, int]  # GAMES -> count


@dataclass(frozen=True, slots=True)
class Sales:
    orders: int = 0
    cents: int = 0
    buyers: int = 0
    new_buyers: int = 0

    @property
    def returning_buyers(self) -> int:
        return self.buyers - self.new_buyers


@dataclass(frozen=True, slots=True)
class Review:
    sales: Sales
    by_phase: dict[str, Sales]  # phase -> orders and amount (buyers not split)
    points: Points
    games: dict[str, int]


_seat = Membership.__table__  # type: ignore[attr-defined]
_member = Member.__table__  # type: ignore[attr-defined]
_ledger = LedgerEntry.__table__  # type: ignore[attr-defined]
_checkin = Checkin.__table__  # type: ignore[attr-defined]
_order = Order.__table__  # type: ignore[attr-defined]
_vote = Vote.__table__  # type: ignore[attr-defined]
_ballot = VoteBallot.__table__  # type: ignore[attr-defined]
_round = GuessRound.__table__  # type: ignore[attr-defined]
_guess = PriceGuess.__table__  # type: ignore[attr-defined]
_packet = RedPacket.__table__  # type: ignore[attr-defined]
_share = RedPacketShare.__table__  # type: ignore[attr-defined]
_draw = Draw.__table__  # type: ignore[attr-defined]


def _at(value: datetime) -> Any:
    return literal(value, UTCDateTime())


def _present_at(end: datetime) -> Any:
    """A seat that was in the pond at `end`: first seen by then, and not gone then (a
    member who left and came back has a join after the leave)."""
    return and_(
        _seat.c.first_seen_at < _at(end),
        or_(
            _seat.c.left_at.is_(None),
            _seat.c.left_at >= _at(end),
            and_(_seat.c.joined_at.is_not(None), _seat.c.joined_at > _seat.c.left_at,
                 _seat.c.joined_at < _at(end)),
        ),
    )


def _human_seats(chat_id: int) -> Any:
    return (
        select()
        .select_from(_seat.join(_member, _member.c.user_id == _seat.c.user_id))
        .where(_seat.c.chat_id == chat_id, _member.c.is_bot.is_(False))
    )


async def pond_stats(session: AsyncSession, chat_id: int, span: LocalSpan) -> PondStats:
    since, until = span.since, span.until
    days = span.days
    ends = [span.start_of(d + timedelta(days=1)) for d in days]
    seats = _human_seats(chat_id)
    ids = await pond_chat_ids(session, chat_id)
    one = literal(1)
    counts = (await session.execute(seats.add_columns(
        func.coalesce(func.sum(case((_seat.c.status.not_in(GONE), 1), else_=0)), 0),
        *[func.coalesce(func.sum(case((_present_at(end), 1), else_=0)), 0) for end in ends],
    ))).one()
    members, per_day = int(counts[0]), [int(n) for n in counts[1:]]

    acted = select(_ledger.c.user_id).where(
        _ledger.c.chat_id.in_(ids), _ledger.c.created_at >= _at(since)
    ).union(
        select(_checkin.c.user_id).where(_checkin.c.chat_id.in_(ids),
                                         _checkin.c.day >= span.first)
    )
    active = int((await session.execute(seats.add_columns(func.count(one)).where(
        _seat.c.status.not_in(GONE),
        or_(_seat.c.last_seen_at >= _at(since), _seat.c.user_id.in_(acted)),
    ))).scalar_one())

    made: dict[date, int] = dict((await session.execute(
        select(_checkin.c.day, func.count(one))
        .where(_checkin.c.chat_id.in_(ids), _checkin.c.day >= span.first,
               _checkin.c.day <= span.last, _checkin.c.makeup.is_(False))
        .group_by(_checkin.c.day)
    )).all())
    return PondStats(
        members=members,
        active=active,
        days=[DayCheckins(d, int(made.get(d, 0)), n) for d, n in zip(days, per_day, strict=True)],
        points=await _points(session, ids, since, until),
        games=await _games(session, ids, since, until),
    )


async def _points(session: AsyncSession, ids: Sequence[int], since: datetime,
                  until: datetime) -> Points:
    rows = (await session.execute(
        select(
            _ledger.c.kind,
            func.coalesce(func.sum(case((_ledger.c.delta > 0, _ledger.c.delta), else_=0)), 0),
            func.coalesce(func.sum(case((_ledger.c.delta < 0, -_ledger.c.delta), else_=0)), 0),
        )
        .where(_ledger.c.chat_id.in_(ids), _ledger.c.created_at >= _at(since),
               _ledger.c.created_at < _at(until))
        .group_by(_ledger.c.kind)
        .order_by(_ledger.c.kind)
    )).all()
    issued = {str(k): int(p) for k, p, _s in rows if p and k not in RETURNS}
    returned = {str(k): int(p) for k, p, _s in rows if p and k in RETURNS}
    spent = {str(k): int(s) for k, _p, s in rows if s}
    return Points(issued, returned, spent)


async def _games(session: AsyncSession, ids: Sequence[int], since: datetime,
                 until: datetime) -> dict[str, int]:
    """Votes cast, guesses, grabs and draws in the pond's games: one statement."""
    n = func.count(literal(1))

    def within(column: Any) -> Any:
        return and_(column >= _at(since), column < _at(until))

    votes = (
        select(n).select_from(_ballot.join(_vote, _vote.c.id == _ballot.c.vote_id))
        .where(_vote.c.chat_id.in_(ids), within(_ballot.c.cast_at))
    )
    guesses = (
        select(n).select_from(_guess.join(_round, _round.c.id == _guess.c.round_id))
        .where(_round.c.chat_id.in_(ids), within(_guess.c.created_at))
    )
    grabs = (
        select(n).select_from(_share.join(_packet, _packet.c.id == _share.c.packet_id))
        .where(_packet.c.chat_id.in_(ids), _share.c.user_id.is_not(None),
               within(_share.c.grabbed_at))
    )
    draws = select(n).where(_draw.c.chat_id.in_(ids), within(_draw.c.created_at))
    row = (await session.execute(select(
        votes.scalar_subquery(), guesses.scalar_subquery(), grabs.scalar_subquery(),
        draws.scalar_subquery(),
    ))).one()
    return {name: int(value or 0) for name, value in zip(GAMES, row, strict=True)}


# -- the campaign review ---------------------------------------------------------------


def _pond_orders(chat_id: int, ids: Sequence[int]) -> Any:
    """Orders of the pond: typed in it, or of anyone who has a seat in it."""
    return or_(
        _order.c.chat_id.in_(ids),
        _order.c.user_id.in_(select(_seat.c.user_id).where(_seat.c.chat_id == chat_id)),
    )


def _within(intervals: Sequence[tuple[datetime, datetime]]) -> Any:
    return or_(*[
        and_(_order.c.paid_at >= _at(a), _order.c.paid_at < _at(b)) for a, b in intervals
    ])


async def review(
    session: AsyncSession,
    chat_id: int,
    span: LocalSpan,
    phases: dict[str, list[tuple[datetime, datetime]]],
) -> Review:
    """The campaign's figures over `span`; `phases` maps each phase to the UTC intervals
    of the days it owns (a day belongs to one phase)."""
    since, until = span.since, span.until
    ids = await pond_chat_ids(session, chat_id)
    in_span = and_(_order.c.paid_at >= _at(since), _order.c.paid_at < _at(until),
                   _pond_orders(chat_id, ids))
    names = list(phases)
    sums: list[Any] = []
    for name in names:
        inside = _within(phases[name]) if phases[name] else literal(False)
        sums += [func.coalesce(func.sum(case((inside, 1), else_=0)), 0),
                 func.coalesce(func.sum(case((inside, _order.c.amount_cents), else_=0)), 0)]
    totals = (await session.execute(
        select(func.count(literal(1)), func.coalesce(func.sum(_order.c.amount_cents), 0), *sums)
        .where(in_span)
    )).one()
    by_phase = {
        name: Sales(int(totals[2 + 2 * i]), int(totals[3 + 2 * i]))
        for i, name in enumerate(names)
    }
    buyers = select(_order.c.user_id).where(in_span).group_by(_order.c.user_id).subquery()
    first = (
        select(_order.c.user_id, func.min(_order.c.paid_at).label("first_paid"))
        .where(_order.c.user_id.in_(select(buyers.c.user_id)))
        .group_by(_order.c.user_id)
        .subquery()
    )
    row = (await session.execute(select(
        func.count(literal(1)),
        func.coalesce(func.sum(case((first.c.first_paid >= _at(since), 1), else_=0)), 0),
    ).select_from(first))).one()
    sales = Sales(int(totals[0]), int(totals[1]), int(row[0]), int(row[1]))
    return Review(
        sales=sales,
        by_phase=by_phase,
        points=await _points(session, ids, since, until),
        games=await _games(session, ids, since, until),
    )
