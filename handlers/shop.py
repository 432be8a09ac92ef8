"""The shop for members (积分兑换): `/shop`, `/redeem <item_id>`, `/mine` — in a pond or
in the private chat.

A redemption is one transaction (`storage.shop.redeem`); its command message is the
domain event (`chat:message_id`), so a redelivered update pays once and is answered
once. After the commit the code goes to the member's DM only
(`services.shop_delivery`); the group is told where the code went, or to `/start` the
bot privately when their DM is not linked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from games.checkin import DEFAULT_TIMEZONE, local_day
from games.parsing import ParseError
from games.shop import parse_item_id
from services import texts as base_texts
from services.fast_lane import HOT
from services.messaging import reply
from services.middlewares import NO_MEMBER_WAIT, PondInfo
from services.outbox import Outbox
from services.shop_delivery import deliver
from services.shop_memo import ClosedItems
from services.texts import shop as texts
from storage import ledger, repo, shop
from storage.db import Database
from storage.models import utcnow

Clock = Callable[[], datetime]
PLACES = ("private", "group", "supergroup")


def setup() -> Router:
    router = Router(name="shop")
    router.message.register(show, Command("shop"))
    # A /redeem storm runs without waiting for first-seen members' records: only points
    # buy, and a member seen for the first time has none (refused either way).
    router.message.register(redeem, Command("redeem"), flags={NO_MEMBER_WAIT: True, HOT: True})
    router.message.register(mine, Command("mine"))
    return router


def shop_timezone(pond: PondInfo | None) -> str:
    """Items' dates are local days of the shop: the pond's zone, or the default one."""
    return pond.timezone if pond is not None else DEFAULT_TIMEZONE


def _served(message: Message, pond: PondInfo | None) -> bool:
    """A pond of this shop, or the private chat (the middleware stops other groups)."""
    return message.chat.type == "private" or pond is not None


async def show(
    message: Message, db: Database, outbox: Outbox, pond: PondInfo | None = None,
    clock: Clock = utcnow,
) -> None:
    if not _served(message, pond):
        return
    today = local_day(clock(), shop_timezone(pond))
    async with db.transaction(readonly=True) as session:
        items = await shop.items(session, on_sale_day=today)
    reply(outbox, message, texts.shop(items))


async def redeem(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    person: repo.UserInfo | None,
    closed_items: ClosedItems,
    pond: PondInfo | None = None,
    clock: Clock = utcnow,
) -> None:
    if not _served(message, pond):
        return
    if person is None:
        reply(outbox, message, texts.not_a_member())
        return
    try:
        item_id = parse_item_id(command.args)
    except ParseError:
        reply(outbox, message, texts.bad_id(texts.usage_redeem()))
        return
    in_dm = message.chat.type == "private"
    source_key = f"{message.chat.id}:{message.message_id}"
    now, zone = clock(), shop_timezone(pond)
    refused = closed_items.refusal(item_id)  # a sold-out storm stops here …
    if refused is None:

        async def look() -> str | None:  # … or here (one look for a crowd arriving at once)
            async with db.transaction(readonly=True) as session:
                return await shop.refusal(
                    session, item_id=item_id, source_key=source_key, now=now, timezone=zone
                )

        refused = await closed_items.look(item_id, look)
        if refused == "replayed":
            return
        if refused is not None:
            closed_items.remember(item_id, refused)
    if refused is not None:
        reply(outbox, message, texts.redeem_refused(shop.ShopError(refused)))
        return
    try:
        async with db.transaction() as session:
            if in_dm:  # writing here proves the private chat is open
                await repo.upsert_member(session, person)
                await repo.link_dm(session, person.id)
            r = await shop.redeem(
                session, item_id=item_id, user_id=person.id,
                chat_id=None if in_dm else message.chat.id,
                source_key=source_key, now=now, timezone=zone,
            )
    except shop.ShopError as exc:
        closed_items.remember(item_id, exc.code)
        reply(outbox, message, texts.redeem_refused(exc))
        return
    except ledger.InsufficientPoints as exc:
        reply(outbox, message, texts.not_enough_points(exc.balance, exc.needed))
        return
    except ledger.UnknownMember:
        reply(outbox, message, base_texts.no_points_yet(person.display_name))
        return
    if not r.applied:
        return  # a replay of a command carried out before: answered then
    if in_dm:
        outbox.reactivate(person.id)
        reply(outbox, message, texts.redeemed(person.display_name, r, code_sent=True,
                                              in_dm=True), droppable=False)
        deliver(outbox, db, [r], force=True, clock=clock)
        return
    sent = deliver(outbox, db, [r], clock=clock)
    reply(
        outbox, message,
        texts.redeemed(person.display_name, r, code_sent=bool(sent), in_dm=False),
        droppable=False,
    )


async def mine(
    message: Message, db: Database, outbox: Outbox, person: repo.UserInfo | None,
    pond: PondInfo | None = None,
) -> None:
    if not _served(message, pond):
        return
    if person is None:
        reply(outbox, message, texts.not_a_member())
        return
    async with db.transaction(readonly=True) as session:
        reds = await shop.of_member(session, person.id)
        draws = await shop.draws_of(session, person.id)
    reply(
        outbox, message,
        texts.mine(reds, draws, in_dm=message.chat.type == "private",
                   timezone=shop_timezone(pond)),
    )
