"""`/order`: an operator records a purchase (SPEC F2).

`/order <@username|user_id> <amount> [order_no]`, or as a reply to a member's message
without the user. The amount is yuan with up to 2 decimals; the points are
⌊amount × points_per_yuan⌋ and the tier follows the member's lifetime spend — both from
the settings of the pond the command is typed in (in a private chat: the defaults, as
for imports). The order number is the idempotency key; without one, the command message
is (`msg:<chat_id>:<message_id>`). The same order number again is answered "already
recorded" and changes nothing; a redelivered command without a number is silent, like
a replayed `/give`.

A member who moves up a tier is told by DM, in their own language, after the commit and
only when their DM is linked (storage/orders.py).

Points are shop-wide: the points of an order a pond's own admin (not a global operator)
records count against their `operator_give_daily_cap` in that pond, like a `/give`; an
order over it is rolled back whole and nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.methods import SendMessage
from aiogram.types import Message
from aiogram.utils.i18n import I18n
from sqlalchemy.ext.asyncio import AsyncSession

from games import orders as rules
from games.parsing import ParseError
from games.settings import PondSettings
from games.tiers import Tiers, named, parse_tiers
from services import texts
from services.filters import IsOperator
from services.i18n import speaking
from services.messaging import actor_of, refuse_non_operator, replied_message, reply
from services.middlewares import PondInfo, person_of
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.texts import orders as order_texts
from services.texts import ponds as pond_texts
from storage import orders, repo
from storage.db import Database


def setup() -> Router:
    router = Router(name="orders")
    router.message.register(record, Command("order"), IsOperator())
    router.message.register(refuse_non_operator, Command("order"))
    return router


def member_language(i18n: I18n, language_code: str | None) -> str:
    lang = (language_code or "").split("-")[0].lower()
    return lang if lang in i18n.available_locales else i18n.default_locale


async def record(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    i18n: I18n,
    operators: OperatorPolicy,
    clock: Callable[[], datetime],
    pond: PondInfo | None = None,
) -> None:
    target_msg = replied_message(message)
    replying = target_msg is not None
    try:
        args = rules.parse_order(command.args, replying=replying)
    except ParseError as exc:
        reply(outbox, message, order_texts.parse_error(exc.code))
        return
    replied_person = None
    if replying and args.username is None and args.user_id is None:
        assert target_msg is not None
        replied_person = person_of(target_msg.from_user, target_msg.sender_chat)
        if replied_person is None:
            reply(outbox, message, texts.cannot_target_bot())
            return

    order_no = args.order_no or rules.message_key(message.chat.id, message.message_id)
    in_pond = pond is not None and message.chat.type in ("group", "supergroup")
    actor = actor_of(message)
    capped = in_pond and actor is not None and not operators.is_global(
        message.from_user, message.sender_chat
    )
    try:
        done, tiers, owner, member, unknown = await _in_transaction(
            db, args, replied_person, message, order_no, pond if in_pond else None,
            allowance=(actor, clock()) if capped else None,
        )
    except repo.OverAllowance as over:
        reply(outbox, message, pond_texts.give_cap_reached(over.left, over.cap))
        return
    if member is None or done is None:
        reply(outbox, message, texts.member_not_found(unknown))
        return
    if not done.applied:
        if args.order_no is None:
            return  # a redelivered command: it was answered the first time
        name = owner.display_name if owner is not None else str(done.user_id)
        reply(outbox, message, order_texts.already_recorded(order_no, name, done.cents))
        return
    tier = named(done.tier_after, tiers)
    reply(
        outbox,
        message,
        order_texts.recorded(
            member.display_name, args.order_no, done.cents, done.points, done.balance,
            order_texts.tier_label(tier), promoted=done.promoted,
        ),
    )
    if done.promoted and done.dm_linked:
        with speaking(i18n, member_language(i18n, done.language_code)):
            text = order_texts.tier_notice(order_texts.tier_label(tier), done.spent_cents)
        outbox.send(SendMessage(chat_id=done.user_id, text=text), droppable=False)


async def _in_transaction(
    db: Database,
    args: rules.OrderArgs,
    replied_person: repo.UserInfo | None,
    message: Message,
    order_no: str,
    pond: PondInfo | None,
    *,
    allowance: tuple[int | None, datetime] | None,
) -> tuple[
    orders.Recorded | None, Tiers, repo.MemberView | None, repo.MemberView | None, str
]:
    """Find the member and record the order, in one transaction; with a pond admin's
    `allowance` (who, when) the order's points count against their daily cap."""
    async with db.transaction() as session:
        member = await repo.named_member(
            session, replied=replied_person, username=args.username, user_id=args.user_id
        )
        if member is None:
            unknown = f"@{args.username}" if args.username else str(args.user_id)
            return None, parse_tiers(PondSettings().tiers), None, None, unknown
        done, tiers, owner = await _record(session, message, member, order_no, args.cents, pond)
        if allowance is not None and pond is not None and done.applied and done.points > 0:
            actor, now = allowance
            assert actor is not None
            await repo.spend_operator_allowance(
                session, pond.chat_id, actor, done.points, timezone=pond.timezone, now=now
            )
    return done, tiers, owner, member, ""


async def _record(
    session: AsyncSession,
    message: Message,
    member: repo.MemberView,
    order_no: str,
    cents: int,
    pond: PondInfo | None,
) -> tuple[orders.Recorded, Tiers, repo.MemberView | None]:
    """Record the order under the pond's settings (None: the defaults); with the tiers
    used and the member the order number belongs to."""
    settings = await repo.pond_settings(session, pond.chat_id) if pond else PondSettings()
    tiers = parse_tiers(settings.tiers)
    done = await orders.record_order(
        session,
        order_no=order_no,
        user_id=member.user_id,
        cents=cents,
        points_per_yuan=settings.points_per_yuan,
        tiers=tiers,
        chat_id=pond.chat_id if pond else None,
        actor_id=actor_of(message),
    )
    owner = member if done.user_id == member.user_id else (
        await repo.get_member(session, done.user_id)
    )
    return done, tiers, owner
