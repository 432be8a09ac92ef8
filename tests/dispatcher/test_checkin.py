"""Daily check-in (F3) through the real Dispatcher: streaks, milestones, make-ups,
timezones, boards, feedback budgets and idempotency."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import Chat, Message, User
from sqlalchemy import select

from bot.app import build_dispatcher
from services.checkin_board import CheckinButton
from services.outbox import Outbox
from storage import ledger, repo
from storage.db import Database
from storage.models import Checkin, LedgerEntry, Member
from tests.dispatcher.conftest import FAST, GROUP_ID, OPERATOR_ID, serve_groups
from tests.rig.client import Harness, group_chat, person, private_chat
from tests.rig.fake_session import BOT_ID, FakeSession, admin, make_bot

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


class WallClock:
    """The wall clock handlers read (`dp["clock"]`), moved by the test."""

    def __init__(self, at: dt.datetime) -> None:
        self.now = at

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, at: dt.datetime) -> None:
        self.now = at

    def next_day(self, days: int = 1) -> None:
        self.now += dt.timedelta(days=days)


def at(y: int, m: int, d: int, hh: int = 9, mm: int = 0, ss: int = 0,
       tz: dt.tzinfo = SHANGHAI) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, ss, tzinfo=tz)


def served(h: Harness, chat_id: int) -> None:
    """A global operator administers `chat_id`: the group is one of the shop's ponds."""
    h.session.admins.setdefault(chat_id, []).append(admin(person(OPERATOR_ID, "Op")))


@pytest.fixture
def wall(harness: Harness) -> WallClock:
    clock = WallClock(at(2025, 3, 1))
    harness.dp["clock"] = clock
    harness.dp["boards"].interval = 0.0
    served(harness, GROUP_ID)
    return clock


async def typed(client: Any, text: str, when: dt.datetime, *, update_id: int | None = None
                ) -> Message:
    """`client` sends `text` at `when` (the message's `date`), delivered now."""
    msg = client.message(text).model_copy(update={"date": when})
    if update_id is None:
        await client.h.feed_event(message=msg)
    else:
        await client.resend(msg, update_id)
    return msg


async def settle(h: Harness) -> None:
    for _ in range(3):
        await h.dp["boards"].idle()
        await h.settle()


async def db_of(h: Harness) -> Database:
    return h.db  # type: ignore[attr-defined, no-any-return]


async def member_row(h: Harness, user_id: int) -> Member | None:
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        return await s.get(Member, user_id)


async def entries(h: Harness, user_id: int | None = None) -> list[LedgerEntry]:
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        stmt = select(LedgerEntry).order_by(LedgerEntry.id)  # type: ignore[arg-type]
        if user_id is not None:
            stmt = stmt.where(LedgerEntry.user_id == user_id)  # type: ignore[arg-type]
        return list((await s.execute(stmt)).scalars().all())


async def invariant_ok(h: Harness) -> bool:
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        return (await ledger.check_invariant(s)).ok


def board_message(h: Harness, chat: Chat) -> Message:
    """The last board the bot posted in `chat`, as Telegram would show it."""
    posts = [m for m in h.session.delivered_of(SendMessage)
             if m.chat_id == chat.id and m.reply_markup is not None]
    assert posts, "no board was posted"
    index = h.session.delivered.index(posts[-1])
    sent = [r for r in h.session.delivered[: index + 1]
            if isinstance(r, SendMessage) and r.chat_id == chat.id]
    return Message(
        message_id=len(sent), date=h.now, chat=chat,
        from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"),
        text=posts[-1].text, reply_markup=posts[-1].reply_markup,
    )


def toasts(h: Harness) -> dict[str, str | None]:
    return {a.callback_query_id: a.text for a in h.session.delivered_of(AnswerCallbackQuery)}


def data(chat: Chat) -> str:
    return CheckinButton(chat_id=chat.id).pack()


# -- the rules ---------------------------------------------------------------------------


async def test_first_checkin_pays_base_replies_and_posts_a_board(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    alice = harness.member(group, person(1, "Alice <b>&</b>", "alice"))
    await alice.send("  签到 ")
    await settle(harness)
    replies = harness.replies(GROUP_ID)
    assert "+5" in replies[0] and "Alice &lt;b&gt;&amp;&lt;/b&gt;" in replies[0]
    assert "1" in replies[0]
    board = board_message(harness, group)
    assert "1" in (board.text or "")  # today: 1 checked in
    [entry] = await entries(harness, 1)
    assert (entry.delta, entry.kind, entry.idem_key) == (5, "checkin", "checkin:1:2025-03-01")
    row = await member_row(harness, 1)
    assert row is not None and row.streak == 1 and row.last_checkin_day == dt.date(2025, 3, 1)


async def test_a_member_with_a_blank_name_is_named_by_username(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    blank = harness.member(group, person(1, " ", "blank_one"))
    await blank.send("签到")
    await settle(harness)
    assert "@blank_one" in harness.replies(GROUP_ID)[0]


async def test_streak_grows_caps_and_pays_milestones(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    for _ in range(31):
        await alice.send("/checkin")
        wall.next_day()
    await settle(harness)
    got = await entries(harness, 1)
    daily = [e.delta for e in got if e.kind == "checkin"]
    assert daily == [5, 6, 7, 8, 9, 10] + [10] * 25  # +1 a day, capped at +5
    bonus = [(e.delta, e.idem_key) for e in got if e.kind == "streak_bonus"]
    assert bonus == [
        (20, "checkin-milestone:1:2025-03-07"),
        (100, "checkin-milestone:1:2025-03-30"),
    ]
    row = await member_row(harness, 1)
    assert row is not None and row.streak == 31
    assert row.balance == sum(daily) + 120
    assert await invariant_ok(harness)


async def test_a_missed_day_resets_the_streak(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    await alice.send("签到")
    wall.next_day()
    await alice.send("签到")
    wall.next_day(2)  # a day missed
    await alice.send("/points")
    await alice.send("签到")
    await settle(harness)
    assert [e.delta for e in await entries(harness, 1)] == [5, 6, 5]
    row = await member_row(harness, 1)
    assert row is not None and row.streak == 1
    points_reply = [t for t in harness.replies(GROUP_ID) if "<b>11</b>" in t]
    assert points_reply and "0" in points_reply[0]  # the broken streak shows as 0


async def test_once_a_day_whatever_the_trigger(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    await alice.send("签到")
    await alice.send("/checkin@pondbot_test_bot")
    await alice.send("/checkin@some_other_bot")  # addressed to another bot
    await settle(harness)
    query = await alice.click(board_message(harness, group), data(group))
    await settle(harness)
    assert len(await entries(harness, 1)) == 1
    replies = harness.replies(GROUP_ID)
    assert any("已经签到" in t for t in replies)
    assert "已经签到" in (toasts(harness)[query] or "")


async def test_day_boundaries_in_the_ponds_timezone(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    wall.set(at(2025, 3, 1, 23, 59, 59))
    await alice.send("签到")
    await alice.send("签到")  # same day: nothing
    wall.set(at(2025, 3, 2, 0, 0, 0))
    await alice.send("签到")  # a new day in Shanghai, one second later
    await settle(harness)
    got = await entries(harness, 1)
    assert [e.idem_key for e in got] == ["checkin:1:2025-03-01", "checkin:1:2025-03-02"]
    assert [e.delta for e in got] == [5, 6]


async def test_a_pond_in_another_timezone_and_one_day_shop_wide(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    ny = group_chat(-1009000000001, "New York pond")
    async with harness.db.transaction() as s:  # type: ignore[attr-defined]
        await repo.upsert_pond(s, ny.id, title="NY", chat_type="supergroup",
                               default_timezone="America/New_York")
    bob = harness.member(ny, person(2, "Bob", "bob"))
    utc = dt.UTC
    wall.set(dt.datetime(2025, 3, 2, 4, 59, 59, tzinfo=utc))  # 23:59:59 on Mar 1 in New York
    await bob.send("签到")
    wall.set(dt.datetime(2025, 3, 2, 5, 0, 0, tzinfo=utc))  # 00:00:00 on Mar 2 in New York
    await bob.send("签到")
    await settle(harness)
    assert [e.idem_key for e in await entries(harness, 2)] == [
        "checkin:2:2025-03-01", "checkin:2:2025-03-02"
    ]
    # Carol checks in in Shanghai (already Mar 3 there), then in New York (still Mar 2):
    # one check-in a day, shop-wide, and never backwards.
    carol_sh = harness.member(group, person(3, "Carol", "carol"))
    carol_ny = harness.member(ny, person(3, "Carol", "carol"))
    wall.set(dt.datetime(2025, 3, 3, 1, 0, 0, tzinfo=utc))
    await carol_sh.send("签到")
    await carol_ny.send("签到")
    await settle(harness)
    assert [e.idem_key for e in await entries(harness, 3)] == ["checkin:3:2025-03-03"]


# -- the day of the message --------------------------------------------------------------


async def test_typed_before_midnight_delivered_after_counts_for_its_day(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    wall.set(at(2025, 3, 1, 9))
    await typed(alice, "签到", at(2025, 3, 1, 9))  # Mar 1
    # Mar 2, 23:59:55 in Shanghai: typed while the bot is down; delivered at 00:00:30.
    wall.set(at(2025, 3, 3, 0, 0, 30))
    late_id = harness.next_update_id()
    late = await typed(alice, "签到", at(2025, 3, 2, 23, 59, 55), update_id=late_id)
    await typed(alice, "/checkin", at(2025, 3, 3, 0, 0, 40))  # and again for the new day
    await settle(harness)
    got = await entries(harness, 1)
    assert [(e.idem_key, e.delta) for e in got] == [
        ("checkin:1:2025-03-01", 5), ("checkin:1:2025-03-02", 6), ("checkin:1:2025-03-03", 7),
    ]
    replies = harness.replies(GROUP_ID)
    assert "03-02" in replies[1] and "+6" in replies[1]  # "counted for Mar 2"
    # The same update again, and the same message under a new update id, after midnight:
    # the same day, already paid.
    wall.set(at(2025, 3, 3, 0, 5))
    await alice.resend(late, late_id)
    await alice.resend(late, harness.next_update_id())
    await settle(harness)
    assert len(await entries(harness, 1)) == 3
    row = await member_row(harness, 1)
    assert row is not None and (row.streak, row.last_checkin_day) == (3, dt.date(2025, 3, 3))
    assert row.balance == 18 and await invariant_ok(harness)


async def test_midnight_of_a_pond_in_another_timezone(
    harness: Harness, wall: WallClock
) -> None:
    ny = group_chat(-1009000000002, "New York pond")
    served(harness, ny.id)
    async with harness.db.transaction() as s:  # type: ignore[attr-defined]
        await repo.upsert_pond(s, ny.id, title="NY", chat_type="supergroup",
                               default_timezone="America/New_York")
    bob = harness.member(ny, person(2, "Bob", "bob"))
    utc = dt.UTC
    # 23:59:55 on Mar 1 in New York (04:59:55 UTC), delivered after its midnight.
    wall.set(dt.datetime(2025, 3, 2, 5, 1, tzinfo=utc))
    late_id = harness.next_update_id()
    late = await typed(bob, "签到", dt.datetime(2025, 3, 2, 4, 59, 55, tzinfo=utc),
                       update_id=late_id)
    await typed(bob, "签到", dt.datetime(2025, 3, 2, 5, 0, 30, tzinfo=utc))
    await bob.resend(late, late_id)
    await settle(harness)
    assert [e.idem_key for e in await entries(harness, 2)] == [
        "checkin:2:2025-03-01", "checkin:2:2025-03-02"
    ]
    row = await member_row(harness, 2)
    assert row is not None and row.streak == 2


async def test_message_dates_out_of_reach_are_clamped(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    bob = harness.member(group, person(2, "Bob", "bob"))
    wall.set(at(2025, 3, 10, 12))
    # From the future: counts now. Older than Telegram keeps updates (24 h): counts 24 h
    # ago, however old — so no old date can buy more than yesterday, and only once.
    await typed(alice, "签到", at(2025, 3, 20, 12))
    await typed(bob, "签到", at(2025, 1, 1, 12))
    await typed(bob, "签到", at(2025, 2, 1, 12))
    await typed(bob, "签到", at(2025, 3, 10, 11))
    await settle(harness)
    assert [e.idem_key for e in await entries(harness, 1)] == ["checkin:1:2025-03-10"]
    assert [e.idem_key for e in await entries(harness, 2)] == [
        "checkin:2:2025-03-09", "checkin:2:2025-03-10"
    ]


async def test_a_late_checkin_for_yesterday_arriving_after_todays(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    wall.set(at(2025, 3, 1, 9))
    await typed(alice, "签到", at(2025, 3, 1, 9))  # Mar 1
    wall.set(at(2025, 3, 3, 0, 1))
    # Mar 3's check-in is handled before the one typed on Mar 2 (redelivered late).
    await typed(alice, "签到", at(2025, 3, 3, 0, 0, 10))
    await typed(alice, "签到", at(2025, 3, 2, 23, 59, 50))
    # A check-in made after Mar 3's for an earlier day is no late one: nothing.
    await typed(alice, "签到", at(2025, 3, 3, 0, 0, 50))
    await settle(harness)
    got = await entries(harness, 1)
    assert [(e.idem_key, e.delta) for e in got] == [
        ("checkin:1:2025-03-01", 5), ("checkin:1:2025-03-03", 5), ("checkin:1:2025-03-02", 6),
    ]
    row = await member_row(harness, 1)  # Mar 1, 2, 3: the streak runs through all three
    assert row is not None and (row.streak, row.last_checkin_day) == (3, dt.date(2025, 3, 3))
    wall.set(at(2025, 3, 4, 9))
    await typed(alice, "签到", at(2025, 3, 4, 9))
    await settle(harness)
    assert (await entries(harness, 1))[-1].delta == 5 + 3
    assert await invariant_ok(harness)


# -- make-up -----------------------------------------------------------------------------


async def test_makeup_rules(harness: Harness, group: Chat, wall: WallClock) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    op = harness.member(group, person(OPERATOR_ID, "Op"))

    async def say(text: str, who: Any = alice) -> str:
        before = len(harness.replies(GROUP_ID))
        await who.send(text)
        await settle(harness)
        return "\n".join(harness.replies(GROUP_ID)[before:])

    assert "没有可以补签" in await say("/makeup")  # no history at all
    await say("签到")  # Mar 1
    wall.next_day()
    await say("签到")  # Mar 2
    wall.next_day(2)
    await say("签到")  # Mar 4 (Mar 3 missed): streak 1, balance 16
    assert "20" in await say("/makeup")  # not enough points: 16 < 20
    assert [e.delta for e in await entries(harness, 1)] == [5, 6, 5]
    await say("/give @alice 50", op)
    text = await say("/makeup")
    assert "03-03" in text and "3" in text
    row = await member_row(harness, 1)
    assert row is not None and row.streak == 4 and row.balance == 66 - 20
    assert (await entries(harness, 1))[-1].idem_key == "makeup:1:2025-03-03"
    wall.next_day()
    await say("签到")  # Mar 5: the mended streak goes on
    assert (await entries(harness, 1))[-1].delta == 5 + 4
    wall.next_day(2)  # Mar 7 (Mar 6 missed)
    assert "7" in await say("/makeup")  # once per 7 days
    wall.next_day(4)  # Mar 11: Mar 10 … Mar 6 missed; the most recent one is Mar 10
    paid = await entries(harness, 1)
    text = await say("/makeup")  # it would stand alone: refused, and free
    assert "03-10" in text and "1" in text and "不收" in text
    assert await entries(harness, 1) == paid
    row = await member_row(harness, 1)
    assert row is not None and row.streak == 5 and row.last_checkin_day == dt.date(2025, 3, 5)
    await say("签到")  # Mar 11: a new streak
    row = await member_row(harness, 1)
    assert row is not None and row.streak == 1
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        made_up = (await s.execute(select(Checkin.day).where(
            Checkin.makeup.is_(True)).order_by(Checkin.day))).scalars().all()  # type: ignore[attr-defined]
    assert made_up == [dt.date(2025, 3, 3)]
    assert await invariant_ok(harness)


async def test_makeup_only_when_it_lengthens_the_streak(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    op = harness.member(group, person(OPERATOR_ID, "Op"))

    async def say(text: str) -> str:
        before = len(harness.replies(GROUP_ID))
        await alice.send(text)
        await settle(harness)
        return "\n".join(harness.replies(GROUP_ID)[before:])

    await say("签到")  # Mar 1
    await op.send("/give @alice 100")
    wall.next_day()
    await say("签到")  # Mar 2: streak 2
    wall.next_day(3)  # Mar 5: Mar 3 and Mar 4 missed
    before = (await member_row(harness, 1))
    assert before is not None and before.balance == 111
    text = await say("/makeup")  # filling Mar 4 alone would leave a streak of 1
    assert "03-04" in text and "不收" in text
    after = await member_row(harness, 1)
    assert after is not None and (after.balance, after.streak) == (111, 2)
    assert [e.kind for e in await entries(harness, 1)] == ["checkin", "admin_adjust", "checkin"]
    await say("签到")  # Mar 5: streak 1
    wall.next_day(2)  # Mar 7: Mar 6 missed, right after Mar 5
    text = await say("/makeup")
    assert "03-06" in text
    row = await member_row(harness, 1)
    assert row is not None and (row.balance, row.streak) == (111 + 5 - 20, 2)
    assert (await entries(harness, 1))[-1].idem_key == "makeup:1:2025-03-06"
    assert await invariant_ok(harness)


# -- boards, buttons and budgets ---------------------------------------------------------


async def test_board_button_toasts_and_double_click(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    op = harness.member(group, person(OPERATOR_ID, "Op"))
    bob = harness.member(group, person(2, "Bob", "bob"))
    await bob.send("/board")  # members may not
    await op.send("/board")
    await settle(harness)
    assert "⛔" in harness.replies(GROUP_ID)[0]
    board = board_message(harness, group)
    first = await bob.click(board, data(group))
    second = await bob.click(board, data(group))
    await settle(harness)
    answers = toasts(harness)
    assert "+5" in (answers[first] or "") and "1" in (answers[first] or "")
    assert "已经签到" in (answers[second] or "")
    assert len(await entries(harness, 2)) == 1
    edits = harness.session.delivered_of(EditMessageText)
    assert edits and "Bob" in edits[-1].text and "1" in edits[-1].text
    # Every callback answered exactly once; no chat message for a button press.
    assert len(harness.session.requests_of(AnswerCallbackQuery)) == 2
    assert len(harness.replies(GROUP_ID)) == 2  # the refusal and the board


async def test_button_from_another_chat_is_refused(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    bob = harness.member(group, person(2, "Bob", "bob"))
    op = harness.member(group, person(OPERATOR_ID, "Op"))
    await op.send("/board")
    await settle(harness)
    query = await bob.click(board_message(harness, group), CheckinButton(chat_id=-100555).pack())
    await settle(harness)
    assert "不属于" in (toasts(harness)[query] or "")
    assert await entries(harness, 2) == []


async def test_busy_pond_gets_the_board_not_one_reply_each(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    people = [harness.member(group, person(100 + i, f"M{i}")) for i in range(8)]
    for p in people:
        await p.send("签到")
        await settle(harness)
    replies = [t for t in harness.replies(GROUP_ID) if "+5" in t]
    assert len(replies) == 2  # then the pond is busy (2 replies + the board)
    edits = harness.session.delivered_of(EditMessageText)
    assert "8" in edits[-1].text and "M7" in edits[-1].text
    assert len(await entries(harness)) == 8


@pytest.mark.parametrize(("quiet_below", "replied"), [(20, 8), (0, 0)])
async def test_the_quiet_threshold_is_the_ponds_setting(
    harness: Harness, group: Chat, wall: WallClock, bot_db: Database,
    quiet_below: int, replied: int,
) -> None:
    async with bot_db.transaction() as s:
        await repo.upsert_pond(s, GROUP_ID, title="Pond", chat_type="supergroup")
        await repo.change_pond_settings(s, GROUP_ID, checkin_quiet_below=quiet_below)
    people = [harness.member(group, person(100 + i, f"M{i}")) for i in range(8)]
    for p in people:
        await p.send("签到")
        await settle(harness)
    replies = [t for t in harness.replies(GROUP_ID) if "+5" in t]
    assert len(replies) == replied  # the default (3) answers two: see the busy-pond test
    assert len(await entries(harness)) == 8


async def test_private_checkin_points_to_the_group(harness: Harness, wall: WallClock) -> None:
    user = person(5, "Bob", "bob")
    await harness.member(private_chat(user), user).send("签到")
    await settle(harness)
    assert "群" in harness.replies(user.id)[0]
    assert await entries(harness) == []


async def test_top_streak(harness: Harness, group: Chat, wall: WallClock) -> None:
    alice = harness.member(group, person(1, "Alice <i>", "alice"))
    bob = harness.member(group, person(2, "Bob", "bob"))
    carol = harness.member(group, person(3, "Carol", "carol"))
    await harness.member(group, person(4, "Dan")).send("/top streak")
    for day in range(3):
        await alice.send("签到")
        if day:
            await bob.send("签到")
        if day == 0:
            await carol.send("签到")  # then her streak breaks
        wall.next_day()
    await alice.send("/top streak")
    await alice.send("/top")
    await settle(harness)
    texts = harness.replies(GROUP_ID)
    assert "还没有" in texts[0]
    streak_board = next(t for t in texts if "连签排行榜" in t)
    assert streak_board.index("Alice &lt;i&gt;") < streak_board.index("Bob")
    assert "Carol" not in streak_board
    assert "3" in streak_board and "2" in streak_board


# -- idempotency under races -------------------------------------------------------------


@pytest.fixture
async def any_harness(db: Database) -> AsyncIterator[Harness]:
    """The production dispatcher over SQLite and PostgreSQL (the `db` fixture)."""
    session = FakeSession()
    serve_groups(session)  # the test group is a pond of the shop
    bot = make_bot(session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))
    outbox = Outbox(bot, limits=FAST)
    dp = build_dispatcher(db=db, outbox=outbox, operator_ids=frozenset({OPERATOR_ID}))
    dp["boards"].interval = 0.0
    await outbox.start()
    h = Harness(dp, bot, session, outbox)
    h.db = db  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        await dp["boards"].aclose()
        await outbox.stop()
        await bot.session.close()
    session.assert_no_violations()


async def test_twenty_concurrent_checkins_of_one_member_pay_once(any_harness: Harness) -> None:
    h = any_harness
    group = group_chat(GROUP_ID, "Pond")
    op = h.member(group, person(OPERATOR_ID, "Op"))
    await op.send("/board")
    await settle(h)
    board = board_message(h, group)
    alice = h.member(group, person(1, "Alice", "alice"))
    msg = alice.message("签到")
    tries: list[Any] = []
    for i in range(20):
        kind = i % 4
        if kind == 0:
            tries.append(alice.click(board, data(group)))
        elif kind == 1:
            tries.append(alice.send("签到"))
        elif kind == 2:
            tries.append(alice.send("/checkin"))
        else:  # the same message delivered again under a new update id
            tries.append(alice.resend(msg, h.next_update_id()))
    await asyncio.gather(*tries)
    await settle(h)
    got = await entries(h, 1)
    assert [(e.delta, e.kind) for e in got] == [(5, "checkin")]
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        rows = (await s.execute(select(Checkin))).scalars().all()
        assert (await ledger.check_invariant(s)).ok
    assert len(rows) == 1
    said = toasts(h)
    assert len(said) == 5 and sum("+5" in (t or "") for t in said.values()) <= 1
