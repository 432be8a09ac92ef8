"""The fast lane: storm updates straight to their handler, only where routing agrees."""

from __future__ import annotations

import pytest
from aiogram import Dispatcher, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot.app import build_dispatcher
from handlers import checkin, lottery, shop
from services.checkin_board import CheckinButton
from services.fast_lane import HOT, FastLane, NotDisjoint
from services.lottery_board import LotteryButton
from services.outbox import Outbox
from storage.db import Database
from tests.rig.fake_session import FakeSession, make_bot


async def nothing(event: Message | CallbackQuery) -> None:
    return None


def lane_of(dp: Dispatcher) -> FastLane:
    (lane,) = [m for m in dp.update.middleware if isinstance(m, FastLane)]
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
