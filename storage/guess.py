"""Guess-the-price rounds (F4): open, guess, close and pay. Functions over the caller's
session; none of them commits.

The secret price leaves this module only in a `Reveal`, which exists once the round is
closed. `RoundView` — what handlers use to talk about an open round — has no price.

Races: one open round per pond is a unique constraint (`open_chat_id` is the chat id
while open, NULL after); a member's attempts are numbered and unique per round; a
replayed message finds its `source_key` taken; in hit mode a winner first claims a slot
with `UPDATE … SET winners = winners + 1 WHERE winners < max_winners`, so no more than W
ever win, on SQLite or PostgreSQL. Closing is `UPDATE … WHERE state = 'open'`: the
prizes are paid by the one transaction that closed the round, each by a ledger key
naming the round and the winner. A cancelled round (`cancel_round`) is closed the same
guarded way but pays nobody and is never revealed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games.guess import Guess, Mode, RoundArgs, Verdict, attempts_allowed, closest_winners, judge
from games.settings import PondSettings
from storage import ledger
from storage.dialect import insert_for
from storage.models import GuessRound, Job, LedgerKind, Member, PriceGuess, Referral

MAX_REVEALED_WINNERS = 30
CANCELLED = "canceled"  # a round's state after `/guessprice cancel` (the column holds 8)


def close_key(round_id: int) -> str:
    """The key of a round's close task, and of its reveal post in the outbox."""
    return f"{Job.guess_close}:{round_id}"


@dataclass(frozen=True, slots=True)
class RoundView:
    """An open round as members may know it: everything but the price."""

    id: int
    chat_id: int
    product: str
    photo_file_id: str | None
    prize: int
    mode: Mode
    max_attempts: int
    max_winners: int
    guessers: int
    message_id: int | None
    closes_at: datetime
    state: str


def _view(r: GuessRound) -> RoundView:
    assert r.id is not None
    return RoundView(
        r.id,
        r.chat_id,
        r.product,
        r.photo_file_id,
        r.prize,
        Mode(r.mode),
        r.max_attempts,
        r.max_winners,
        r.guessers,
        r.message_id,
        r.closes_at,
        r.state,
    )


@dataclass(frozen=True, slots=True)
class Opened:
    kind: str  # opened | replay | busy
    round: RoundView | None


async def open_round(
    session: AsyncSession,
    *,
    chat_id: int,
    source_key: str,
    args: RoundArgs,
    settings: PondSettings,
    opened_by: int | None,
    photo_file_id: str | None,
    now: datetime,
) -> Opened:
    """Open a round unless one is open in the pond (`busy`) or this command opened one
    already (`replay`)."""
    seen = (
        await session.execute(select(GuessRound).where(col(GuessRound.source_key) == source_key))
    ).scalar_one_or_none()
    if seen is not None:
        return Opened("replay", _view(seen))
    busy = await session.scalar(
        select(col(GuessRound.id)).where(col(GuessRound.open_chat_id) == chat_id)
    )
    if busy is not None:
        return Opened("busy", None)
    row = GuessRound(
        chat_id=chat_id,
        open_chat_id=chat_id,
        source_key=source_key,
        product=args.product,
        photo_file_id=photo_file_id,
        price_cents=args.price_cents,
        prize=args.prize,
        mode=str(args.mode),
        max_attempts=settings.guess_attempts,
        max_winners=settings.guess_winners,
        tolerance_cents=settings.guess_tolerance_cents if args.mode == Mode.hit else 0,
        opened_by=opened_by,
        opened_at=now,
        closes_at=now + args.duration,
    )
    session.add(row)
    await session.flush()
    return Opened("opened", _view(row))


async def set_round_message(
    session: AsyncSession, round_id: int, message_id: int
) -> RoundView | None:
    """Store the post's message id, from Telegram's answer to the post (only then);
    returns the round as it is now."""
    await session.execute(
        update(GuessRound)
        .where(col(GuessRound.id) == round_id, col(GuessRound.message_id).is_(None))
        .values(message_id=message_id)
    )
    row = await session.get(GuessRound, round_id, populate_existing=True)
    return None if row is None else _view(row)


async def unposted(session: AsyncSession) -> list[RoundView]:
    """Open rounds whose post never went out (or whose answer was never recorded)."""
    rows = await session.execute(
        select(GuessRound)
        .where(col(GuessRound.state) == "open", col(GuessRound.message_id).is_(None))
        .order_by(col(GuessRound.id))
    )
    return [_view(r) for r in rows.scalars().all()]


async def open_round_of(session: AsyncSession, chat_id: int) -> RoundView | None:
    row = (
        await session.execute(select(GuessRound).where(col(GuessRound.open_chat_id) == chat_id))
    ).scalar_one_or_none()
    return None if row is None else _view(row)


async def friends_invited(
    session: AsyncSession, referrer_id: int, chat_id: int, since: datetime, until: datetime
) -> int:
    """Newcomers who joined `chat_id` through the member's link within [since, until]."""
    n = await session.scalar(
        select(func.count())
        .select_from(Referral)
        .where(
            col(Referral.referrer_id) == referrer_id,
            col(Referral.chat_id) == chat_id,
            col(Referral.joined_at) >= since,
            col(Referral.joined_at) <= until,
        )
    )
    return int(n or 0)


@dataclass(frozen=True, slots=True)
class GuessOutcome:
    # no_round | not_this_post | replay | closed | out_of_attempts | already_won |
    # winners_full | accepted (closest) | judged (hit)
    kind: str
    round: RoundView | None = None
    verdict: Verdict | None = None
    won: bool = False
    filled: bool = False  # this hit took the last winner slot: the round can close now
    attempts_left: int = 0
    allowed: int = 0
    first_guess: bool = False
    dm_linked: bool = False


async def record_guess(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    cents: int,
    source_key: str,
    now: datetime,
    round_message_id: int | None = None,
) -> GuessOutcome:
    """One attempt in the pond's open round (with `round_message_id`: only if that
    message is the round's post)."""
    row = (
        await session.execute(select(GuessRound).where(col(GuessRound.open_chat_id) == chat_id))
    ).scalar_one_or_none()
    if row is None:
        return GuessOutcome("no_round")
    assert row.id is not None
    view = _view(row)
    if round_message_id is not None and row.message_id != round_message_id:
        return GuessOutcome("not_this_post", view)
    if now >= row.closes_at:
        return GuessOutcome("closed", view)
    if await session.scalar(
        select(col(PriceGuess.id)).where(col(PriceGuess.source_key) == source_key)
    ):
        return GuessOutcome("replay", view)
    mine = (
        await session.execute(
            select(col(PriceGuess.attempt), col(PriceGuess.won)).where(
                col(PriceGuess.round_id) == row.id, col(PriceGuess.user_id) == user_id
            )
        )
    ).all()
    used = len(mine)
    mode = Mode(row.mode)
    if any(won for _, won in mine):
        return GuessOutcome("already_won", view)
    invited = await friends_invited(session, user_id, chat_id, row.opened_at, now)
    allowed = attempts_allowed(mode, row.max_attempts, invited)
    if mode == Mode.hit and row.winners >= row.max_winners:
        return GuessOutcome("winners_full", view)
    if used >= allowed:
        return GuessOutcome("out_of_attempts", view, allowed=allowed)
    guess_id = await session.scalar(
        insert_for(session, PriceGuess)
        .values(
            round_id=row.id,
            user_id=user_id,
            attempt=used + 1,
            cents=cents,
            won=False,
            source_key=source_key,
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(col(PriceGuess.id))
    )
    if guess_id is None:  # a concurrent delivery of the same attempt got in first
        return GuessOutcome("replay", view)
    guessers = row.guessers
    if used == 0:
        guessers = int(
            await session.scalar(
                update(GuessRound)
                .where(col(GuessRound.id) == row.id)
                .values(guessers=col(GuessRound.guessers) + 1)
                .returning(col(GuessRound.guessers))
            )
            or 0
        )
    dm_linked = bool(
        await session.scalar(select(col(Member.dm_linked)).where(col(Member.user_id) == user_id))
    )
    view = replace(view, guessers=guessers)
    left = allowed - used - 1
    if mode == Mode.closest:
        return GuessOutcome(
            "accepted",
            view,
            attempts_left=left,
            allowed=allowed,
            first_guess=used == 0,
            dm_linked=dm_linked,
        )
    verdict = judge(cents, row.price_cents, row.tolerance_cents)
    won = filled = False
    if verdict == Verdict.hit:
        slot = await session.scalar(
            update(GuessRound)
            .where(col(GuessRound.id) == row.id, col(GuessRound.winners) < row.max_winners)
            .values(winners=col(GuessRound.winners) + 1)
            .returning(col(GuessRound.winners))
        )
        if slot is None:
            return GuessOutcome("winners_full", view)
        won, filled = True, int(slot) >= row.max_winners
        await session.execute(
            update(PriceGuess).where(col(PriceGuess.id) == guess_id).values(won=True)
        )
    return GuessOutcome(
        "judged",
        view,
        verdict=verdict,
        won=won,
        filled=filled,
        attempts_left=left,
        allowed=allowed,
        first_guess=used == 0,
        dm_linked=dm_linked,
    )


@dataclass(frozen=True, slots=True)
class Winner:
    user_id: int
    name: str
    cents: int


@dataclass(frozen=True, slots=True)
class Reveal:
    """A closed round: the price may now be said."""

    round_id: int
    chat_id: int
    product: str
    price_cents: int
    prize: int
    mode: Mode
    guessers: int
    winners: list[Winner]
    message_id: int | None
    revealed: bool  # the reveal post went out already
    closed_now: bool


async def close_round(session: AsyncSession, round_id: int, now: datetime) -> Reveal | None:
    """Close the round (if open), pick and pay the winners; None for an unknown round,
    or a cancelled one (it has no winners and no reveal).

    Safe to call again: a closed round is only read back (the prizes were paid in the
    transaction that closed it; their ledger keys would refuse a second payment anyway).
    """
    closed = await session.execute(
        update(GuessRound)
        .where(col(GuessRound.id) == round_id, col(GuessRound.state) == "open")
        .values(state="closed", open_chat_id=None, closed_at=now)
    )
    row = await session.get(GuessRound, round_id, populate_existing=True)
    if row is None or row.state == CANCELLED:
        return None
    closed_now = closed.rowcount == 1  # type: ignore[attr-defined]
    if closed_now and row.mode == Mode.closest:
        guesses = [
            Guess(int(i or 0), u, c)
            for i, u, c in (
                await session.execute(
                    select(
                        col(PriceGuess.id), col(PriceGuess.user_id), col(PriceGuess.cents)
                    ).where(col(PriceGuess.round_id) == round_id)
                )
            ).all()
        ]
        chosen = closest_winners(guesses, row.price_cents, row.max_winners)
        if chosen:
            await session.execute(
                update(PriceGuess)
                .where(col(PriceGuess.id).in_([g.order for g in chosen]))
                .values(won=True)
            )
    won = list(
        (
            await session.execute(
                select(col(PriceGuess.user_id), col(PriceGuess.cents), Member)
                .join(Member, col(Member.user_id) == col(PriceGuess.user_id), isouter=True)
                .where(col(PriceGuess.round_id) == round_id, col(PriceGuess.won).is_(True))
                .order_by(col(PriceGuess.id))
            )
        ).all()
    )
    if row.mode == Mode.closest:
        won.sort(key=lambda r: abs(int(r[1]) - row.price_cents))
    winners = [
        Winner(int(u), m.display_name if m is not None else str(u), int(c)) for u, c, m in won
    ]
    if closed_now:
        for w in winners:
            await ledger.award(
                session,
                user_id=w.user_id,
                amount=row.prize,
                kind=LedgerKind.guess_price,
                key=f"guess_price:{round_id}:{w.user_id}",
                chat_id=row.chat_id,
                ref=row.product,
                now=now,
            )
    return Reveal(
        round_id,
        row.chat_id,
        row.product,
        row.price_cents,
        row.prize,
        Mode(row.mode),
        row.guessers,
        winners,
        row.message_id,
        row.revealed_at is not None,
        closed_now,
    )


async def cancel_round(session: AsyncSession, round_id: int, now: datetime) -> RoundView | None:
    """Cancel an open round (`/guessprice cancel`): no winners, no prize, and the price
    stays secret (no `Reveal` is ever made of it: the same product may open again at the
    same price). The pond's slot is freed at once (`open_chat_id` NULL), so a new round
    can open; the close task, when it runs, finds the round cancelled and does nothing.
    None: not open (or unknown)."""
    cancelled = await session.execute(
        update(GuessRound)
        .where(col(GuessRound.id) == round_id, col(GuessRound.state) == "open")
        .values(state=CANCELLED, open_chat_id=None, closed_at=now)
    )
    if cancelled.rowcount != 1:  # type: ignore[attr-defined]
        return None
    # Hit mode marks a hit as won when it is made; a cancelled round has no winners.
    await session.execute(
        update(PriceGuess)
        .where(col(PriceGuess.round_id) == round_id, col(PriceGuess.won).is_(True))
        .values(won=False)
    )
    row = await session.get(GuessRound, round_id, populate_existing=True)
    return None if row is None else _view(row)


async def unrevealed(session: AsyncSession, since: datetime) -> list[int]:
    """Rounds closed since `since` whose reveal post was never recorded as sent."""
    rows = await session.execute(
        select(col(GuessRound.id))
        .where(
            col(GuessRound.state) == "closed",
            col(GuessRound.revealed_at).is_(None),
            col(GuessRound.closed_at) >= since,
        )
        .order_by(col(GuessRound.id))
    )
    return [i for i in rows.scalars().all() if i is not None]


async def mark_revealed(session: AsyncSession, round_id: int, now: datetime) -> None:
    await session.execute(
        update(GuessRound).where(col(GuessRound.id) == round_id).values(revealed_at=now)
    )
