"""Undo through the real Dispatcher on a fake clock: `/vote close`, `/vote cancel`,
`/guessprice cancel`, `/redpacket recall <id>` — what each answers, what it posts (and
does not post: every request the fake Bot API received is looked at), replays, and the
scheduled close or expiry that comes later and finds nothing left to do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from sqlalchemy import func, select

from handlers.votes import VoteButton
from scheduler.core import Scheduler
from storage import repo
from storage.models import (
    GuessRound,
    LedgerEntry,
    PriceGuess,
    RedPacket,
    ScheduledTask,
    Vote,
    VoteBallot,
)
from tests.dispatcher.conftest import GROUP_ID, running
from tests.dispatcher.test_games import Clock, Pond, vote_post
from tests.rig.client import GroupClient, group_chat


@pytest.fixture
async def pond(bot_db: Any) -> AsyncIterator[Pond]:
    clock = Clock()
    scheduler = Scheduler(bot_db, clock=clock)
    async with running(bot_db, scheduler) as h:
        async with bot_db.transaction() as s:  # an English-speaking pond, for readable asserts
            await repo.upsert_pond(
                s, GROUP_ID, title="Pond", chat_type="supergroup", default_language="en"
            )
            await repo.change_pond_settings(s, GROUP_ID, guess_quiet_below=20)
        yield Pond(h, clock, scheduler, group_chat(GROUP_ID, "Pond"))


def texts_of(p: Pond, since: int = 0) -> list[str]:
    """Every text or caption in every request the bot made (sent, edited, answered)."""
    out = []
    for r in p.session.requests[since:]:
        for field in ("text", "caption"):
            value = getattr(r, field, None)
            if isinstance(value, str):
                out.append(value)
    return out


async def command(p: Pond, who: GroupClient, text: str) -> tuple[Any, str]:
    """Send a command, wait for everything it caused; the message and the bot's reply."""
    before = len(p.session.requests)
    msg = await who.send(text)
    await p.h.settle()
    replies = [
        r.text
        for r in p.session.requests[before:]
        if isinstance(r, SendMessage) and r.reply_parameters is not None
        and r.reply_parameters.message_id == msg.message_id
    ]
    assert len(replies) == 1, replies
    return msg, replies[0]


async def replayed_silently(p: Pond, who: GroupClient, msg: Any) -> bool:
    before = len(p.session.requests)
    await who.resend(msg, update_id=p.h.next_update_id())
    await p.h.settle()
    return len(p.session.requests) == before


async def task_states(p: Pond, like: str) -> list[str]:
    async with p.db.transaction(readonly=True) as s:
        rows = await s.execute(
            select(ScheduledTask.state).where(ScheduledTask.key.like(like))  # type: ignore[attr-defined]
        )
        return [str(r) for r in rows.scalars().all()]


# -- votes ---------------------------------------------------------------------------------


async def test_vote_close_posts_the_result_once_and_the_deadline_posts_nothing(
    pond: Pond,
) -> None:
    alice = pond.member(1, "Alice")
    await pond.op.send("/vote 1h Which colour? | Red | Blue")
    await pond.h.settle()
    msg = await vote_post(pond)
    vote_id = await pond.scalar(select(Vote.id))
    await alice.click(msg, VoteButton(vote_id=vote_id, option=1).pack())
    await pond.h.settle()

    cmd, answer = await command(pond, pond.op, "/vote close")
    assert f"Vote #{vote_id}" in answer and "closed now" in answer and "1 voted" in answer
    results = [t for t in texts_of(pond) if t.startswith("📊")]
    assert len(results) == 1 and "Blue — <b>1</b>" in results[0]
    frozen = [e for e in pond.session.requests_of(EditMessageText) if "Closed" in e.text]
    assert frozen and frozen[-1].reply_markup is None
    assert await pond.scalar(select(Vote.state)) == "closed"
    assert await replayed_silently(pond, pond.op, cmd)

    await pond.later(3600)  # the close at the deadline, and the command's own run
    assert [t for t in texts_of(pond) if t.startswith("📊")] == results
    assert await task_states(pond, "vote.close:%") == ["done", "done"]
    _, answer = await command(pond, pond.op, "/vote close")
    assert answer == "⚠️ No vote is open in this pond."


async def test_vote_cancel_posts_no_result_and_a_new_vote_opens_at_once(pond: Pond) -> None:
    alice = pond.member(1, "Alice")
    await pond.op.send("/vote 1h Which colour? | Red | Blue")
    await pond.h.settle()
    msg = await vote_post(pond)
    vote_id = await pond.scalar(select(Vote.id))
    await alice.click(msg, VoteButton(vote_id=vote_id, option=0).pack())
    await pond.h.settle()
    assert await pond.balance(1) == 2  # participation points

    cmd, answer = await command(pond, pond.op, "/vote cancel")
    assert f"Vote #{vote_id}" in answer and "cancelled" in answer and "no result" in answer
    assert "1 ballots are kept" in answer and "(+2 each) stay paid" in answer
    edit = pond.session.requests_of(EditMessageText)[-1]
    assert edit.message_id == msg.message_id and "cancelled" in edit.text
    assert edit.reply_markup is None  # buttons removed
    assert await pond.scalar(select(Vote.state)) == "canceled"
    assert await pond.scalar(select(func.count()).select_from(VoteBallot)) == 1
    assert await replayed_silently(pond, pond.op, cmd)

    # A new vote opens right after.
    await pond.op.send("/vote 2h Next drop? | Hat | Scarf")
    await pond.h.settle()
    new = await vote_post(pond)
    assert new.message_id != msg.message_id
    async with pond.db.transaction(readonly=True) as s:
        states = (await s.execute(select(Vote.id, Vote.state).order_by(Vote.id))).all()  # type: ignore[arg-type]
    assert [state for _, state in states] == ["canceled", "open"]

    # A late click changes nothing; the deadline comes and goes without a result.
    await alice.click(msg, VoteButton(vote_id=vote_id, option=1).pack())
    await pond.h.settle()
    assert "closed" in (pond.session.requests_of(AnswerCallbackQuery)[-1].text or "")
    await pond.later(3600)
    every = texts_of(pond)
    assert not [t for t in every if t.startswith("📊") or "Vote result" in t]
    assert await pond.balance(1) == 2  # paid once, kept
    assert await pond.invariant_ok()


async def test_vote_undo_takes_the_named_or_latest_vote_and_refuses_bad_input(
    pond: Pond,
) -> None:
    await pond.op.send("/vote 1h First? | A | B")
    await pond.op.send("/vote 1h Second? | A | B")
    await pond.h.settle()
    first, second = sorted(await pond_votes(pond))
    before = len(pond.session.requests)
    for bad in ("/vote close abc", "/vote cancel 1 2", "/vote close #0", "/vote CLOSE x"):
        _, answer = await command(pond, pond.op, bad)
        assert answer.startswith("⚠️ Usage: /vote close [id]"), answer
    _, answer = await command(pond, pond.member(1, "Alice"), "/vote cancel")
    assert "operators" in answer
    _, answer = await command(pond, pond.op, "/vote close #999")
    assert answer == "⚠️ Vote #999 is not open in this pond."
    assert await pond_votes(pond) == {first: "open", second: "open"}
    assert not [t for t in texts_of(pond, before) if t.startswith("📊")]

    _, answer = await command(pond, pond.op, f"/vote cancel #{first}")
    assert f"Vote #{first}" in answer
    _, answer = await command(pond, pond.op, "/vote close")
    assert f"Vote #{second}" in answer  # the most recent open one
    assert await pond_votes(pond) == {first: "canceled", second: "closed"}


async def pond_votes(p: Pond) -> dict[int, str]:
    async with p.db.transaction(readonly=True) as s:
        rows = (await s.execute(select(Vote.id, Vote.state))).all()  # type: ignore[call-overload]
    return {int(i): str(state) for i, state in rows}


# -- guess the price -----------------------------------------------------------------------


async def test_guessprice_cancel_frees_the_slot_pays_nobody_and_keeps_the_price(
    pond: Pond,
) -> None:
    alice = pond.member(1, "Alice")
    await alice.send("hi")
    await pond.op.send("/guessprice 199 30d 100 Typo Dress mode=hit")
    await pond.h.settle()
    first = await pond.round()
    await alice.send("/guess 199")  # a hit: a winner slot taken, the round would close now
    await pond.h.settle()
    won = select(func.count()).select_from(PriceGuess).where(PriceGuess.won.is_(True))  # type: ignore[attr-defined]
    assert await pond.scalar(won) == 1

    cmd, answer = await command(pond, pond.op, "/guessprice cancel")
    assert f"Round #{first.id}" in answer and "nobody wins" in answer
    rnd = await pond.round()
    assert rnd.state == "canceled" and rnd.open_chat_id is None
    edit = pond.session.requests_of(EditMessageText)[-1]
    assert edit.message_id == first.message_id and "cancelled" in edit.text
    assert await replayed_silently(pond, pond.op, cmd)

    # The slot is free at once.
    await pond.op.send("/guessprice 299 30d 100 Silk Dress")
    await pond.h.settle()
    second = await pond.round()
    assert second.id != first.id and second.state == "open" and second.message_id

    await pond.later(60)  # the early close the hit scheduled, and the command's own run
    await pond.later(31 * 86400)  # both deadlines
    every = texts_of(pond)
    assert sum("Price revealed" in t for t in every) == 1  # the second round's only
    assert not [t for t in every if "Typo Dress" in t and "199" in t]  # the price stays secret
    assert await pond.balance(1) == 0
    async with pond.db.transaction(readonly=True) as s:
        prizes = await s.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "guess_price")  # type: ignore[arg-type]
        )
        assert prizes == 0
        assert await s.scalar(won) == 0  # Alice's hit in the cancelled round won nothing
        assert (await s.get(GuessRound, first.id)).state == "canceled"  # type: ignore[union-attr]


async def test_guessprice_cancel_refuses_members_bad_words_and_an_empty_pond(pond: Pond) -> None:
    _, answer = await command(pond, pond.op, "/guessprice cancel")
    assert answer == "⚠️ No guess-the-price round is open here right now."
    await pond.op.send("/guessprice 199 1h 100 Dress")
    await pond.h.settle()
    _, answer = await command(pond, pond.member(1, "Alice"), "/guessprice cancel")
    assert "operators" in answer
    _, answer = await command(pond, pond.op, "/guessprice cancel now")
    assert answer.startswith("⚠️ Usage: /guessprice cancel")
    assert (await pond.round()).state == "open"


# -- red packets ---------------------------------------------------------------------------


async def packet(p: Pond) -> RedPacket:
    async with p.db.transaction(readonly=True) as s:
        row = (await s.execute(select(RedPacket).order_by(RedPacket.id.desc()))).scalars().first()  # type: ignore[union-attr]
    assert row is not None
    return row


async def refunds(p: Pond) -> list[tuple[int, int]]:
    async with p.db.transaction(readonly=True) as s:
        rows = await s.execute(
            select(LedgerEntry.user_id, LedgerEntry.delta).where(  # type: ignore[call-overload]
                LedgerEntry.kind == "red_packet_refund"
            )
        )
        return [(int(u), int(d)) for u, d in rows.all()]


async def test_recall_of_a_member_packet_refunds_the_rest_once(pond: Pond) -> None:
    alice, bob, carol = pond.member(1, "Alice"), pond.member(2, "Bob"), pond.member(3, "Carol")
    await alice.send("hi")
    await pond.op.send("/give 1 100")
    await alice.send("/redpacket 50 5")
    await pond.h.settle()
    rp = await packet(pond)
    [post] = [m for m in pond.session.delivered_of(SendMessage) if m.reply_markup is not None]
    assert f"#{rp.id}" in post.text  # the id operators name
    msg = pond.post(rp.message_id or 0, post.text)
    data = f"rp:{rp.id}"
    await bob.click(msg, data)
    await pond.h.settle()
    bob_got = await pond.balance(2)
    assert 1 <= bob_got <= 46

    cmd, answer = await command(pond, pond.op, f"/redpacket recall {rp.id}")
    left = 50 - bob_got
    assert f"#{rp.id} recalled" in answer and f"{left} unclaimed points went back" in answer
    assert await pond.balance(1) == 50 + left
    assert await refunds(pond) == [(1, left)]
    final = pond.session.requests_of(EditMessageText)[-1]
    assert "Recalled: 1/5" in final.text and "Bob" in final.text and final.reply_markup is None
    assert await replayed_silently(pond, pond.op, cmd)

    # Later presses pay nothing and say why (answered from this process's memory).
    before = len(pond.session.requests)
    await carol.click(msg, data)
    await pond.h.settle()
    assert texts_of(pond, before) == ["This red packet was recalled."]
    assert await pond.balance(3) == 0

    await pond.later(24 * 3600 + 60)  # the packet's own expiry runs: nothing more to refund
    assert await refunds(pond) == [(1, left)]
    assert (await packet(pond)).state == "recalled"
    _, answer = await command(pond, pond.op, f"/redpacket recall {rp.id}")
    assert answer == f"ℹ️ Red packet #{rp.id} was recalled already."
    assert await pond.invariant_ok()


async def test_recall_of_a_shop_packet_refunds_nothing_and_members_may_recall_only_theirs(
    pond: Pond,
) -> None:
    alice, bob = pond.member(1, "Alice"), pond.member(2, "Bob")
    await pond.op.send("/redpacket 100 5")
    await pond.h.settle()
    shop = await packet(pond)
    _, answer = await command(pond, alice, f"/redpacket recall {shop.id}")
    assert "Only the operators, or the member who sent it" in answer
    _, answer = await command(pond, pond.op, f"/redpacket recall #{shop.id}")
    assert "not given out" in answer
    assert (await packet(pond)).state == "recalled" and await refunds(pond) == []

    await alice.send("hi")
    await pond.op.send("/give 1 100")
    await alice.send("/redpacket 30 3")
    await pond.h.settle()
    own = await packet(pond)
    _, answer = await command(pond, bob, f"/redpacket recall {own.id}")
    assert "Only the operators" in answer
    _, answer = await command(pond, alice, f"/redpacket recall {own.id}")
    assert "30 unclaimed points went back" in answer
    assert await pond.balance(1) == 100 and await refunds(pond) == [(1, 30)]

    for bad in ("/redpacket recall", "/redpacket recall x", "/redpacket recall 1 2"):
        _, answer = await command(pond, pond.op, bad)
        assert answer.startswith("⚠️ Usage: /redpacket recall"), answer
    _, answer = await command(pond, pond.op, "/redpacket recall 999")
    assert answer == "⚠️ There is no red packet #999 in this pond."
