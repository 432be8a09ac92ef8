"""Campaigns and the planner (F11): /campaign and /plan (operators).

`/campaign` lists, creates, moves and deletes a pond's sale campaigns (in a private
chat, a global operator's shop-wide ones) and shows their timelines. `/plan <sales>
<per_buyer>` answers how many buyers that takes and how many people to invite, and
stores the plan as the target `/review` compares a campaign with (storage/plans.py): in
a pond for that pond, in a global operator's private chat for the whole shop. The
command message keys the stored row, so a redelivered /plan stores nothing again (it
is answered again: the answer only restates the command); bad arguments get the usage
and store nothing.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from games import promo as rules
from games.campaign import parse_name, parse_phase
from games.parsing import ParseError, fold
from handlers.promo import GROUPS, where_of
from scheduler.core import Scheduler, next_cron_time
from services import promo as service
from services.filters import IsOperator
from services.messaging import actor_of, refuse_non_operator, reply
from services.middlewares import PondInfo, TrackingMiddleware
from services.outbox import Outbox
from services.texts import promo as t
from storage import plans, repo
from storage.db import Database


def setup() -> Router:
    router = Router(name="campaign")
    router.message.register(campaign, Command("campaign"), IsOperator())
    router.message.register(plan_, Command("plan"), IsOperator())
    router.message.register(refuse_non_operator, Command("campaign", "plan"))
    return router


# -- /campaign ----------------------------------------------------------------------------


async def campaign(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    tracking: TrackingMiddleware,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
) -> None:
    where = where_of(message, pond, tracking)
    if where is None:
        return
    now = scheduler.clock()
    parts = fold(command.args or "").split()
    only: str | None = None
    try:
        if parts:
            only = name = parse_name(parts[0])
            rest = [p.lower() for p in parts[1:]]
            if len(rest) == 1 and rest[0] in ("delete", "删除"):
                text: str | None = await service.delete_campaign(db, where, name)
            elif len(rest) == 1:
                by = person.id if person else None
                await service.save_campaign(db, where, name, rest[0], by, now)
                text = None
            elif len(rest) == 3 and rest[0] in ("phase", "阶段"):
                text = await service.edit_phase(db, where, name, parse_phase(rest[1]), rest[2], now)
            else:
                raise ParseError("usage")
        else:
            text = None
        if text is None:
            text = await service.timelines(db, where, now, next_cron_time, only=only)
    except ParseError as exc:
        text = t.campaign_error(exc.code)
    reply(outbox, message, text)


# -- /plan ---------------------------------------------------------------------------------


def _plan_scope(message: Message, pond: PondInfo | None) -> int | None:
    """Whose plan: the pond's, the shop's (a global operator's private chat), or nobody's
    (a group that is no pond)."""
    if message.chat.type in GROUPS and pond is not None:
        return message.chat.id
    return plans.SHOP_WIDE if message.chat.type == "private" else None


async def plan_(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
) -> None:
    try:
        sales, per_buyer = rules.parse_plan(command.args)
    except ParseError:
        reply(outbox, message, t.plan_usage())
        return
    scope = _plan_scope(message, pond)
    if scope is not None:
        async with db.transaction() as session:
            await plans.save_plan(
                session, scope, sales, per_buyer, set_by=actor_of(message),
                source_key=f"plan:{message.chat.id}:{message.message_id}", now=scheduler.clock(),
            )
    reply(outbox, message, t.plan(rules.plan(sales, per_buyer)))
