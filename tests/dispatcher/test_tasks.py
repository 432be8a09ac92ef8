"""Daily tasks (SPEC F13) through the real Dispatcher: the bonus once when the day's
last task is done — also when that update is replayed —, nothing while a task is left,
no bonus on a day with only the check-in, a packet that ran out not held against a
member, `/tasks` in the pond and in a private chat.

Every test ends with the fake Bot API session's spec check (zero violations)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiogram.types import Chat, Message, Update, User
from sqlalchemy import select

from games import tasks as rules
from games.checkin import local_day
from handlers.votes import VoteButton
from scheduler.core import Scheduler
from services.red_packets import RedPacketCB
from storage import ledger, repo
from storage import tasks as store
from storage.db import Database
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
from tests.dispatcher.conftest import GROUP_ID, OPERATOR_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person, private_chat
from tests.rig.fake_session import BOT_ID


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Pond:
    def __init__(self, h: Harness, db: Database, clock: Clock) -> None:
        self.h = h
        self.db = db
        self.clock = clock
        self.chat = group_chat(GROUP_ID, "Pond")

    def member(self, user_id: int, name: str) -> GroupClient:
        return self.h.member(self.chat, person(user_id, name))

    @property
    def op(self) -> GroupClient:
        return self.member(OPERATOR_ID, "Op")

    def post(self, message_id: int) -> Message:
        """The bot's message `message_id` in the pond, as a click carries it."""
        return Message(message_id=message_id, date=self.h.now, chat=self.chat,
                       from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"), text="·")

    async def latest(self, model: Any) -> Any:
        async with self.db.transaction(readonly=True) as s:
            row = (await s.execute(select(model).order_by(model.id.desc()))).scalars().first()
        assert row is not None
        return row

    async def bonuses(self, user_id: int | None = None) -> list[LedgerEntry]:
        async with self.db.transaction(readonly=True) as s:
            stmt = select(LedgerEntry).where(LedgerEntry.kind == str(LedgerKind.task_bonus))  # type: ignore[arg-type]
            rows = list((await s.execute(stmt)).scalars().all())
        return [r for r in rows if user_id is None or r.user_id == user_id]

    async def balance(self, user_id: int) -> int:
        async with self.db.transaction(readonly=True) as s:
            m = await s.get(Member, user_id)
        return 0 if m is None else m.balance

    def today(self) -> date:
        return local_day(self.clock.now, "Asia/Shanghai")

    async def last_reply(self) -> str:
        await self.h.settle()
        return self.h.session.sent_texts(self.chat.id)[-1]

    async def open_games(self, *, packet: str = "/redpacket 100 5") -> tuple[Message, int, Message]:
        """An operator opens a vote, a guess round, a red packet and the lottery; returns
        the vote's post, its id and the packet's post."""
        await self.op.send("/prize add 1 - points=5 Five")
        await self.op.send("/vote 1h Which colour? | Red | Blue")
        await self.op.send("/guessprice 199 10m 100 Dress")
        await self.op.send(packet)
        await self.h.settle()
        vote = await self.latest(Vote)
        red = await self.latest(RedPacket)
        return self.post(vote.message_id), int(vote.id), self.post(red.message_id)

    async def post_of_packet(self) -> Message:
        return self.post((await self.latest(RedPacket)).message_id)

    async def grab(self, who: GroupClient, post: Message) -> None:
        packet = await self.latest(RedPacket)
        await who.click(post, RedPacketCB(id=packet.id).pack())

    async def invariant_ok(self) -> bool:
        async with self.db.transaction(readonly=True) as s:
            return (await ledger.check_invariant(s)).ok


@pytest.fixture
async def pond(bot_db: Database) -> AsyncIterator[Pond]:
    clock = Clock(datetime.now(UTC))
    async with running(bot_db, Scheduler(bot_db, clock=clock)) as h:
        clock.now = h.now  # the members' messages are dated now: one clock for all
        h.dp["clock"] = clock
        async with bot_db.transaction() as s:  # an English-speaking pond, for readable asserts
            await repo.upsert_pond(
                s, GROUP_ID, title="Pond", chat_type="supergroup", default_language="en"
            )
            await repo.change_pond_settings(s, GROUP_ID, guess_quiet_below=20,
                                            checkin_quiet_below=20, lottery_quiet_below=20)
        yield Pond(h, bot_db, clock)


async def test_every_task_done_pays_the_bonus_once_also_when_the_last_is_replayed(
    pond: Pond,
) -> None:
    vote_post, vote_id, packet_post = await pond.open_games()
    await pond.member(9, "Zed").send("/draw")  # the lottery is played in the pond today
    alice = pond.member(1, "Alice")
    await alice.send("签到")
    await alice.click(vote_post, VoteButton(vote_id=vote_id, option=0).pack())
    await alice.send("/guess 150")
    await pond.grab(alice, packet_post)
    assert await pond.bonuses() == []  # the draw is left
    await alice.send("/tasks")
    shown = await pond.last_reply()
    assert "Today's tasks" in shown and "✅ Check in" in shown and "✅ Vote" in shown
    assert "✅ Guess" in shown and "✅ Grab" in shown and "⬜ Draw" in shown
    assert "1 to go for the bonus of 10 points" in shown
    before = await pond.balance(1)
    draw = alice.message("/draw")  # the last task
    update_id = pond.h.next_update_id()
    await pond.h.feed(Update(update_id=update_id, message=draw))
    [bonus] = await pond.bonuses()
    assert bonus.user_id == 1 and bonus.delta == 10
    assert bonus.idem_key == f"task_bonus:1:{pond.today().isoformat()}"
    await pond.h.feed(Update(update_id=update_id, message=draw))  # the same update again
    await alice.resend(draw, pond.h.next_update_id())  # and redelivered under a new id
    await alice.send("/tasks")  # asking again pays nothing either
    assert "the bonus of 10 points is paid" in await pond.last_reply()
    assert len(await pond.bonuses()) == 1
    assert await pond.balance(1) == before + 10 + 5  # the bonus and the prize, once each
    assert await pond.invariant_ok()


async def test_a_task_left_pays_nothing_and_the_list_says_what_is_left(pond: Pond) -> None:
    vote_post, vote_id, packet_post = await pond.open_games()
    carol = pond.member(3, "Carol")
    await carol.send("签到")
    await carol.click(vote_post, VoteButton(vote_id=vote_id, option=0).pack())
    await pond.grab(carol, packet_post)
    await carol.send("/draw")
    assert await pond.bonuses() == []  # the guess is left
    await carol.send("/tasks")
    shown = await pond.last_reply()
    assert "⬜ Guess" in shown and "✅ Draw" in shown and "1 to go" in shown
    async with pond.db.transaction() as s:  # her private chat with the bot is linked
        member = await s.get(Member, 3)
        assert member is not None
        member.dm_linked = True
        s.add(member)
    await carol.send("/guess 170")  # the last one
    assert len(await pond.bonuses(3)) == 1
    await pond.h.settle()
    told = [t for t in pond.h.session.sent_texts(3) if "task" in t]  # her private chat
    balance = await pond.balance(3)
    assert told == [f"🎉 Every task of today is done: +10 points. Balance {balance}."]


async def test_a_day_with_only_the_check_in_pays_no_bonus(pond: Pond) -> None:
    dave = pond.member(4, "Dave")
    await dave.send("签到")
    await dave.send("/tasks")
    assert "No game in the pond today" in await pond.last_reply()
    assert await pond.bonuses() == []


async def test_a_packet_that_ran_out_is_not_held_against_a_member(pond: Pond) -> None:
    vote_post, vote_id, packet_post = await pond.open_games(packet="/redpacket 2 1")
    erin, frank = pond.member(5, "Erin"), pond.member(6, "Frank")
    await pond.grab(frank, packet_post)  # the only share
    await erin.send("签到")
    await erin.click(vote_post, VoteButton(vote_id=vote_id, option=0).pack())
    assert await pond.bonuses() == []
    await erin.send("/guess 120")
    assert len(await pond.bonuses(5)) == 1  # the packet is over for her: not counted
    await erin.send("/tasks")
    assert "➖ Grab" in await pond.last_reply()


async def test_one_bonus_a_day_whichever_pond(pond: Pond) -> None:
    other = group_chat(GROUP_ID - 1, "Other pond")
    async with pond.db.transaction() as s:
        await repo.upsert_pond(s, other.id, title="Other pond", chat_type="supergroup",
                               default_language="en")
    await pond.h.member(other, person(OPERATOR_ID, "Op")).send("/vote 1h Q | A | B")
    vote_post, vote_id, _ = await pond.open_games()
    hana = pond.member(8, "Hana")
    await hana.send("签到")
    await hana.click(vote_post, VoteButton(vote_id=vote_id, option=0).pack())
    await hana.send("/guess 100")
    await pond.grab(hana, await pond.post_of_packet())
    assert len(await pond.bonuses(8)) == 1
    await pond.h.member(other, person(8, "Hana")).send("/tasks")  # its vote not voted in
    await pond.h.settle()
    shown = pond.h.session.sent_texts(other.id)[-1]
    assert "⬜ Vote" in shown and "paid already" in shown


async def test_a_bonus_not_settled_after_the_action_is_paid_by_tasks_later(
    pond: Pond, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await pond.op.send("/vote 1h Q | A | B")
    await pond.h.settle()
    vote = await pond.latest(Vote)
    ivy = pond.member(10, "Ivy")
    await ivy.click(pond.post(vote.message_id), VoteButton(vote_id=vote.id, option=1).pack())

    async def broken(*args: Any, **kw: Any) -> dict[int, store.DayFacts]:
        raise ConnectionError("the database went away")

    facts_many = store.facts_many
    monkeypatch.setattr(store, "facts_many", broken)
    await ivy.send("签到")  # the last task: checked in and answered, the bonus not paid
    assert "checked in" in await pond.last_reply()
    assert await pond.bonuses() == []
    monkeypatch.setattr(store, "facts_many", facts_many)
    await ivy.send("/tasks")
    assert "the bonus of 10 points is paid" in await pond.last_reply()
    assert len(await pond.bonuses(10)) == 1


async def test_the_sender_of_a_packet_has_done_its_task(pond: Pond) -> None:
    async with pond.db.transaction() as s:
        s.add(Member(user_id=11, first_name="Mei"))
        await s.flush()
        await ledger.award(s, user_id=11, amount=100, kind=LedgerKind.admin_adjust,
                           key="seed:11")
    mei = pond.member(11, "Mei")
    await mei.send("签到")
    await mei.send("/redpacket 30 3")  # she cannot grab her own
    await pond.h.settle()
    await mei.send("/tasks")
    shown = await pond.last_reply()
    assert "✅ Grab" in shown and "the bonus of 10 points is paid" in shown
    assert len(await pond.bonuses(11)) == 1


async def test_sending_a_packet_as_the_last_task_pays_the_bonus_at_once_and_once(
    pond: Pond,
) -> None:
    async with pond.db.transaction() as s:
        s.add(Member(user_id=12, first_name="Nia"))
        await s.flush()
        await ledger.award(s, user_id=12, amount=100, kind=LedgerKind.admin_adjust,
                           key="seed:12")
    await pond.op.send("/redpacket 100 5")  # the day's game
    nia = pond.member(12, "Nia")
    await nia.send("签到")
    assert await pond.bonuses(12) == []  # the packet is left
    before = await pond.balance(12)
    sent = await nia.send("/redpacket 30 3")  # she sends one instead of grabbing
    [bonus] = await pond.bonuses(12)
    assert bonus.delta == 10 and bonus.idem_key == f"task_bonus:12:{pond.today().isoformat()}"
    await nia.resend(sent, pond.h.next_update_id())  # the command redelivered
    await nia.send("/redpacket 20 2")  # and a second packet
    assert len(await pond.bonuses(12)) == 1
    assert await pond.balance(12) == before - 30 + 10 - 20
    async with pond.db.transaction(readonly=True) as s:
        funders = (await s.execute(select(RedPacket.funder_id))).scalars().all()  # type: ignore[call-overload]
    assert funders.count(12) == 2  # the redelivered command made none
    assert await pond.invariant_ok()


async def test_tasks_in_a_private_chat_say_they_are_per_pond(pond: Pond) -> None:
    user = person(7, "Gina")
    chat: Chat = private_chat(user)
    await pond.h.member(chat, user).send("/tasks")
    await pond.h.settle()
    assert "按鱼塘" in pond.h.session.sent_texts(user.id)[-1]  # Chinese: the default


async def test_a_crowd_completing_at_once_is_read_together_and_paid_once_each(
    pond: Pond, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await pond.op.send("/vote 1h Which colour? | Red | Blue")
    await pond.h.settle()
    vote = await pond.latest(Vote)
    crowd = [pond.member(100 + i, f"M{i}") for i in range(30)]
    for m in crowd:
        await m.click(pond.post(vote.message_id), VoteButton(vote_id=vote.id, option=0).pack())
    assert await pond.bonuses() == []  # nobody checked in yet
    reads: list[int] = []
    facts_many = store.facts_many

    async def counted(*args: Any, **kw: Any) -> dict[int, store.DayFacts]:
        reads.append(len(kw["user_ids"]))
        return await facts_many(*args, **kw)

    monkeypatch.setattr(store, "facts_many", counted)
    await asyncio.gather(*(m.send("签到") for m in crowd))
    paid = await pond.bonuses()
    assert sorted(e.user_id for e in paid) == [100 + i for i in range(30)]
    assert sum(reads) == 30 and len(reads) < 30  # members read together
    await asyncio.gather(*(m.send("签到") for m in crowd))  # again: already, nothing more
    assert len(await pond.bonuses()) == 30
    assert await pond.invariant_ok()


# -- storage, on SQLite and PostgreSQL -------------------------------------------------

SHANGHAI_NOON = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
DAY = date(2026, 12, 6)


async def test_the_day_s_facts_and_the_bonus_once(db: Database) -> None:
    now, hour = SHANGHAI_NOON, timedelta(hours=1)
    eve = datetime(2026, 12, 5, 15, 59, tzinfo=UTC)  # 23:59 the day before, in Shanghai

    async def facts(user_id: int = 1, chat_id: int = GROUP_ID) -> store.DayFacts:
        async with db.transaction(readonly=True) as s:
            return await store.facts(s, chat_id=chat_id, user_id=user_id, day=DAY,
                                     timezone="Asia/Shanghai", now=now)

    async def opened() -> bool:
        async with db.transaction(readonly=True) as s:
            return await store.games_opened(s, GROUP_ID, DAY, "Asia/Shanghai")

    async with db.transaction() as s:
        s.add(Member(user_id=1, first_name="A", dm_linked=True))
        s.add(Member(user_id=2, first_name="B"))
        # Yesterday's vote, a cancelled one, another pond's: none is today's here.
        s.add(Vote(chat_id=GROUP_ID, source_key="v0", question="Q", options=["a", "b"],
                   opened_at=eve, closes_at=now + hour))
        s.add(Vote(chat_id=GROUP_ID, source_key="v1", question="Q", options=["a", "b"],
                   state="canceled", opened_at=now, closes_at=now + hour))
        s.add(Vote(chat_id=-1, source_key="v2", question="Q", options=["a", "b"],
                   opened_at=now, closes_at=now + hour))
    assert not await opened()
    assert not (await facts()).facts.games[rules.Kind.vote].offered

    async with db.transaction() as s:
        vote = Vote(chat_id=GROUP_ID, source_key="v3", question="Q", options=["a", "b"],
                    opened_at=now - hour, closes_at=now + hour)
        rnd = GuessRound(chat_id=GROUP_ID, source_key="g1", product="P", price_cents=100,
                         prize=1, mode="closest", state="closed", opened_at=now - hour,
                         closes_at=now - hour / 2)
        packet = RedPacket(chat_id=GROUP_ID, total=2, shares=1, mode="equal", taken=1,
                           state="finished", source_key="p1", created_at=now - hour,
                           expires_at=now + hour)
        s.add_all([vote, rnd, packet])
        s.add(Prize(name="Five", weight=1, kind="points", points=5, source_key="z1"))
        await s.flush()
        assert vote.id is not None and rnd.id is not None and packet.id is not None
        s.add(VoteBallot(vote_id=vote.id, user_id=1))
        s.add(PriceGuess(round_id=rnd.id, user_id=1, cents=90, source_key="pg1"))
        s.add(RedPacketShare(packet_id=packet.id, seq=1, amount=2, user_id=2))
        s.add(Draw(user_id=2, chat_id=GROUP_ID, day=DAY, source_key="d1"))
        s.add(Checkin(user_id=1, chat_id=GROUP_ID, day=DAY, streak=1, points=5))
    assert await opened()
    mine = await facts(1)
    kinds = rules.Kind
    assert mine.facts.checked_in and mine.facts.today and mine.dm_linked and not mine.paid
    assert mine.facts.games[kinds.vote] == rules.Game(True, True, True)
    assert mine.facts.games[kinds.guess] == rules.Game(True, False, True)
    assert mine.facts.games[kinds.red_packet] == rules.Game(True, False, False)
    assert mine.facts.games[kinds.lottery] == rules.Game(True, True, False)
    theirs = await facts(2)
    assert not theirs.facts.checked_in and not theirs.dm_linked
    assert theirs.facts.games[kinds.red_packet].done and theirs.facts.games[kinds.lottery].done

    for _ in range(2):
        async with db.transaction() as s:
            move = await store.award(s, user_id=1, chat_id=GROUP_ID, day=DAY, amount=10,
                                     now=now)
        assert move is not None and move.balance == 10
    assert (await facts(1)).paid
    async with db.transaction() as s:
        assert await store.award(s, user_id=2, chat_id=GROUP_ID, day=DAY, amount=0,
                                 now=now) is None
        entries = (await s.execute(select(LedgerEntry))).scalars().all()
        assert [(e.user_id, e.delta, e.idem_key) for e in entries] == [
            (1, 10, "task_bonus:1:2026-12-06")]
        assert (await ledger.check_invariant(s)).ok
