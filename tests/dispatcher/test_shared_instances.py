"""Two instances of the bot — two real Dispatchers, each with its own outbox and caches —
on one PostgreSQL database and one Redis, as behind a load balancer: the flows that move
points (check-in, red packets, redemption, votes, /give) stay exact wherever their
updates land, and an update delivered to both is handled once."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import pytest
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import Message, Update, User
from redis.asyncio import Redis
from sqlalchemy import func, select

from handlers.votes import VoteButton
from scheduler.core import Scheduler
from services.middlewares import settle_writes
from services.outbox import Limits
from services.shared.redis_state import SharedState
from storage import ledger, repo
from storage.db import Database
from storage.models import LedgerEntry, LedgerKind, Member, Redemption, RedPacket, Vote
from tests.dispatcher.conftest import FAST, GROUP_ID, OPERATOR_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person
from tests.rig.fake_session import BOT_ID, FakeSession

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Pair:
    """Two instances sharing one database, one Redis and one Telegram (the session)."""

    def __init__(
        self, db: Database, session: FakeSession, states: list[SharedState],
        one: Harness, two: Harness,
    ) -> None:
        self.db, self.session, self.states = db, session, states
        self.one, self.two = one, two
        self.group = group_chat(GROUP_ID, "Pond")

    def member(self, i: int, user: User) -> GroupClient:
        """A member whose updates land on instance `i % 2`."""
        return (self.one, self.two)[i % 2].member(self.group, user)

    async def settle(self) -> None:
        for h in (self.one, self.two):
            await settle_writes(h.dp)
        await asyncio.gather(self.one.settle(), self.two.settle())

    async def balance(self, user_id: int) -> int:
        async with self.db.transaction(readonly=True) as s:
            m = await s.get(Member, user_id)
        return 0 if m is None else m.balance

    async def scalar(self, stmt: Any) -> Any:
        async with self.db.transaction(readonly=True) as s:
            return (await s.execute(stmt)).scalar()

    async def invariant_ok(self) -> bool:
        async with self.db.transaction(readonly=True) as s:
            return (await ledger.check_invariant(s)).ok


@pytest.fixture
async def pair(pg_url: str, redis_url: str) -> AsyncIterator[Pair]:
    db = Database(pg_url)
    session = FakeSession()
    states = [SharedState(Redis.from_url(redis_url), limits=FAST) for _ in range(2)]
    async with AsyncExitStack() as stack:
        harnesses = []
        for state in states:
            await state.start()
            stack.push_async_callback(state.close)
            scheduler = Scheduler(db, clock=lambda: T0)
            harnesses.append(
                await stack.enter_async_context(running(db, scheduler, session, shared=state))
            )
        # The update ids Telegram hands out are one sequence, whichever instance gets one.
        harnesses[1]._update_ids = itertools.count(500_000)  # type: ignore[attr-defined]
        yield Pair(db, session, states, *harnesses)
    await db.dispose()


async def test_an_update_delivered_to_both_instances_is_handled_once(pair: Pair) -> None:
    alice = pair.member(0, person(1, "Alice"))
    message = alice.message("/checkin")
    update = Update(update_id=7, message=message)
    # Both at once (Telegram resent it while the first instance was still busy) and after.
    answers = await asyncio.gather(
        pair.one.feed(update), pair.two.feed(update), return_exceptions=True
    )
    await pair.two.feed(update)
    await pair.one.feed(update)
    await pair.settle()
    assert not [a for a in answers if isinstance(a, Exception) and "not handled" not in str(a)]
    async with pair.db.transaction(readonly=True) as s:
        kinds = (await s.execute(select(LedgerEntry.kind).where(LedgerEntry.user_id == 1))).all()
    assert [k for (k,) in kinds] == [LedgerKind.checkin]
    replies = [t for t in pair.session.sent_texts(GROUP_ID) if "Alice 签到成功" in t]
    assert len(replies) == 1, replies
    assert await pair.invariant_ok()


async def test_a_checkin_storm_split_across_instances_pays_each_once(pair: Pair) -> None:
    members = [pair.member(i, person(100 + i, f"M{i}")) for i in range(30)]
    await members[0].send("/checkin")  # the first one posts the pond's board
    await pair.settle()
    await asyncio.gather(*(m.send("/checkin") for m in members[1:]))
    await asyncio.gather(*(m.send("签到") for m in members[:10]))  # a second try: nothing
    await pair.settle()
    async with pair.db.transaction(readonly=True) as s:
        rows = (await s.execute(
            select(LedgerEntry.user_id).where(LedgerEntry.kind == LedgerKind.checkin)
        )).all()
    assert Counter(u for (u,) in rows) == Counter({100 + i: 1 for i in range(30)})
    assert len({await pair.balance(100 + i) for i in range(30)}) == 1
    # The pond's board: posted, then not refreshed again within its interval by either
    # instance (each alone would refresh it at its first touch).
    assert pair.one.dp["boards"].refreshes + pair.two.dp["boards"].refreshes == 1
    assert await pair.invariant_ok()


async def test_a_red_packet_grabbed_through_both_instances_is_exact(pair: Pair) -> None:
    op = pair.member(0, person(OPERATOR_ID, "Op"))
    await op.send("/redpacket 100 5")
    await pair.settle()
    async with pair.db.transaction(readonly=True) as s:
        packet = (await s.execute(select(RedPacket))).scalars().one()
    assert packet.message_id is not None
    post = Message(
        message_id=packet.message_id, date=T0, chat=pair.group,
        from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"), text="🧧",
    )
    members = [pair.member(i, person(10 + i, f"M{i}")) for i in range(12)]
    await asyncio.gather(*(m.click(post, f"rp:{packet.id}") for m in members))
    await pair.settle()
    gains = [await pair.balance(10 + i) for i in range(12)]
    assert sum(gains) == 100 and sum(1 for g in gains if g > 0) == 5
    # The post ends showing the result, whichever instance's progress came last.
    edits = [e for e in pair.session.delivered_of(EditMessageText)
             if e.message_id == packet.message_id]
    assert edits and edits[-1].reply_markup is None
    # The instance that did not close it learnt it closed: a late press there is refused.
    late = pair.member(1, person(99, "Late"))
    query = await late.click(post, f"rp:{packet.id}")
    toast = next(a.text for a in pair.session.requests_of(AnswerCallbackQuery)
                 if a.callback_query_id == query)
    assert toast and "🎉" not in toast
    assert sum(state.peers.heard for state in pair.states) >= 1  # told, not looked up
    assert await pair.balance(99) == 0
    assert await pair.invariant_ok()


async def seed(db: Database, user_ids: list[int], points: int = 100) -> None:
    async with db.transaction() as s:
        for uid in user_ids:
            await repo.upsert_member(s, repo.UserInfo(id=uid, first_name=f"M{uid}"))
            await ledger.award(s, user_id=uid, amount=points, kind=LedgerKind.admin_adjust,
                               key=f"seed:{uid}")


async def test_redemptions_through_both_instances_never_oversell(pair: Pair) -> None:
    users = [300 + i for i in range(20)]
    await seed(pair.db, users)
    op = pair.member(0, person(OPERATOR_ID, "Op"))
    await op.send("/item add 10 3 limit=1 Mug")
    await pair.settle()
    found = re.search(r"#(\d+)", pair.session.sent_texts(GROUP_ID)[-1])
    assert found
    item_id = int(found.group(1))
    clients = [pair.member(i, person(u, f"M{u}")) for i, u in enumerate(users)]
    await asyncio.gather(*(c.send(f"/redeem {item_id}") for c in [*clients, *clients[:6]]))
    await pair.settle()
    async with pair.db.transaction(readonly=True) as s:
        reds = (await s.execute(select(Redemption.user_id))).all()
    winners = [u for (u,) in reds]
    assert len(winners) == 3 and len(set(winners)) == 3
    balances = {u: await pair.balance(u) for u in users}
    assert balances == {u: 90 if u in winners else 100 for u in users}
    # Sold out: the instance that did not sell the last unit refuses from the database or
    # its memo alike, and nothing more is paid.
    await pair.member(1, person(users[-1], "Late")).send(f"/redeem {item_id}")
    await pair.settle()
    assert await pair.scalar(select(func.count()).select_from(Redemption)) == 3
    assert await pair.invariant_ok()


async def test_votes_and_give_through_both_instances_pay_once(pair: Pair) -> None:
    op = pair.member(0, person(OPERATOR_ID, "Op"))
    alice, bob = pair.member(0, person(1, "Alice", "alice")), pair.member(1, person(2, "Bob"))
    await alice.send("hello")
    await bob.send("hi")
    await op.send("/vote 1h 上新选哪个？ | 红色 | 蓝色")
    await pair.settle()
    async with pair.db.transaction(readonly=True) as s:
        vote = (await s.execute(select(Vote))).scalars().one()
    assert vote.message_id is not None
    post = Message(
        message_id=vote.message_id, date=T0, chat=pair.group,
        from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"), text=vote.question,
    )
    data = VoteButton(vote_id=vote.id, option=0).pack()
    # Alice presses on both instances at once; Bob once.
    alice_two = pair.member(1, alice.user)
    await asyncio.gather(
        alice.click(post, data), alice_two.click(post, data), bob.click(post, data)
    )
    give = op.message("/give @alice 50 thanks")
    update = Update(update_id=900_000, message=give)
    await pair.one.feed(update)
    await pair.two.feed(update)  # delivered again, to the other instance
    await pair.settle()
    assert await pair.balance(2) == 2  # one vote
    assert await pair.balance(1) == 2 + 50  # one vote, one /give
    assert sum("+50" in t for t in pair.session.sent_texts(GROUP_ID)) == 1
    assert await pair.invariant_ok()


async def test_the_group_budget_is_shared_by_both_outboxes(pg_url: str, redis_url: str) -> None:
    """Each instance alone would allow 20 a minute; together they send no more."""
    limits = Limits(per_chat_rate=1e6, per_chat_burst=10**6, group_per_minute=4,
                    global_per_second=10**6)
    db = Database(pg_url)
    session = FakeSession()
    states = [SharedState(Redis.from_url(redis_url), limits=limits) for _ in range(2)]
    async with AsyncExitStack() as stack:
        hs = []
        for state in states:
            await state.start()
            stack.push_async_callback(state.close)
            hs.append(await stack.enter_async_context(running(db, session=session, shared=state)))
        for i, h in enumerate(hs):
            for n in range(3):
                h.outbox.send(SendMessage(chat_id=GROUP_ID, text=f"{i}-{n}"))
        await asyncio.sleep(1.0)
        assert len(session.sent_texts(GROUP_ID)) == 4  # two wait for the minute to pass
        assert sum(h.outbox.budget_waits for h in hs) >= 2
        for h in hs:
            await h.outbox.stop(drain_timeout=0.1)
    await db.dispose()


async def test_a_setting_changed_through_one_instance_is_seen_by_the_other_at_once(
    pair: Pair,
) -> None:
    op_one = pair.member(0, person(OPERATOR_ID, "Op"))
    bob_two = pair.member(1, person(2, "Bob"))
    await bob_two.send("/points")  # instance two now holds the pond's settings
    await pair.settle()
    tracking_two = pair.two.dp["tracking"]
    assert tracking_two._cached_pond(GROUP_ID) is not None
    await op_one.send("/settings language=en")
    await pair.settle()
    for _ in range(100):
        if tracking_two._cached_pond(GROUP_ID) is None:
            break
        await asyncio.sleep(0.01)
    assert tracking_two._cached_pond(GROUP_ID) is None  # told, not waiting for its poll
    await bob_two.send("/points")
    await pair.settle()
    assert "points" in pair.session.sent_texts(GROUP_ID)[-1].lower()
