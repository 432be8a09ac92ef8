"""Game posts in the database, on SQLite and PostgreSQL: a post's id is stored once and
only by its setter, presses are checked against it, and what was never posted or never
announced is found again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from games.guess import Mode, RoundArgs
from games.red_packet import PacketArgs, Refusal, SplitMode
from games.settings import PondSettings
from games.votes import parse_vote
from storage import guess, red_packets, repo, votes
from storage.db import Database

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POND = -100600
ALICE = repo.UserInfo(1, "Alice")


async def pond(db: Database) -> None:
    async with db.transaction() as s:
        await repo.upsert_pond(s, POND, title="P", chat_type="supergroup")
        await repo.upsert_member(s, ALICE)


async def new_packet(db: Database, key: str) -> int:
    args = PacketArgs(total=10, shares=2, mode=SplitMode.equal, password=None,
                      expiry=timedelta(hours=1))
    async with db.transaction() as s:
        created = await red_packets.create(
            s, chat_id=POND, funder=None, funder_name="Shop", shop_funded=True, args=args,
            amounts=[5, 5], source_key=key, now=T0,
        )
    return created.card.id


async def test_packet_post_ids_come_from_the_setter_once_and_presses_are_checked(
    db: Database,
) -> None:
    await pond(db)
    packet_id = await new_packet(db, "k1")
    other = await new_packet(db, "k2")
    async with db.transaction(readonly=True) as s:
        assert [c.id for c in await red_packets.unposted(s, T0)] == [packet_id, other]
        assert await red_packets.unposted(s, T0 + timedelta(hours=2)) == []  # expired

    async def grab(message_id: int, genuine: bool = False) -> Refusal | None:
        async with db.transaction() as s:
            got = await red_packets.grab(
                s, packet_id=packet_id, user=ALICE, chat_id=POND, message_id=message_id,
                by_password=False, now=T0, genuine=genuine,
            )
        return got.refused

    assert await grab(70) is Refusal.not_ready  # and 70 is not adopted
    async with db.transaction() as s:
        await red_packets.set_message(s, packet_id, 71)
        await red_packets.set_message(s, packet_id, 99)  # a second answer changes nothing
    async with db.transaction(readonly=True) as s:
        card = await red_packets.get_card(s, packet_id)
        assert card is not None and card.message_id == 71
        assert [c.id for c in await red_packets.unposted(s, T0)] == [other]
    assert await grab(70) is Refusal.wrong_chat
    assert await grab(72, genuine=True) is None  # a message carrying this packet's button


async def test_votes_and_rounds_without_a_post_or_an_announcement_are_found(
    db: Database,
) -> None:
    await pond(db)
    async with db.transaction() as s:
        opened = await votes.open_vote(
            s, chat_id=POND, source_key="v", args=parse_vote("1h Q | A | B"), points=0,
            opened_by=None, now=T0,
        )
        vote_id = opened.vote.id
        round_ = await guess.open_round(
            s, chat_id=POND, source_key="g",
            args=RoundArgs(price_cents=19900, duration=timedelta(hours=1), prize=10,
                           product="Dress", mode=Mode.closest),
            settings=PondSettings(), opened_by=None, photo_file_id=None, now=T0,
        )
        assert round_.round is not None
        round_id = round_.round.id
    async with db.transaction() as s:
        assert [v.id for v in await votes.unposted(s, T0)] == [vote_id]
        assert [r.id for r in await guess.unposted(s)] == [round_id]
        cast = await votes.cast(s, vote_id=vote_id, chat_id=POND, message_id=5, user_id=1,
                                option=0, now=T0)
        assert cast.kind == "not_ready"
        await votes.set_vote_message(s, vote_id, 5)
        view = await guess.set_round_message(s, round_id, 6)
        assert view is not None and view.message_id == 6
    async with db.transaction() as s:
        assert await votes.unposted(s, T0) == [] and await guess.unposted(s) == []
        closed_at = T0 + timedelta(hours=1)
        await votes.close_vote(s, vote_id, closed_at)
        await guess.close_round(s, round_id, closed_at)
    async with db.transaction() as s:
        assert await votes.unannounced(s, T0) == [vote_id]
        assert await guess.unrevealed(s, T0) == [round_id]
        assert await votes.unannounced(s, closed_at + timedelta(seconds=1)) == []  # too old
        await votes.mark_announced(s, vote_id, closed_at)
        await guess.mark_revealed(s, round_id, closed_at)
    async with db.transaction(readonly=True) as s:
        assert await votes.unannounced(s, T0) == [] and await guess.unrevealed(s, T0) == []
