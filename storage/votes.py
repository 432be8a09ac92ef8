"""Votes (F5): open, cast (or move) a ballot, close — or cancel (no result). Functions
over the caller's session.

A member has one ballot row per vote (primary key vote_id + user_id); changing the vote
updates that row, so the tally — always counted from the ballots — stays exact. The
participation points are paid by a ledger key naming the vote and the member, so they
are paid once however often the member changes their mind or clicks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games.votes import VoteArgs
from storage import polls
from storage.dialect import insert_for
from storage.models import LedgerKind, Vote, VoteBallot
from storage.posts import closed_unannounced

VOTE = Vote.__table__  # type: ignore[attr-defined]
BALLOT = VoteBallot.__table__  # type: ignore[attr-defined]
CANCELLED = "canceled"  # a vote's state after `/vote cancel` (the column holds 8 characters)


@dataclass(frozen=True, slots=True)
class VoteView:
    id: int
    chat_id: int
    question: str
    options: tuple[str, ...]
    points: int
    state: str
    message_id: int | None
    closes_at: datetime


def _view(v: Vote) -> VoteView:
    assert v.id is not None
    return VoteView(
        v.id,
        v.chat_id,
        v.question,
        tuple(v.options),
        v.points,
        v.state,
        v.message_id,
        v.closes_at,
    )


@dataclass(frozen=True, slots=True)
class Opened:
    kind: str  # opened | replay
    vote: VoteView


async def open_vote(
    session: AsyncSession,
    *,
    chat_id: int,
    source_key: str,
    args: VoteArgs,
    points: int,
    opened_by: int | None,
    now: datetime,
) -> Opened:
    seen = await polls.by_source(session, Vote, source_key)
    if seen is not None:
        return Opened("replay", _view(seen))
    row = Vote(
        chat_id=chat_id,
        source_key=source_key,
        question=args.question,
        options=list(args.options),
        points=points,
        opened_by=opened_by,
        opened_at=now,
        closes_at=now + args.duration,
    )
    session.add(row)
    await session.flush()
    return Opened("opened", _view(row))


async def set_vote_message(session: AsyncSession, vote_id: int, message_id: int) -> None:
    """Store the post's message id, from Telegram's answer to the post (only then)."""
    await polls.set_message(session, VOTE, vote_id, message_id)


async def get_vote(session: AsyncSession, vote_id: int) -> VoteView | None:
    row = await session.get(Vote, vote_id, populate_existing=True)
    return None if row is None else _view(row)


async def unposted(session: AsyncSession, now: datetime) -> list[VoteView]:
    """Open votes whose post never went out (or whose answer was never recorded)."""
    return [_view(v) for v in await polls.unposted(session, Vote, now)]


async def tally(session: AsyncSession, vote_id: int, options: int) -> list[int]:
    return await polls.tally(session, BALLOT, "vote_id", vote_id, options)


@dataclass(frozen=True, slots=True)
class Cast:
    kind: str  # not_found | not_ready | closed | bad_option | same | cast | changed
    vote: VoteView | None = None
    counts: tuple[int, ...] = ()
    option: int = 0
    paid: int = 0  # points paid by this click (0 after the first ballot)


def _upsert_ballot(session: AsyncSession, values: dict[str, Any]) -> Any:
    stmt = insert_for(session, VoteBallot).values(**values)
    return stmt.on_conflict_do_update(
        index_elements=["vote_id", "user_id"],
        set_={"option": stmt.excluded.option, "changed_at": stmt.excluded.changed_at},
    )


async def cast(
    session: AsyncSession,
    *,
    vote_id: int,
    chat_id: int,
    message_id: int | None,
    user_id: int,
    option: int,
    now: datetime,
    genuine: bool = False,
) -> Cast:
    """A member's click on option `option` of the vote whose post is `message_id` in
    `chat_id` (checked by `storage.polls.refusal`)."""
    row = await session.get(Vote, vote_id)
    refused = polls.refusal(
        row, chat_id=chat_id, message_id=message_id, option=option, now=now, genuine=genuine
    )
    if refused is not None:
        return Cast(refused, None if row is None or refused == "not_found" else _view(row))
    assert row is not None
    view = _view(row)
    before = await polls.answered(session, BALLOT, "vote_id", vote_id, user_id)
    if before == option:
        return Cast("same", view, option=option)
    await session.execute(
        _upsert_ballot(
            session,
            {
                "vote_id": vote_id,
                "user_id": user_id,
                "option": option,
                "cast_at": now,
                "changed_at": now,
            },
        )
    )
    paid = await polls.pay_once(
        session, row, user_id=user_id, kind=LedgerKind.vote, key=f"vote:{vote_id}:{user_id}",
        now=now,
    )
    counts = await tally(session, vote_id, len(row.options))
    return Cast("changed" if before is not None else "cast", view, tuple(counts), option, paid)


@dataclass(frozen=True, slots=True)
class Result:
    vote: VoteView
    counts: tuple[int, ...]
    closed_now: bool
    announced: bool

    @property
    def chat_id(self) -> int:
        return self.vote.chat_id


async def close_vote(session: AsyncSession, vote_id: int, now: datetime) -> Result | None:
    """Close the vote (if open) and count it; None for an unknown or cancelled vote (it
    has no result). Safe to repeat."""
    row, closed_now = await polls.close(session, Vote, vote_id, now)
    if row is None or row.state == CANCELLED:
        return None
    counts = await tally(session, vote_id, len(row.options))
    return Result(_view(row), tuple(counts), closed_now, row.announced_at is not None)


async def open_vote_of(
    session: AsyncSession, chat_id: int, vote_id: int | None = None
) -> VoteView | None:
    """The pond's open vote `vote_id`, or (None) its most recent open vote."""
    query = select(Vote).where(col(Vote.chat_id) == chat_id, col(Vote.state) == "open")
    if vote_id is not None:
        query = query.where(col(Vote.id) == vote_id)
    row = (await session.execute(query.order_by(col(Vote.id).desc()).limit(1))).scalar()
    return None if row is None else _view(row)


async def cancel_vote(session: AsyncSession, vote_id: int, now: datetime) -> Result | None:
    """Cancel an open vote: closed without a result (none is ever posted, not even after
    a restart: `close_vote` and `unannounced` skip it). Its ballots are kept and the
    participation points already paid stay paid. None: not open (or unknown)."""
    cancelled = await session.execute(
        update(Vote)
        .where(col(Vote.id) == vote_id, col(Vote.state) == "open")
        .values(state=CANCELLED, closed_at=now)
    )
    if cancelled.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = await session.get(Vote, vote_id, populate_existing=True)
    assert row is not None
    counts = await tally(session, vote_id, len(row.options))
    return Result(_view(row), tuple(counts), True, False)


async def unannounced(session: AsyncSession, since: datetime) -> list[int]:
    """Votes closed since `since` whose result post was never recorded as sent."""
    return await closed_unannounced(session, VOTE, "announced_at", since)


async def mark_announced(session: AsyncSession, vote_id: int, now: datetime) -> None:
    await polls.mark_announced(session, VOTE, vote_id, now)
