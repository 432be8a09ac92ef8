"""/points and /top: balances are shop-wide, ranks and the leaderboard in a pond are
among that pond's members (in a DM: shop-wide)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from games.checkin import DEFAULT_TIMEZONE, local_day
from games.settings import PondSettings
from games.tiers import parse_tiers, tier_for
from services import texts
from services.messaging import reply
from services.middlewares import PondInfo
from services.outbox import Outbox
from services.texts import orders as order_texts
from storage import checkin, orders, repo
from storage.db import Database
from storage.models import utcnow

TOP_SIZE = 10


def setup() -> Router:
    router = Router(name="points")
    router.message.register(points, Command("points"))
    router.message.register(top, Command("top"))
    return router


async def points(
    message: Message,
    db: Database,
    outbox: Outbox,
    person: repo.UserInfo | None,
    pond: PondInfo | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    if person is None:
        reply(outbox, message, texts.cannot_target_bot())
        return
    today = local_day(clock(), pond.timezone if pond else DEFAULT_TIMEZONE)
    async with db.transaction(readonly=True) as session:
        member = await repo.get_member(session, person.id)
        rank = await repo.rank_of(session, person.id,
                                  chat_id=pond.chat_id if pond is not None else None)
        if member is not None:  # a streak with a missed day shows as 0
            member = replace(member, streak=await checkin.streak_of(session, person.id, today))
        spent = await orders.spent_of(session, person.id)
        # The tier from lifetime spend under this pond's tiers (in a DM: the defaults).
        settings = (
            await repo.pond_settings(session, pond.chat_id) if pond is not None
            else PondSettings()
        )
    if member is None:
        reply(outbox, message, texts.no_points_yet(person.display_name))
    else:
        tier = order_texts.tier_label(tier_for(spent, parse_tiers(settings.tiers)))
        reply(outbox, message, texts.points(member, rank, order_texts.points_tier(tier, spent)))


async def top(message: Message, db: Database, outbox: Outbox, pond: PondInfo | None = None
              ) -> None:
    if pond is None and message.chat.type != "private":
        return  # a group that is no pond shows nobody's points
    async with db.transaction(readonly=True) as session:
        members = await repo.top_members(
            session, TOP_SIZE, chat_id=pond.chat_id if pond is not None else None
        )
    reply(outbox, message, texts.top(members))
