"""Targeted red packets (a drop `to=<segment>`, F10) in the database, on SQLite and
PostgreSQL: only the members `allow` names may grab — by button or typed password, one
by one or in a batch — and a refused member changes nothing (no share, no ledger entry,
the counter as it was); an ordinary packet's grab never reads the list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select

from games.red_packet import PacketArgs, Refusal, SplitMode
from storage import red_packets, repo
from storage.db import Database
from storage.models import LedgerEntry, RedPacketEligible
from storage.red_packets import GrabRequest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POND = -100700
GOLD = [repo.UserInfo(1, "Gold1"), repo.UserInfo(2, "Gold2")]
OTHER = repo.UserInfo(3, "Other")


async def packet(
    db: Database, key: str, *, segment: str | None, allowed: Sequence[int] = (),
    password: str | None = None,
) -> int:
    args = PacketArgs(total=30, shares=3, mode=SplitMode.equal, password=password,
                      expiry=timedelta(hours=1))
    async with db.transaction() as s:
        await repo.upsert_pond(s, POND, title="P", chat_type="supergroup")
        created = await red_packets.create(
            s, chat_id=POND, funder=None, funder_name="Shop", shop_funded=True, args=args,
            amounts=[10, 10, 10], source_key=key, now=T0, segment=segment,
        )
        if segment is not None:
            await red_packets.allow(s, created.card.id, allowed)
        await red_packets.set_message(s, created.card.id, 50)
    return created.card.id


async def grab(
    db: Database, packet_id: int, user: repo.UserInfo, *, by_password: bool = False
) -> red_packets.Grab:
    async with db.transaction() as s:
        return await red_packets.grab(
            s, packet_id=packet_id, user=user, chat_id=POND,
            message_id=None if by_password else 50, by_password=by_password, now=T0,
        )


async def credits(db: Database, user_id: int) -> int:
    async with db.transaction(readonly=True) as s:
        return int(await s.scalar(
            select(func.count()).select_from(LedgerEntry).where(
                LedgerEntry.user_id == user_id  # type: ignore[arg-type]
            )
        ) or 0)


async def test_only_the_allowed_members_grab_a_targeted_packet(db: Database) -> None:
    packet_id = await packet(db, "t1", segment="gold", allowed=[1, 2, 2])
    refused = await grab(db, packet_id, OTHER)
    assert refused.refused is Refusal.not_for_you and refused.amount is None
    assert refused.card is not None and refused.card.segment == "gold"
    assert refused.card.taken == 0
    got = await grab(db, packet_id, GOLD[0])
    assert got.refused is None and got.amount == 10
    again = await grab(db, packet_id, OTHER)  # still nothing, whatever was grabbed since
    assert again.refused is Refusal.not_for_you
    async with db.transaction(readonly=True) as s:
        card = await red_packets.get_card(s, packet_id)
        assert await red_packets.paid_out(s, packet_id) == 10
        allowed = (await s.execute(select(RedPacketEligible.user_id))).scalars().all()
    assert card is not None and card.taken == 1
    assert sorted(allowed) == [1, 2]
    assert await credits(db, OTHER.id) == 0


async def test_a_batch_and_a_typed_password_take_the_same_decision(db: Database) -> None:
    packet_id = await packet(db, "t2", segment="churn", allowed=[1, 2], password="芝麻")
    pressed = await grab(db, packet_id, OTHER)  # outside the segment: not asked for a password
    assert pressed.refused is Refusal.not_for_you
    typed = await grab(db, packet_id, OTHER, by_password=True)
    assert typed.refused is Refusal.not_for_you
    requests = [GrabRequest(u, POND, None, True) for u in (GOLD[0], OTHER, GOLD[1])]
    async with db.transaction() as s:
        grabs = await red_packets.grab_many(s, packet_id, requests, now=T0)
    assert grabs is not None
    assert [g.refused for g in grabs] == [None, Refusal.not_for_you, None]
    assert [g.amount for g in grabs] == [10, None, 10]
    async with db.transaction(readonly=True) as s:
        card = await red_packets.get_card(s, packet_id, with_grabs=True)
    assert card is not None and card.taken == 2
    assert [g.user_id for g in card.grabs] == [1, 2]
    assert await credits(db, OTHER.id) == 0


async def test_an_ordinary_packet_pays_anyone_and_never_reads_the_list(db: Database) -> None:
    packet_id = await packet(db, "t3", segment=None)
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        got = await grab(db, packet_id, OTHER)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    assert got.refused is None and got.amount == 10
    assert got.card is not None and got.card.segment is None
    assert statements and not any("red_packet_eligible" in s for s in statements)
    assert await credits(db, OTHER.id) == 1
