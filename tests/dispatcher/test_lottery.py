"""The lottery (F8) through the real Dispatcher: the prize table, the 🎰 board and its
toasts, `/draw`, free draws per local day, refusals, replays, concurrency and an item
prize's code reaching only the winner's DM."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiogram.methods import EditMessageText, SendMessage
from aiogram.types import CallbackQuery, Chat, Message, Update
from sqlalchemy import func, select
from sqlmodel import col

from games.shop import ItemArgs
from services.i18n import make_i18n, speaking
from services.lottery_board import LotteryButton
from services.texts import lottery as texts
from storage import ledger, repo, shop
from storage.lottery import DrawRefused
from storage.models import Draw, LedgerEntry, LedgerKind, Member, Prize, Redemption
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, OPERATOR_ID
from tests.dispatcher.test_checkin import WallClock, at, board_message, served, toasts
from tests.rig.client import GroupClient, Harness, person, private_chat


@pytest.fixture
def wall(harness: Harness) -> WallClock:
    clock = WallClock(at(2025, 3, 1))
    harness.dp["clock"] = clock
    harness.dp["lottery_board"].interval = 0.0
    harness.dp["lottery_rng"] = random.Random(7)
    served(harness, GROUP_ID)
    return clock


async def settle(h: Harness) -> None:
    for _ in range(3):
        await h.dp["lottery_board"].idle()
        await h.settle()


async def scalar(h: Harness, stmt: Any) -> Any:
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        return await s.scalar(stmt)


async def draws(h: Harness) -> int:
    return int(await scalar(h, select(func.count()).select_from(Draw)))


async def balance(h: Harness, user_id: int) -> int:
    return int(await scalar(h, select(col(Member.balance)).where(col(Member.user_id) == user_id)))


def op(h: Harness, group: Chat) -> GroupClient:
    return h.member(group, person(OPERATOR_ID, "Op"))


async def open_board(h: Harness, group: Chat, *prizes: str) -> Message:
    """The operator adds `prizes` and posts the board; the board as members see it."""
    operator = op(h, group)
    for p in prizes:
        await operator.send(f"/prize add {p}")
    await operator.send("/lottery")
    await settle(h)
    return board_message(h, group)


def press_data(group: Chat) -> str:
    return LotteryButton(chat_id=group.id).pack()


async def give(h: Harness, user_id: int, points: int) -> None:
    async with h.db.transaction() as s:  # type: ignore[attr-defined]
        await ledger.award(s, user_id=user_id, amount=points,
                           kind=LedgerKind.admin_adjust, key=f"seed:{user_id}")


# -- the prize table ------------------------------------------------------------------------


async def test_prize_table_for_operators_only_with_odds(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    member = harness.member(group, person(1, "Alice"))
    await member.send("/draw")
    await settle(harness)
    with speaking(make_i18n("zh"), "zh"):
        closed = texts.refused(DrawRefused("closed"))
    assert harness.replies(GROUP_ID)[-1] == f"Alice: {closed}"
    operator = op(harness, group)
    await operator.send("/prize add 3 - points=5 Five")
    await operator.send("/prize add 1 2 none Thanks")
    await member.send("/prize add 1 - none Mine")  # a member: refused
    for bad in ("/prize add", "/prize add x - none X", "/prize add 1 - gold X",
                "/prize add 1 0 none X", "/prize off abc", "/prize fly"):
        await operator.send(bad)
    await operator.send("/prize list")
    await settle(harness)
    replies = harness.replies(GROUP_ID)
    assert "/prize add" in replies[-2]  # the usage line
    listing = replies[-1]
    assert "75.0%" in listing and "25.0%" in listing
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        names = sorted((await s.execute(select(Prize.name))).scalars().all())  # type: ignore[call-overload]
    assert names == ["Five", "Thanks"]  # bad arguments and members changed nothing
    await operator.send("/prize off 2")
    await operator.send("/prize list")
    await settle(harness)
    assert "100.0%" in harness.replies(GROUP_ID)[-1]
    # The table is shop-wide: a pond's own admin sees it but cannot change it (a prize
    # of many points would mint them past the daily give cap).
    pond_admin = harness.member(group, person(ADMIN_ID, "Admin", "shop_admin"))
    for attempt in ("/prize add 100 - points=100000 Jackpot", "/prize off 1"):
        await pond_admin.send(attempt)
        await settle(harness)
        assert "OPERATOR_IDS" in harness.replies(GROUP_ID)[-1], attempt
    await pond_admin.send("/prize list")
    await settle(harness)
    assert "100.0%" in harness.replies(GROUP_ID)[-1]
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        active = (await s.execute(select(Prize.name).where(Prize.active))).scalars().all()  # type: ignore[call-overload, arg-type]
    assert list(active) == ["Five"]


# -- the board ---------------------------------------------------------------------------


async def test_a_press_is_a_toast_and_the_board_is_edited_in_place(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    board = await open_board(harness, group, "1 - points=5 Five")
    assert board.reply_markup is not None
    alice = harness.member(group, person(1, "Alice"))
    qid = await alice.click(board, press_data(group))
    await settle(harness)
    assert "+5" in (toasts(harness)[qid] or "")
    edits = [e for e in harness.session.delivered_of(EditMessageText) if e.chat_id == GROUP_ID]
    assert edits and edits[-1].message_id == board.message_id
    assert "Alice" in str(edits[-1].text) and "Five" in str(edits[-1].text)
    assert await balance(harness, 1) == 5 and await draws(harness) == 1
    group_posts = [m for m in harness.session.delivered_of(SendMessage) if m.chat_id == GROUP_ID]
    assert len(group_posts) == 2  # the operator's reply and the board: no reply per draw


async def test_200_concurrent_presses_never_win_more_than_the_stock(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    board = await open_board(harness, group, "1000 2 points=100 Star", "1 - none Thanks")
    clients = [harness.member(group, person(100 + i, f"M{i}")) for i in range(200)]
    ids = await asyncio.gather(*(c.click(board, press_data(group)) for c in clients))
    await settle(harness)
    answered = toasts(harness)
    assert all(q in answered for q in ids)  # every press got its toast
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        star = (await s.execute(select(Prize).where(Prize.name == "Star"))).scalar_one()  # type: ignore[arg-type]
        winners = (await s.execute(
            select(col(Draw.user_id)).where(col(Draw.prize_id) == star.id))).scalars().all()
        assert (await ledger.check_invariant(s)).ok
    assert len(winners) == 2 and (star.stock, star.won) == (0, 2)
    assert await draws(harness) == 200
    assert sum("+100" in (answered[q] or "") for q in ids) == 2
    edits = [e for e in harness.session.delivered_of(EditMessageText) if e.chat_id == GROUP_ID]
    assert edits and "200" in str(edits[-1].text)  # the board caught up: 200 draws today


async def test_no_points_no_paid_draw_and_free_draws_reset_on_the_local_day(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    board = await open_board(harness, group, "1 - none Thanks")
    alice = harness.member(group, person(1, "Alice"))
    presses = harness.dp["lottery_board"].presses
    presses.clock = FrozenMonotonic(0.0)
    wall.set(at(2025, 3, 1, 23, 58))  # 15:58 UTC
    free = await alice.click(board, press_data(group))
    wall.set(at(2025, 3, 1, 23, 59, 30))
    presses.clock = FrozenMonotonic(100.0)  # past the double-press window
    refused = await alice.click(board, press_data(group))
    await settle(harness)
    answered = toasts(harness)
    assert "Thanks" in (answered[free] or "")
    assert "10" in (answered[refused] or "")  # a draw costs 10, you have 0
    assert await draws(harness) == 1 and await balance(harness, 1) == 0
    entries = await scalar(harness, select(func.count()).select_from(LedgerEntry))
    assert entries == 0  # nothing recorded for the refused draw
    wall.set(at(2025, 3, 2, 0, 1))  # 16:01 UTC: the same UTC day, a new Shanghai day
    presses.clock = FrozenMonotonic(200.0)
    again = await alice.click(board, press_data(group))
    await settle(harness)
    assert "Thanks" in (toasts(harness)[again] or "") and await draws(harness) == 2


class FrozenMonotonic:
    def __init__(self, at: float) -> None:
        self.at = at

    def monotonic(self) -> float:
        return self.at

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_a_replayed_press_a_double_press_and_a_replayed_draw_draw_once(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    board = await open_board(harness, group, "1 - points=5 Five")
    user = person(1, "Alice")
    alice = harness.member(group, user)
    await harness.member(private_chat(user), user).send("/start")  # answers by DM
    await give(harness, 1, 100)
    query = CallbackQuery(id="q-replayed", from_user=user, chat_instance="x", message=board,
                          data=press_data(group))
    update = Update(update_id=harness.next_update_id(), callback_query=query)
    await harness.feed(update)
    await harness.feed(update)  # Telegram delivers it again
    await alice.click(board, press_data(group))  # a double press: the same draw
    assert await draws(harness) == 1
    msg = alice.message("/draw")
    await harness.feed_event(message=msg)
    await alice.resend(msg, harness.next_update_id())
    await settle(harness)
    assert await draws(harness) == 2
    assert await balance(harness, 1) == 100 + 5 - 10 + 5  # one free, one paid draw
    answers = [t for t in harness.replies(user.id) if "Five" in t]
    assert len(answers) == 1  # the replayed /draw is not answered again


async def quiet_below(h: Harness, n: int) -> None:
    async with h.db.transaction() as s:  # type: ignore[attr-defined]
        await repo.change_pond_settings(s, GROUP_ID, lottery_quiet_below=n)


async def test_draw_answers_by_dm_when_linked_in_the_group_only_while_quiet(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    await open_board(harness, group, "1 - none Thanks")
    await quiet_below(harness, 10)  # a few messages a minute count as quiet
    bob_user = person(2, "Bob")
    bob = harness.member(group, bob_user)
    await harness.member(private_chat(bob_user), bob_user).send("/start")
    await bob.send("/draw")
    carol = harness.member(group, person(3, "Carol"))
    await carol.send("/draw")  # not linked, the pond quiet: in the group
    await settle(harness)
    assert any("Thanks" in t for t in harness.replies(bob_user.id))
    in_group = [t for t in harness.replies(GROUP_ID) if t.startswith(("Carol:", "Bob:"))]
    assert len(in_group) == 1 and in_group[0].startswith("Carol:") and "Thanks" in in_group[0]
    await quiet_below(harness, 0)  # never quiet
    dave = harness.member(group, person(4, "Dave"))
    before = len(harness.replies(GROUP_ID))
    await dave.send("/draw")
    await settle(harness)
    assert len(harness.replies(GROUP_ID)) == before and await draws(harness) == 3


async def test_an_item_prize_sends_its_code_only_to_the_winners_dm(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    async with harness.db.transaction() as s:  # type: ignore[attr-defined]
        item, _ = await shop.add_item(s, ItemArgs(price=50, stock=3, name="满100减10"),
                                      source_key="item-1", created_by=OPERATOR_ID,
                                      now=wall())
    item_id = item.id
    board = await open_board(harness, group, f"1 1 item={item_id} Coupon")
    winner_user = person(5, "Eve")
    await harness.member(private_chat(winner_user), winner_user).send("/start")
    eve = harness.member(group, winner_user)
    qid = await eve.click(board, press_data(group))
    await settle(harness)
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        red = (await s.execute(select(Redemption))).scalar_one()
        drawn = (await s.execute(select(Draw))).scalar_one()
    assert red.via_draw and red.user_id == 5 and red.code
    assert drawn.redemption_id == red.id and red.status == "delivered"
    code = red.code
    holders = {m.chat_id for m in harness.session.delivered_of(SendMessage) if code in m.text}
    assert holders == {5}  # only the winner's DM
    assert code not in (toasts(harness)[qid] or "")
    edits = harness.session.delivered_of(EditMessageText)
    assert all(code not in str(e.text) for e in edits)
    # The prize is gone: the next member draws nothing, never a prize out of stock.
    frank = harness.member(group, person(6, "Frank"))
    later = await frank.click(board, press_data(group))
    await settle(harness)
    assert "Coupon" not in (toasts(harness)[later] or "")


async def test_a_winner_without_a_private_chat_gets_the_code_after_start(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    async with harness.db.transaction() as s:  # type: ignore[attr-defined]
        item, _ = await shop.add_item(s, ItemArgs(price=50, stock=3, name="满200减20"),
                                      source_key="item-2", created_by=OPERATOR_ID,
                                      now=wall())
    board = await open_board(harness, group, f"1 1 item={item.id} Coupon")
    grace_user = person(7, "Grace")
    grace = harness.member(group, grace_user)
    qid = await grace.click(board, press_data(group))
    await settle(harness)
    assert "/start" in (toasts(harness)[qid] or "")
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        red = (await s.execute(select(Redemption))).scalar_one()
    assert red.status == "undelivered" and red.code
    assert not [m for m in harness.session.delivered_of(SendMessage) if red.code in m.text]
    await harness.member(private_chat(grace_user), grace_user).send("/start")
    await settle(harness)
    holders = {m.chat_id for m in harness.session.delivered_of(SendMessage) if red.code in m.text}
    assert holders == {7}


async def test_draw_in_the_private_chat_is_answered_there(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    await open_board(harness, group, "1 - points=2 Two")
    user = person(8, "Heidi")
    dm = harness.member(private_chat(user), user)
    await dm.send("/start")
    await dm.send("/draw")
    await dm.send("/draw")  # the free one is used; no points for a paid one
    await settle(harness)
    answers = harness.replies(user.id)[-2:]
    assert "+2" in answers[0] and "10" in answers[1]
    assert await draws(harness) == 1 and await balance(harness, 8) == 2


async def test_a_deleted_board_is_not_edited_again_until_a_new_one_is_posted(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    board = await open_board(harness, group, "1 - none Thanks")
    harness.session.fail_next(EditMessageText, error_code=400,
                              description="Bad Request: message to edit not found")
    presses = harness.dp["lottery_board"].presses
    for i in range(5):  # presses from clients still showing the deleted board
        presses.clock = FrozenMonotonic(10.0 * i)
        qid = await harness.member(group, person(20 + i, f"P{i}")).click(
            board, press_data(group))
        await settle(harness)
        assert "Thanks" in (toasts(harness)[qid] or "")  # the draw itself is answered
    assert len(harness.session.requests_of(EditMessageText)) == 1  # tried once, then left
    await op(harness, group).send("/lottery")
    await settle(harness)
    fresh = board_message(harness, group)
    assert fresh.message_id != board.message_id
    await harness.member(group, person(30, "Q")).click(fresh, press_data(group))
    await settle(harness)
    edits = harness.session.delivered_of(EditMessageText)
    assert edits and edits[-1].message_id == fresh.message_id
    assert "<b>6</b>" in str(edits[-1].text)  # six draws today
