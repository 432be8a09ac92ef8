"""Guess rounds, votes and referrals under concurrency, on SQLite and PostgreSQL; the
votes CSV export."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from games.guess import Mode, RoundArgs
from games.settings import PondSettings
from games.votes import parse_vote
from storage import checkin, guess, invites, ledger, repo, votes
from storage.db import Database
from storage.export import export_votes
from storage.models import GuessRound, LedgerEntry, VoteBallot

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POND = -100500


async def members(db: Database, ids: range, pond: int = POND) -> None:
    """A pond and members `ids` in the shop."""
    async with db.transaction() as s:
        await repo.upsert_pond(s, pond, title="P", chat_type="supergroup")
        for uid in ids:
            await repo.upsert_member(s, repo.UserInfo(uid, f"M{uid}"))


async def test_concurrent_clicks_keep_one_ballot_one_payment_exact_tally(db: Database) -> None:
    await members(db, range(1, 31))
    async with db.transaction() as s:
        opened = await votes.open_vote(
            s,
            chat_id=POND,
            source_key="k",
            args=parse_vote("1h Q | A | B | C"),
            points=2,
            opened_by=None,
            now=T0,
        )
        await votes.set_vote_message(s, opened.vote.id, 77)
    vote_id = opened.vote.id

    async def click(uid: int, option: int) -> None:
        async with db.transaction() as s:
            await votes.cast(
                s,
                vote_id=vote_id,
                chat_id=POND,
                message_id=77,
                user_id=uid,
                option=option,
                now=T0 + timedelta(seconds=1),
            )

    # 30 members, each clicking 4 times at once (changing their mind), last click: uid % 3.
    await asyncio.gather(*(click(uid, (uid + k) % 3) for uid in range(1, 31) for k in (1, 2)))
    await asyncio.gather(*(click(uid, uid % 3) for uid in range(1, 31)))
    async with db.transaction(readonly=True) as s:
        counts = await votes.tally(s, vote_id, 3)
        ballots = await s.scalar(select(func.count()).select_from(VoteBallot))
        paid = await s.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "vote")  # type: ignore[arg-type]
        )
        assert (await ledger.check_invariant(s)).ok
    assert counts == [10, 10, 10] and ballots == 30 and paid == 30

    async with db.transaction() as s:
        result = await votes.close_vote(s, vote_id, T0 + timedelta(hours=1))
        again = await votes.close_vote(s, vote_id, T0 + timedelta(hours=2))
    assert result is not None and result.closed_now and result.counts == (10, 10, 10)
    assert again is not None and not again.closed_now
    out = io.StringIO()
    assert await export_votes(db, out) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["option"], r["count"]) for r in rows] == [("A", "10"), ("B", "10"), ("C", "10")]
    assert rows[0]["vote_id"] == str(vote_id) and rows[0]["chat_id"] == str(POND)
    # A cancelled vote has no result: the tally leaves it out.
    async with db.transaction() as s:
        other = await votes.open_vote(s, chat_id=POND, source_key="k2",
                                      args=parse_vote("1h Oops | X | Y"), points=0,
                                      opened_by=None, now=T0)
        assert other.vote is not None
        await votes.set_vote_message(s, other.vote.id, 78)
        await votes.cast(s, vote_id=other.vote.id, chat_id=POND, message_id=78, user_id=1,
                         option=0, now=T0 + timedelta(seconds=1))
        cancelled = await votes.cancel_vote(s, other.vote.id, T0 + timedelta(seconds=2))
        assert cancelled is not None and cancelled.counts == (1, 0)  # a ballot was cast
    out = io.StringIO()
    assert await export_votes(db, out) == 3
    assert "Oops" not in out.getvalue()


async def test_concurrent_hits_never_exceed_the_winner_slots(db: Database) -> None:
    await members(db, range(1, 21))
    args = RoundArgs(19900, timedelta(minutes=10), 50, "Dress", Mode.hit)
    async with db.transaction() as s:
        opened = await guess.open_round(
            s,
            chat_id=POND,
            source_key="r",
            args=args,
            settings=PondSettings(guess_winners=3),
            opened_by=None,
            photo_file_id=None,
            now=T0,
        )
    assert opened.kind == "opened" and opened.round is not None

    async def hit(uid: int) -> str:
        async with db.transaction() as s:
            out = await guess.record_guess(
                s,
                chat_id=POND,
                user_id=uid,
                cents=19900,
                source_key=f"m{uid}",
                now=T0 + timedelta(seconds=1),
            )
        return "won" if out.won else out.kind

    results = await asyncio.gather(*(hit(uid) for uid in range(1, 21)))
    assert results.count("won") == 3
    async with db.transaction() as s:
        reveal = await guess.close_round(s, opened.round.id, T0 + timedelta(minutes=10))
        assert (await ledger.check_invariant(s)).ok
    assert reveal is not None and len(reveal.winners) == 3
    async with db.transaction(readonly=True) as s:
        paid = await s.scalar(
            select(func.sum(LedgerEntry.delta)).where(LedgerEntry.kind == "guess_price")  # type: ignore[arg-type]
        )
    assert paid == 150


async def test_one_open_round_per_pond_even_when_opened_at_once(db: Database) -> None:
    args = RoundArgs(100, timedelta(minutes=1), 5, "X", Mode.closest)

    async def open_one(i: int) -> str:
        try:
            async with db.transaction() as s:
                o = await guess.open_round(
                    s,
                    chat_id=POND,
                    source_key=f"k{i}",
                    args=args,
                    settings=PondSettings(),
                    opened_by=None,
                    photo_file_id=None,
                    now=T0,
                )
            return o.kind
        except IntegrityError:  # PostgreSQL: the unique open slot refuses the loser
            return "busy"

    kinds = await asyncio.gather(*(open_one(i) for i in range(8)))
    assert kinds.count("opened") == 1 and kinds.count("busy") == 7
    async with db.transaction(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(GuessRound)) == 1


async def test_referral_credit_runs_once_under_concurrent_sweeps(db: Database) -> None:
    await members(db, range(1, 3))
    async with db.transaction() as s:
        await invites.save_link(s, POND, 1, "https://t.me/+abc", "n", T0)
        assert (
            await invites.record_join(
                s, chat_id=POND, newcomer_id=2, link="https://t.me/+abc", now=T0
            )
            == 1
        )
        # The newcomer's check-in, made after the join.
        await checkin.CHECKIN_OP.run(s, [checkin.CheckinRequest(2, POND, T0.date(), T0)])

    async def sweep() -> int:
        async with db.transaction() as s:
            return len(await invites.credit_due(s, T0))

    assert sum(await asyncio.gather(*(sweep() for _ in range(6)))) == 1
    async with db.transaction(readonly=True) as s:
        member = await repo.get_member(s, 1)
        assert member is not None and member.balance == 20
        assert (await ledger.check_invariant(s)).ok
