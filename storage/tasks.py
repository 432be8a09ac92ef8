"""Daily tasks in the database (SPEC F13): what a member did in a pond on a day, and
the bonus.

The rules are in `games.tasks`; `facts_many` reads everything they need for many
members of one pond at once: one statement for what the pond had that day (its votes,
rounds, packets and draws, the prize table), then one per kind of game it had, for all
the members together. `games_opened` is the cheaper question the actions ask first:
did an operator open any game in the pond that day? Without one there is no task day
and nothing more to read.

The bonus is a ledger award of kind `task_bonus` under `task_bonus:{user_id}:{day}`:
once per member and day, shop-wide — a member of two ponds earns it once a day. Racing
deliveries and replays find the key taken (`storage.ledger`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from games import tasks as rules
from games.checkin import local_day
from storage import ledger
from storage.models import (
    Checkin,
    Draw,
    GuessRound,
    LedgerEntry,
    LedgerKind,
    Member,
    PriceGuess,
    Prize,
    RedPacket,
    RedPacketShare,
    Vote,
    VoteBallot,
)

CHECKIN = Checkin.__table__  # type: ignore[attr-defined]
VOTE = Vote.__table__  # type: ignore[attr-defined]
BALLOT = VoteBallot.__table__  # type: ignore[attr-defined]
ROUND = GuessRound.__table__  # type: ignore[attr-defined]
GUESS = PriceGuess.__table__  # type: ignore[attr-defined]
PACKET = RedPacket.__table__  # type: ignore[attr-defined]
SHARE = RedPacketShare.__table__  # type: ignore[attr-defined]
DRAW = Draw.__table__  # type: ignore[attr-defined]
PRIZE = Prize.__table__  # type: ignore[attr-defined]
LEDGER = LedgerEntry.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]

CANCELLED = "canceled"  # a vote's or round's state after an operator's cancel
RECALLED = "recalled"  # a packet's state after a recall


def bonus_key(user_id: int, day: date) -> str:
    return f"task_bonus:{user_id}:{day.isoformat()}"


def _votes(chat_id: int, start: datetime, end: datetime) -> Any:
    return and_(VOTE.c.chat_id == chat_id, VOTE.c.opened_at >= start, VOTE.c.opened_at < end,
                VOTE.c.state != CANCELLED)


def _rounds(chat_id: int, start: datetime, end: datetime) -> Any:
    return and_(ROUND.c.chat_id == chat_id, ROUND.c.opened_at >= start,
                ROUND.c.opened_at < end, ROUND.c.state != CANCELLED)


def _packets(chat_id: int, start: datetime, end: datetime) -> Any:
    return and_(PACKET.c.chat_id == chat_id, PACKET.c.created_at >= start,
                PACKET.c.created_at < end, PACKET.c.state != RECALLED)


async def games_opened(session: AsyncSession, chat_id: int, day: date, timezone: str) -> bool:
    """Whether an operator opened a vote, a guess round or a red packet in the pond on
    `day` (its local day in `timezone`): whether it is a task day."""
    start, end = rules.day_bounds(day, timezone)
    found = await session.scalar(select(or_(
        exists().where(_votes(chat_id, start, end)),
        exists().where(_rounds(chat_id, start, end)),
        exists().where(_packets(chat_id, start, end)),
    )))
    return bool(found)


@dataclass(frozen=True, slots=True)
class DayFacts:
    facts: rules.Facts
    paid: bool  # the member's bonus of the day is paid (in any pond)
    dm_linked: bool  # the member's private chat with the bot is linked


async def facts_many(
    session: AsyncSession, *, chat_id: int, user_ids: Sequence[int], day: date, timezone: str,
    now: datetime,
) -> dict[int, DayFacts]:
    """What the pond had on `day` and what each member did: one statement for the
    pond's games, then one per kind of game it had (members together), whatever their
    number."""
    start, end = rules.day_bounds(day, timezone)
    votes, rounds, packets = (_votes(chat_id, start, end), _rounds(chat_id, start, end),
                              _packets(chat_id, start, end))
    draws = and_(DRAW.c.chat_id == chat_id, DRAW.c.day == day)
    pond = (await session.execute(select(
        exists().where(votes).label("vote"),
        exists().where(votes, VOTE.c.state == "open", VOTE.c.closes_at > now
                       ).label("vote_open"),
        exists().where(rounds).label("guess"),
        exists().where(rounds, ROUND.c.state == "open", ROUND.c.closes_at > now
                       ).label("guess_open"),
        exists().where(packets).label("packet"),
        exists().where(packets, PACKET.c.state == "open", PACKET.c.taken < PACKET.c.shares,
                       PACKET.c.expires_at > now).label("packet_open"),
        exists().where(draws).label("lottery"),
        exists().where(PRIZE.c.active.is_(True),
                       or_(PRIZE.c.stock.is_(None), PRIZE.c.stock > 0)).label("lottery_open"),
    ))).one()
    users = sorted(set(user_ids))

    async def who(column: Any, *where: Any) -> set[int]:
        rows = await session.execute(select(column).where(column.in_(users), *where))
        return {int(u) for (u,) in rows.all()}

    checked = await who(CHECKIN.c.user_id, CHECKIN.c.day == day)
    done: dict[str, set[int]] = {
        "vote": await who(BALLOT.c.user_id, BALLOT.c.vote_id.in_(select(VOTE.c.id).where(votes)))
        if pond.vote else set(),
        "guess": await who(GUESS.c.user_id,
                           GUESS.c.round_id.in_(select(ROUND.c.id).where(rounds)))
        if pond.guess else set(),
        # A member's own packet cannot be grabbed by them: sending it does the task.
        "packet": await who(SHARE.c.user_id,
                            SHARE.c.packet_id.in_(select(PACKET.c.id).where(packets)))
        | await who(PACKET.c.funder_id, packets)
        if pond.packet else set(),
        "lottery": await who(DRAW.c.user_id, draws) if pond.lottery else set(),
    }
    keys = [bonus_key(u, day) for u in users]
    paid = {int(u) for (u,) in (await session.execute(
        select(LEDGER.c.user_id).where(LEDGER.c.idem_key.in_(keys)))).all()}
    linked = await who(MEMBER.c.user_id, MEMBER.c.dm_linked.is_(True))
    today = local_day(now, timezone) == day
    kinds = ((rules.Kind.vote, "vote"), (rules.Kind.guess, "guess"),
             (rules.Kind.red_packet, "packet"), (rules.Kind.lottery, "lottery"))
    return {
        u: DayFacts(
            rules.Facts(
                u in checked,
                {kind: rules.Game(bool(getattr(pond, name)), bool(getattr(pond, f"{name}_open")),
                                  u in done[name])
                 for kind, name in kinds},
                today,
            ),
            u in paid,
            u in linked,
        )
        for u in users
    }


async def facts(
    session: AsyncSession, *, chat_id: int, user_id: int, day: date, timezone: str,
    now: datetime,
) -> DayFacts:
    """`facts_many` of one member."""
    found = await facts_many(session, chat_id=chat_id, user_ids=[user_id], day=day,
                             timezone=timezone, now=now)
    return found[user_id]


async def award(
    session: AsyncSession, *, user_id: int, chat_id: int, day: date, amount: int, now: datetime,
) -> ledger.Movement | None:
    """Pay the day's bonus (once per member and day); None when the bonus is 0."""
    if amount <= 0:
        return None
    return await ledger.award(
        session, user_id=user_id, amount=amount, kind=LedgerKind.task_bonus,
        key=bonus_key(user_id, day), chat_id=chat_id, ref=f"tasks {day.isoformat()}", now=now,
    )
