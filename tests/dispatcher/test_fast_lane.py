"""The fast lane: storm updates straight to their handler, only where routing agrees."""

from __future__ import annotations

from typing import Any

import pytest
from aiogram import Dispatcher, Router
from aiogram.filters import Command
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, Chat, Message, User

from bot.app import build_dispatcher
from handlers import checkin, lottery, shop
from services.checkin_board import CheckinButton
from services.fast_lane import HOT, FastLane, NotDisjoint
from services.i18n import make_i18n, speaking
from services.lottery_board import LotteryButton
from services.operators import AdminsUnavailable
from services.outbox import Outbox
from services.texts import weather as weather_texts
from storage import repo
from storage.db import Database
from tests.dispatcher.conftest import GROUP_ID, OPERATOR_ID
from tests.dispatcher.test_checkin import (
    WallClock,
    at,
    board_message,
    data,
    entries,
    member_row,
    served,
    toasts,
)
from tests.dispatcher.test_checkin import settle as checkin_settle
from tests.rig.client import Harness, person
from tests.rig.fake_session import BOT_ID, FakeSession, make_bot


async def nothing(event: Message | CallbackQuery) -> None:
    return None


def lane_of(dp: Dispatcher) -> FastLane:
    (lane,) = [m for m in dp.update.outer_middleware if isinstance(m, FastLane)]
    return lane


async def test_the_storm_paths_are_on_the_fast_lane(bot_db: Database) -> None:
    dp = build_dispatcher(db=bot_db, outbox=Outbox(make_bot(FakeSession())))
    lane = lane_of(dp)
    assert set(lane.commands) == {"redeem"}
    assert set(lane.presses) == {"ci", "rp", "lot"}
    assert lane.commands["redeem"].handler.callback is shop.redeem
    assert lane.presses["lot"].handler.callback is lottery.draw_button
    assert lane.presses["ci"].handler.callback is checkin.checkin_button


def test_a_handler_in_front_that_could_take_the_update_refuses_the_lane() -> None:
    """A catch-all message handler tried before /redeem's: routing would give it the
    update, so the lane may not — the dispatcher does not start."""
    greedy = Router(name="greedy")
    greedy.message.register(nothing)
    hot = Router(name="hot")
    hot.message.register(nothing, Command("redeem"), flags={HOT: True})
    dp = Dispatcher()
    dp.include_routers(greedy, hot)
    with pytest.raises(NotDisjoint):
        FastLane(dp)


def test_handlers_in_front_for_other_commands_and_buttons_keep_the_lane() -> None:
    first = Router(name="first")
    first.message.register(nothing, Command("checkin"))
    first.message.register(nothing, checkin.IsCheckinText())
    first.callback_query.register(nothing, CheckinButton.filter())
    hot = Router(name="hot")
    hot.message.register(nothing, Command("redeem"), flags={HOT: True})
    hot.callback_query.register(nothing, LotteryButton.filter(), flags={HOT: True})
    dp = Dispatcher()
    dp.include_routers(first, hot)
    lane = FastLane(dp)
    assert set(lane.commands) == {"redeem"} and set(lane.presses) == {"lot"}


# -- the hot presses' one step ------------------------------------------------------------


@pytest.fixture
def wall(harness: Harness) -> WallClock:
    clock = WallClock(at(2025, 3, 1))
    harness.dp["clock"] = clock
    harness.dp["boards"].interval = 0.0
    served(harness, GROUP_ID)
    return clock


def step_of(dp: Dispatcher, key: str) -> str:
    chain = lane_of(dp).presses[key].chain
    return getattr(chain, "__qualname__", "")


async def english_pond(h: Harness) -> None:
    async with h.db.transaction() as s:  # type: ignore[attr-defined]
        await repo.upsert_pond(
            s, GROUP_ID, title="Pond", chat_type="supergroup", default_language="en"
        )


async def test_a_hot_press_takes_one_step_and_is_answered_as_routing_would(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    """The check-in press: its middlewares and filter fused into one step, which speaks
    the pond's language, records the presser, pays once and sends a malformed press to
    the shortcuts' quiet toast."""
    await english_pond(harness)
    op = harness.member(group, person(OPERATOR_ID, "Op"))
    bob = harness.member(group, person(2, "Bob", "bob"))
    await op.send("/board")
    await checkin_settle(harness)
    board = board_message(harness, group)
    first = await bob.click(board, data(group))
    second = await bob.click(board, data(group))
    forged = await bob.click(board, "ci:not-a-chat")
    await checkin_settle(harness)
    assert step_of(harness.dp, "ci").startswith("_fused")
    answers = toasts(harness)
    assert "+5" in (answers[first] or "")
    assert "already" in (answers[second] or "").lower()
    assert "not valid" in (answers[forged] or "")
    assert len(await entries(harness, 2)) == 1
    stored = await member_row(harness, 2)
    assert stored is not None and stored.username == "bob"
    assert len(harness.session.requests_of(AnswerCallbackQuery)) == 3


async def test_a_press_in_a_pond_not_known_yet_takes_the_composed_chain(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    """The first update of a group is where the pond is recorded and judged: that press
    goes through the middlewares one by one, the next one through the fused step."""
    bob = harness.member(group, person(2, "Bob", "bob"))
    board = Message(message_id=1, date=harness.now, chat=group,
                    from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"), text="board")
    first = await bob.click(board, data(group))
    carol = harness.member(group, person(3, "Carol"))
    second = await carol.click(board, data(group))
    await checkin_settle(harness)
    answers = toasts(harness)
    assert "+5" in (answers[first] or "") and "+5" in (answers[second] or "")
    assert len(await entries(harness, 2)) == 1 and len(await entries(harness, 3)) == 1


async def test_telegram_not_answering_in_a_hot_handler_is_told_like_anywhere(
    harness: Harness, group: Chat, wall: WallClock
) -> None:
    """`AdminsUnavailable` out of a hot handler reaches the "try again later" answer
    inside the fused step too, in the pond's language."""
    await english_pond(harness)
    op = harness.member(group, person(OPERATOR_ID, "Op"))
    await op.send("/board")
    await checkin_settle(harness)
    route = lane_of(harness.dp).presses["ci"]

    async def unavailable(query: CallbackQuery, **_: Any) -> None:
        raise AdminsUnavailable(GROUP_ID)

    route.handler.callback = unavailable
    bob = harness.member(group, person(2, "Bob", "bob"))
    query = await bob.click(board_message(harness, group), data(group))
    await checkin_settle(harness)
    assert step_of(harness.dp, "ci").startswith("_fused")
    with speaking(make_i18n(), "en"):
        expected = weather_texts.telegram_not_answering()
    assert toasts(harness)[query] == expected
