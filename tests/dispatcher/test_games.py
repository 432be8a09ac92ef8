"""Guess the price, votes and invite links through the real Dispatcher, on a fake clock.

Every test ends with the fake Bot API session's spec check (zero violations)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram.methods import (
    AnswerCallbackQuery,
    CreateChatInviteLink,
    EditMessageCaption,
    EditMessageText,
    SendMessage,
    SendPhoto,
)
from aiogram.types import (
    CallbackQuery,
    Chat,
    ChatInviteLink,
    ChatMemberLeft,
    ChatMemberMember,
    ChatMemberUpdated,
    Message,
    PhotoSize,
    Update,
    User,
)
from sqlalchemy import func, select

from bot.app import build_dispatcher
from bot.polling import handle_batch
from games.checkin import local_day
from handlers.votes import VoteButton
from scheduler.core import Scheduler
from services.outbox import Outbox
from storage import checkin as checkin_store
from storage import invites, ledger, repo
from storage.models import (
    GuessRound,
    LedgerEntry,
    Member,
    PriceGuess,
    Referral,
    Vote,
    VoteBallot,
)
from tests.dispatcher.conftest import FAST, GROUP_ID, OPERATOR_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person, private_chat
from tests.rig.fake_session import BOT_ID, BOT_USERNAME, FakeSession

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
BOT = User(id=BOT_ID, is_bot=True, first_name="PondBot", username=BOT_USERNAME)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Pond:
    def __init__(self, h: Harness, clock: Clock, scheduler: Scheduler, chat: Chat) -> None:
        self.h = h
        self.db = h.db  # type: ignore[attr-defined]
        self.clock = clock
        self.scheduler = scheduler
        self.chat = chat
        self.session: FakeSession = h.session

    def member(self, user_id: int, name: str, username: str | None = None) -> GroupClient:
        return self.h.member(self.chat, person(user_id, name, username))

    @property
    def op(self) -> GroupClient:
        return self.h.member(self.chat, person(OPERATOR_ID, "Op"))

    async def later(self, seconds: float) -> None:
        """Move the clock on and run whatever fell due."""
        self.clock.now += timedelta(seconds=seconds)
        await self.scheduler.sweep()
        await self.h.settle()

    def said(self, chat_id: int | None = None) -> list[str]:
        """Every text and caption the bot sent or edited, in order."""
        out = []
        for r in self.session.requests:
            if chat_id is not None and getattr(r, "chat_id", None) != chat_id:
                continue
            for field in ("text", "caption"):
                value = getattr(r, field, None)
                if isinstance(value, str):
                    out.append(value)
        return out

    def replies(self) -> list[str]:
        return self.session.sent_texts(self.chat.id)

    async def scalar(self, stmt: Any) -> Any:
        async with self.db.transaction(readonly=True) as s:
            return await s.scalar(stmt)

    async def balance(self, user_id: int) -> int:
        async with self.db.transaction(readonly=True) as s:
            m = await s.get(Member, user_id)
        return 0 if m is None else m.balance

    async def round(self) -> GuessRound:
        async with self.db.transaction(readonly=True) as s:
            row = (
                (
                    await s.execute(select(GuessRound).order_by(GuessRound.id.desc()))  # type: ignore[union-attr]
                )
                .scalars()
                .first()
            )
        assert row is not None
        return row

    def post(self, message_id: int, text: str = "🏷") -> Message:
        """The bot's message `message_id` in the pond, as a member's reply quotes it."""
        return Message(
            message_id=message_id, date=self.h.now, chat=self.chat, from_user=BOT, text=text
        )

    async def invariant_ok(self) -> bool:
        async with self.db.transaction(readonly=True) as s:
            return (await ledger.check_invariant(s)).ok


@pytest.fixture
async def pond(bot_db: Any) -> AsyncIterator[Pond]:
    clock = Clock()
    scheduler = Scheduler(bot_db, clock=clock)
    async with running(bot_db, scheduler) as h:
        async with bot_db.transaction() as s:  # an English-speaking pond, for readable asserts
            await repo.upsert_pond(
                s, GROUP_ID, title="Pond", chat_type="supergroup", default_language="en"
            )
            # Quiet-pond replies up to 20 messages a minute (the busy-pond test sets 3).
            await repo.change_pond_settings(s, GROUP_ID, guess_quiet_below=20)
        yield Pond(h, clock, scheduler, group_chat(GROUP_ID, "测试鱼塘 <b>&</b>"))


def joined_via(chat: Chat, user: User, link: str | None, *, was: str = "left") -> ChatMemberUpdated:
    old = ChatMemberLeft(user=user) if was == "left" else ChatMemberMember(user=user)
    return ChatMemberUpdated(
        chat=chat,
        from_user=user,
        date=datetime.now(UTC),
        old_chat_member=old,
        new_chat_member=ChatMemberMember(user=user),
        invite_link=None
        if link is None
        else ChatInviteLink(
            invite_link=link,
            creator=BOT,
            creates_join_request=False,
            is_primary=False,
            is_revoked=False,
        ),
    )


async def link_of(p: Pond, user_id: int) -> str:
    async with p.db.transaction(readonly=True) as s:
        link = await invites.get_link(s, GROUP_ID, user_id)
    assert link is not None
    return link


# -- guess the price: closest ------------------------------------------------------------


async def test_closest_round_nearest_wins_ties_to_earliest_paid_once(pond: Pond) -> None:
    alice, bob, carol, dave = (
        pond.member(1, "Alice <b>"),
        pond.member(2, "Bob"),
        pond.member(3, "Carol"),
        pond.member(4, "Dave"),
    )
    for m in (alice, bob, carol, dave):
        await m.send("hi")
    await pond.op.send("/guessprice 199 1m 100 Test Dress")
    await pond.h.settle()
    rnd = await pond.round()
    assert rnd.state == "open" and rnd.message_id is not None and rnd.price_cents == 19900

    await alice.send("/guess 150")
    await bob.send("198", reply_to=pond.post(rnd.message_id))  # a reply to the post
    await dave.send("/guess ￥２００")  # as near as Bob's, but later: loses the tie
    await carol.send("/guess 250")
    again = await carol.send("/guess 199")  # one guess each in closest mode
    await pond.h.settle()
    assert "already guessed" in pond.replies()[-1]
    assert await pond.scalar(select(func.count()).select_from(PriceGuess)) == 4
    # The round post counts participants (edited in place).
    edits = pond.session.requests_of(EditMessageText)
    assert edits and "4 taking part" in edits[-1].text

    # Nothing said before the close names the price.
    assert not [t for t in pond.said() if "199" in t]

    await pond.later(59)
    assert (await pond.round()).state == "open"
    await carol.resend(again, update_id=pond.h.next_update_id())  # a replay changes nothing
    await pond.later(1)
    rnd = await pond.round()
    assert rnd.state == "closed" and rnd.revealed_at is not None
    reveal = pond.replies()[-1]
    assert "¥199" in reveal and "Bob" in reveal and "Dave" not in reveal
    assert [await pond.balance(u) for u in (1, 2, 3, 4)] == [0, 100, 0, 0]
    # Later sweeps and an explicit re-run of the job pay nothing more, say nothing more.
    said = len(pond.said())
    await pond.later(3600)
    assert (
        await pond.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "guess_price")  # type: ignore[arg-type]
        )
        == 1
    )
    assert len(pond.said()) == said
    await alice.send("/guess 199")
    await pond.h.settle()
    assert "No guess-the-price round" in pond.replies()[-1]
    assert await pond.invariant_ok()


async def test_busy_pond_guesses_edit_the_post_instead_of_replying(pond: Pond) -> None:
    async with pond.db.transaction() as s:
        await repo.change_pond_settings(s, GROUP_ID, guess_quiet_below=3)
    await pond.op.send("/guessprice 199 10m 100 Dress")
    await pond.h.settle()
    crowd = [pond.member(100 + i, f"M{i}") for i in range(40)]
    for i, m in enumerate(crowd):
        await m.send(f"/guess {100 + i}")
    for m in crowd:  # and everyone tries again: refused, silently
        await m.send("/guess 1")
    await pond.h.settle()
    replies = pond.replies()
    assert len(replies) <= 4, replies  # the post and the few acks while it was still quiet
    assert "40 taking part" in pond.session.requests_of(EditMessageText)[-1].text
    assert await pond.scalar(select(func.count()).select_from(PriceGuess)) == 40


async def test_hostile_guesses_get_short_errors_and_cost_no_attempt(pond: Pond) -> None:
    alice = pond.member(1, "Alice")
    await pond.op.send("/guessprice 199 1m 100 Dress mode=hit")
    await pond.h.settle()
    bad = ["1e309", "NaN", "inf", "-5", "0", "199.999", "99999999999", "0x1F", "一百", "¥"]
    for text in bad:
        before = len(pond.replies())
        await alice.send(f"/guess {text}")
        await pond.h.settle()
        assert len(pond.replies()) == before + 1, text
        answer = pond.replies()[-1]
        assert answer.startswith("⚠️") and len(answer) < 120, (text, answer)
    await alice.send("/guess")
    await pond.h.settle()
    assert pond.replies()[-1].startswith("Usage: /guess")
    assert await pond.scalar(select(func.count()).select_from(PriceGuess)) == 0
    # Still three real attempts.
    for text in ("100", "300", "250"):
        await alice.send(f"/guess {text}")
    await pond.h.settle()
    assert "No attempts left" in pond.replies()[-1]


async def test_round_commands_need_an_operator_and_one_open_round_per_pond(pond: Pond) -> None:
    alice = pond.member(1, "Alice")
    await alice.send("/guessprice 199 1m 100 Dress")
    await pond.h.settle()
    assert pond.replies()[-1].startswith("⛔")
    cmd = await pond.op.send("/guessprice 199 1m 100 Dress")
    await pond.op.send("/guessprice 299 1m 100 Bag")
    await pond.op.resend(cmd, update_id=pond.h.next_update_id())  # replay: silent
    await pond.op.send("/guessprice abc 1m 100 Bag")
    await pond.h.settle()
    replies = pond.replies()
    assert "already open" in replies[-2]
    assert replies[-1].startswith("⚠️") and "/guessprice" in replies[-1]
    assert await pond.scalar(select(func.count()).select_from(GuessRound)) == 1
    await pond.later(60)
    await pond.op.send("/guessprice 299 1m 100 Bag")
    await pond.h.settle()
    assert await pond.scalar(select(func.count()).select_from(GuessRound)) == 2


async def test_round_with_a_photo_is_sent_as_a_photo_and_counted_in_its_caption(
    pond: Pond,
) -> None:
    photo = Message(
        message_id=5,
        date=pond.h.now,
        chat=pond.chat,
        from_user=person(OPERATOR_ID, "Op"),
        photo=[PhotoSize(file_id="PHOTO-FILE-ID", file_unique_id="u1", width=90, height=90)],
    )
    await pond.op.send("/guessprice 59.9 1m 10 Lipstick", reply_to=photo)
    await pond.h.settle()
    [sent] = pond.session.requests_of(SendPhoto)
    assert sent.photo == "PHOTO-FILE-ID" and "Lipstick" in (sent.caption or "")
    rnd = await pond.round()
    await pond.member(1, "Alice").send("/guess 60")
    await pond.h.settle()
    [edit] = pond.session.requests_of(EditMessageCaption)
    assert edit.message_id == rnd.message_id and "1 taking part" in (edit.caption or "")


# -- guess the price: hit mode -----------------------------------------------------------


async def test_hit_mode_higher_lower_attempts_dm_fallback_and_early_close(pond: Pond) -> None:
    alice, bob = pond.member(1, "Alice"), pond.member(2, "Bob")
    # Bob linked his DM; Alice did not.
    bob_dm = pond.h.member(private_chat(bob.user), bob.user)
    await bob_dm.send("/start")
    await alice.send("hi")
    await pond.op.send("/guessprice 199 10m 100 Dress mode=hit")
    await pond.h.settle()

    await alice.send("/guess 150")
    await alice.send("/guess 250")
    await pond.h.settle()
    assert "Higher" in pond.replies()[-2] and "2 attempts left" in pond.replies()[-2]
    assert "Lower" in pond.replies()[-1] and "1 attempts left" in pond.replies()[-1]

    await bob.send("/guess 100")
    await pond.h.settle()
    assert "Higher" in pond.session.sent_texts(bob.user.id)[-1]  # privately
    # Bob blocks the bot: the next answer falls back to the group.
    pond.session.fail_next(
        "sendMessage",
        chat_id=bob.user.id,
        error_code=403,
        description="Forbidden: bot was blocked by the user",
    )
    await bob.send("/guess 300")
    await pond.h.settle()
    assert "Bob" in pond.replies()[-1] and "Lower" in pond.replies()[-1]
    # The refusal unlinked his DM: later answers go to the group without trying it first.
    async with pond.db.transaction(readonly=True) as s:
        bob_row = await s.get(Member, bob.user.id)
    assert bob_row is not None and not bob_row.dm_linked
    privately = [r for r in pond.session.requests if getattr(r, "chat_id", None) == bob.user.id]

    # Alice's third attempt is her last.
    await alice.send("/guess 198")
    await alice.send("/guess 199")
    await pond.h.settle()
    assert "No attempts left" in pond.replies()[-2]
    assert "used all 3" in pond.replies()[-1]
    assert not [t for t in pond.said() if "199" in t]

    # Bob hits: the only winner slot is taken, the round closes now, not in 10 minutes.
    await bob.send("/guess ¥199.00")
    await pond.h.settle()
    assert privately == [
        r for r in pond.session.requests if getattr(r, "chat_id", None) == bob.user.id
    ]
    await pond.later(0)
    rnd = await pond.round()
    assert rnd.state == "closed" and rnd.winners == 1
    assert "¥199" in pond.replies()[-1] and "Bob" in pond.replies()[-1]
    assert await pond.balance(2) == 100 and await pond.balance(1) == 0
    await pond.later(600)  # the original deadline passes: nothing more
    assert await pond.balance(2) == 100
    assert await pond.invariant_ok()


async def test_winners_limit_holds_and_hits_after_it_are_refused(pond: Pond) -> None:
    async with pond.db.transaction() as s:
        await repo.change_pond_settings(s, GROUP_ID, guess_winners=2, guess_tolerance_cents=100)
    await pond.op.send("/guessprice 199 10m 10 Dress mode=hit")
    await pond.h.settle()
    members = [pond.member(10 + i, f"M{i}") for i in range(4)]
    await members[0].send("/guess 198")  # within ¥1: a hit
    await members[1].send("/guess 200")  # a hit: the second and last winner
    await members[2].send("/guess 199")  # too late
    await pond.h.settle()
    assert (
        "winners were already found" in pond.replies()[-1]
        or "winners are found" in (pond.replies()[-1])
    )
    await pond.later(0)
    assert [await pond.balance(10 + i) for i in range(4)] == [10, 10, 0, 0]


async def test_a_friend_joining_through_the_link_gives_one_more_attempt(pond: Pond) -> None:
    alice = pond.member(1, "Alice")
    await alice.send("/invite")
    await pond.h.settle()
    link = await link_of(pond, 1)
    await pond.op.send("/guessprice 199 10m 100 Dress mode=hit")
    await pond.h.settle()
    for text in ("1", "2", "3", "4"):
        await alice.send(f"/guess {text}")
    await pond.h.settle()
    assert "used all 3" in pond.replies()[-1]
    friend = person(50, "Friend")
    await pond.h.feed_event(chat_member=joined_via(pond.chat, friend, link))
    await alice.send("/guess 5")
    await alice.send("/guess 6")
    await pond.h.settle()
    assert "Higher" in pond.replies()[-2]
    assert "used all 4" in pond.replies()[-1]
    assert await pond.scalar(select(func.count()).select_from(PriceGuess)) == 4


async def test_round_survives_a_restart_and_closes_late_once(pond: Pond, bot_db: Any) -> None:
    alice = pond.member(1, "Alice")
    await pond.op.send("/guessprice 199 1m 100 Dress")
    await alice.send("/guess 190")
    await pond.h.settle()
    # A new process (new scheduler, new dispatcher) comes up an hour after the deadline.
    clock = Clock(T0 + timedelta(hours=1))
    fresh = Scheduler(bot_db, clock=clock)
    outbox = Outbox(pond.h.bot, limits=FAST)
    build_dispatcher(db=bot_db, outbox=outbox, scheduler=fresh)
    await outbox.start()
    try:
        assert await fresh.start()
        await fresh.sweep()
    finally:
        await fresh.stop()  # waits for runs in flight: the recovered alarm may run it first
    await outbox.stop()
    assert (await pond.round()).state == "closed"
    assert await pond.balance(1) == 100
    assert "¥199" in pond.session.sent_texts(GROUP_ID)[-1]


# -- votes -------------------------------------------------------------------------------


async def vote_post(p: Pond) -> Message:
    async with p.db.transaction(readonly=True) as s:
        v = (await s.execute(select(Vote).order_by(Vote.id.desc()))).scalars().first()  # type: ignore[union-attr]
    assert v is not None and v.message_id is not None
    return p.post(v.message_id, v.question)


async def test_vote_change_keeps_one_ballot_and_one_payment(pond: Pond) -> None:
    alice, bob = pond.member(1, "Alice"), pond.member(2, "Bob")
    await pond.op.send("/vote 1h 上新选哪个？ | 红色 <b> | 蓝色 | 绿色")
    await pond.h.settle()
    [post] = pond.session.requests_of(SendMessage)[-1:]
    assert post.reply_markup is not None and "红色 &lt;b&gt;" in post.text
    msg = await vote_post(pond)
    vote_id = await pond.scalar(select(Vote.id))
    await alice.click(msg, VoteButton(vote_id=vote_id, option=0).pack())
    await alice.click(msg, VoteButton(vote_id=vote_id, option=1).pack())
    await alice.click(msg, VoteButton(vote_id=vote_id, option=1).pack())
    await bob.click(msg, VoteButton(vote_id=vote_id, option=1).pack())
    await pond.h.settle()
    toasts = [a.text or "" for a in pond.session.requests_of(AnswerCallbackQuery)]
    assert toasts[0].startswith("+2 points") and "红色 <b>" in toasts[0]
    assert "changed" in toasts[1] and "points" not in toasts[1]
    assert "already voted" in toasts[2]
    async with pond.db.transaction(readonly=True) as s:
        ballots = (await s.execute(select(VoteBallot.user_id, VoteBallot.option))).all()
    assert sorted(ballots) == [(1, 1), (2, 1)]
    assert await pond.balance(1) == 2 and await pond.balance(2) == 2
    assert "<b>2</b>" in pond.session.requests_of(EditMessageText)[-1].text

    await pond.later(3600)
    assert (await pond.scalar(select(Vote.state))) == "closed"
    result = pond.replies()[-1]
    assert "蓝色 — <b>2</b>" in result and "红色 &lt;b&gt; — <b>0</b>" in result
    frozen = pond.session.requests_of(EditMessageText)[-1]
    assert frozen.reply_markup is None
    await bob.click(msg, VoteButton(vote_id=vote_id, option=0).pack())
    await pond.h.settle()
    assert "closed" in (pond.session.requests_of(AnswerCallbackQuery)[-1].text or "")
    assert await pond.invariant_ok()


async def test_forged_vote_buttons_change_nothing(pond: Pond) -> None:
    alice = pond.member(1, "Alice")
    await pond.op.send("/vote 1h Q | A | B")
    await pond.h.settle()
    msg = await vote_post(pond)
    vote_id = await pond.scalar(select(Vote.id))
    other_chat = group_chat(-100999, "Other")
    elsewhere = Message(
        message_id=msg.message_id, date=pond.h.now, chat=other_chat, from_user=BOT, text="x"
    )
    await pond.h.member(other_chat, alice.user).click(
        elsewhere, VoteButton(vote_id=vote_id, option=0).pack()
    )
    await alice.click(pond.post(msg.message_id + 100), VoteButton(vote_id=vote_id, option=0).pack())
    await alice.click(msg, VoteButton(vote_id=vote_id, option=7).pack())
    await alice.click(msg, VoteButton(vote_id=vote_id + 1, option=0).pack())
    await alice.click(msg, "vt:garbage")
    await pond.h.settle()
    assert await pond.scalar(select(func.count()).select_from(VoteBallot)) == 0
    assert await pond.balance(1) == 0
    answers = pond.session.requests_of(AnswerCallbackQuery)
    assert len(answers) == 5  # every press, malformed ones too; the other pond speaks Chinese
    assert all("not valid" in (a.text or "") or "无效" in (a.text or "") for a in answers)


async def test_hostile_vote_commands_get_short_errors_and_open_nothing(pond: Pond) -> None:
    bad = [
        "/vote 1h Only one | A",
        "/vote 1h Eleven | " + " | ".join(f"o{i}" for i in range(11)),
        "/vote 1h " + "问" * 400 + " | A | B",
        "/vote 1h Q | A | " + "x" * 101,
        "/vote never Q | A | B",
        "/vote",
        "/vote 1h Q | A | a",
    ]
    for text in bad:
        before = len(pond.replies())
        await pond.op.send(text)
        await pond.h.settle()
        assert len(pond.replies()) == before + 1
        assert pond.replies()[-1].startswith("⚠️") and len(pond.replies()[-1]) < 300
    assert await pond.scalar(select(func.count()).select_from(Vote)) == 0
    await pond.member(1, "Alice").send("/vote 1h Q | A | B")
    await pond.h.settle()
    assert pond.replies()[-1].startswith("⛔")


async def test_vote_with_ten_long_options_fits_telegram(pond: Pond) -> None:
    options = " | ".join(f"{i}" + "选" * 99 for i in range(10))
    await pond.op.send("/vote 1h " + "问" * 255 + " | " + options)
    await pond.h.settle()
    msg = await vote_post(pond)
    vote_id = await pond.scalar(select(Vote.id))
    await pond.member(1, "A").click(msg, VoteButton(vote_id=vote_id, option=9).pack())
    await pond.later(3600)
    assert pond.replies()[-1].startswith("📊")


# -- invites -----------------------------------------------------------------------------


async def checkin(p: Pond, user_id: int) -> None:
    """The member's daily check-in in the pond, made now."""
    async with p.db.transaction() as s:
        await repo.upsert_member(s, repo.UserInfo(user_id, "N"))
        now = p.clock()
        await checkin_store.CHECKIN_OP.run(s, [checkin_store.CheckinRequest(
            user_id, GROUP_ID, local_day(now, "Asia/Shanghai"), now)])


async def test_invite_link_made_once_named_and_reused(pond: Pond) -> None:
    alice = pond.member(1, "Alice 🐟 " + "长" * 40)
    await alice.send("/invite")
    await alice.send("/invite")
    await pond.h.settle()
    [create] = pond.session.requests_of(CreateChatInviteLink)
    assert create.chat_id == GROUP_ID
    assert create.name is not None and len(create.name.encode("utf-16-le")) // 2 <= 32
    link = await link_of(pond, 1)
    assert [link in t for t in pond.replies()[-2:]] == [True, True]
    dm = pond.h.member(private_chat(alice.user), alice.user)
    await dm.send("/invite")
    await pond.h.settle()
    assert "/invite" in pond.session.sent_texts(alice.user.id)[-1]  # "in the pond, please"
    pond.session.fail_next(
        "createChatInviteLink",
        error_code=400,
        description="Bad Request: not enough rights to manage chat invite link",
    )
    await pond.member(2, "Bob").send("/invite")
    await pond.h.settle()
    assert "admin right" in pond.replies()[-1]


async def test_referral_credited_once_after_first_checkin(pond: Pond) -> None:
    alice = pond.member(1, "Alice")
    await alice.send("/invite")
    await pond.h.settle()
    link = await link_of(pond, 1)
    newcomer = person(60, "Newbie")
    update = joined_via(pond.chat, newcomer, link)
    await pond.h.feed_event(chat_member=update)
    await pond.h.feed_event(chat_member=update)  # delivered twice
    assert await pond.scalar(select(func.count()).select_from(Referral)) == 1
    # The membership router still recorded the join.
    assert await pond.scalar(select(Member.first_name).where(Member.user_id == 60)) == "Newbie"  # type: ignore[arg-type]

    await pond.later(120)  # the credit sweep runs: no check-in yet, no credit
    assert await pond.balance(1) == 0
    await checkin(pond, 60)
    async with pond.db.transaction() as s:  # the hook the check-in code can call
        move = await invites.credit_referral_after_checkin(s, 60, pond.clock())
        again = await invites.credit_referral_after_checkin(s, 60, pond.clock())
    assert move is not None and move.applied and again is None
    await pond.later(120)
    await alice.send("/invite")
    await pond.h.settle()
    assert await pond.balance(1) == 20
    assert "credited: 1" in pond.replies()[-1]
    assert (
        await pond.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "referral")  # type: ignore[arg-type]
        )
        == 1
    )


async def test_referral_credit_by_the_recurring_task(pond: Pond) -> None:
    alice = pond.member(1, "Alice")
    await alice.send("/invite")
    await pond.h.settle()
    await pond.h.feed_event(
        chat_member=joined_via(pond.chat, person(61, "N"), await link_of(pond, 1))
    )
    await checkin(pond, 61)
    await pond.later(61)
    assert await pond.balance(1) == 20
    await pond.later(61)
    assert await pond.balance(1) == 20


async def test_no_referral_for_rejoin_self_or_bots(pond: Pond) -> None:
    alice = pond.member(1, "Alice")
    await alice.send("/invite")
    await pond.h.settle()
    link = await link_of(pond, 1)
    old_timer = pond.member(70, "Old")
    await old_timer.send("hello")  # was in the pond before
    await old_timer.leave()
    await pond.h.feed_event(chat_member=joined_via(pond.chat, old_timer.user, link))
    await pond.h.feed_event(chat_member=joined_via(pond.chat, alice.user, link))  # self
    robot = User(id=71, is_bot=True, first_name="Spam")
    await pond.h.feed_event(chat_member=joined_via(pond.chat, robot, link))
    await pond.h.feed_event(
        chat_member=joined_via(pond.chat, person(72, "X"), "https://t.me/+other")
    )
    assert await pond.scalar(select(func.count()).select_from(Referral)) == 0
    for uid in (70, 1):
        await checkin(pond, uid)
    await pond.later(120)
    assert await pond.balance(1) == 5  # only her own check-in


async def test_a_batch_of_vote_clicks_from_many_members_is_exact(pond: Pond) -> None:
    await pond.op.send("/vote 1h Q | A | B")
    await pond.h.settle()
    msg = await vote_post(pond)
    vote_id = await pond.scalar(select(Vote.id))
    members = [pond.member(1000 + i, f"M{i}") for i in range(100)]
    for m in members:
        await m.send("hi")  # known members, so every click is a vote transaction of its own
    batch = [
        Update(update_id=pond.h.next_update_id(), callback_query=CallbackQuery(
            id=f"v{i}", from_user=m.user, chat_instance="c", message=msg,
            data=VoteButton(vote_id=vote_id, option=i % 2).pack(),
        ))
        for i, m in enumerate(members)
    ]
    await handle_batch(pond.h.dp, pond.h.bot, batch)  # side by side: one chat, 100 members
    async with pond.db.transaction(readonly=True) as s:
        ballots = await s.scalar(select(func.count()).select_from(VoteBallot))
    assert ballots == 100
    answered = [a.callback_query_id for a in pond.session.requests_of(AnswerCallbackQuery)]
    assert sorted(a for a in answered if a.startswith("v")) == sorted(f"v{i}" for i in range(100))
    assert await pond.invariant_ok()
