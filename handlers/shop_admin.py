"""The shop for operators: `/item add|codes|list|off|on`, `/redemptions [item_id]`,
`/refund <redemption_id> [reason]`, `/fulfil <redemption_id>`.

Items are shop-wide, so only global operators (`OPERATOR_IDS`) add, stock or switch
them; a pond's own operators list them and handle redemptions. Every command answers
bad arguments with its usage line and changes nothing; members who try are told the
commands are for operators. Codes are listed only in the operator's own private chat.
`/item codes` reads the codes from the message it replies to, or from the .txt/.csv
file it replies to (downloaded through the Bot API before any transaction).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from datetime import datetime

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.methods import SendMessage
from aiogram.types import Message

from games.checkin import local_day
from games.parsing import ParseError, fold
from games.settings import PondSettings
from games.shop import (
    above_newcomer,
    newcomer_points,
    parse_code_lines,
    parse_item_add,
    parse_item_id,
)
from handlers.shop import shop_timezone
from services.filters import IsOperator
from services.messaging import actor_of, refuse_non_operator, reply
from services.middlewares import PondInfo
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.shop_memo import ClosedItems
from services.texts import ponds as pond_texts
from services.texts import shop as texts
from storage import repo, shop
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
MAX_CODES_FILE = 1_000_000  # bytes
COMMANDS = ("item", "redemptions", "refund", "fulfil")


def setup() -> Router:
    router = Router(name="shop_admin")
    router.message.register(item, Command("item"), IsOperator())
    router.message.register(redemptions, Command("redemptions"), IsOperator())
    router.message.register(refund, Command("refund"), IsOperator())
    router.message.register(fulfil, Command("fulfil"), IsOperator())
    router.message.register(refuse_non_operator, Command(*COMMANDS))
    return router


async def item(
    message: Message,
    command: CommandObject,
    bot: Bot,
    db: Database,
    outbox: Outbox,
    operators: OperatorPolicy,
    closed_items: ClosedItems,
    pond: PondInfo | None = None,
    clock: Clock = utcnow,
) -> None:
    words = fold(command.args or "").split(maxsplit=1)
    sub = words[0].lower() if words else ""
    rest = words[1] if len(words) > 1 else ""
    if sub in ("add", "codes", "off", "on") and not operators.is_global(
        message.from_user, message.sender_chat
    ):
        reply(outbox, message, pond_texts.shop_wide_only())
        return
    now = clock()
    today = local_day(now, shop_timezone(pond))
    if sub == "add":
        try:
            args = parse_item_add(rest, today)
        except ParseError as exc:
            reply(outbox, message, texts.bad_item_args(exc.code))
            return
        async with db.transaction() as session:
            added, applied = await shop.add_item(
                session, args, source_key=f"item:{message.chat.id}:{message.message_id}",
                created_by=actor_of(message), now=now,
            )
            settings = (
                await repo.pond_settings(session, pond.chat_id) if pond else PondSettings()
            )
        if applied:
            advice = newcomer_points(settings) if above_newcomer(args.price, settings) else None
            reply(outbox, message, texts.item_added(added, advice))
        return
    if sub == "list" and not rest:
        async with db.transaction(readonly=True) as session:
            items = await shop.items(session)
        reply(outbox, message, texts.item_list(items, today))
        return
    if sub in ("off", "on", "codes"):
        try:
            item_id = parse_item_id(rest)
        except ParseError:
            reply(outbox, message, texts.bad_item_args("bad_id"))
            return
        if sub == "codes":
            await _codes(message, bot, db, outbox, item_id, now)
            closed_items.forget(item_id)  # new codes: refusals remembered are stale
            return
        async with db.transaction() as session:
            switched = await shop.set_on_sale(session, item_id, sub == "on", now=now)
        closed_items.forget(item_id)
        reply(outbox, message, texts.unknown_item() if switched is None
              else texts.item_switched(switched))
        return
    reply(outbox, message, texts.bad_item_args("usage"))


async def _read_codes(message: Message, bot: Bot) -> str | None:
    """The text holding the codes: the replied message's, or its file's (None: neither,
    or a file that is no small UTF-8 text)."""
    source = message.reply_to_message
    if source is None:
        return None
    document = source.document
    if document is None:
        return source.text
    name = (document.file_name or "").lower()
    is_text = (document.mime_type or "").startswith("text/") or name.endswith((".txt", ".csv"))
    if not is_text or (document.file_size or 0) > MAX_CODES_FILE:
        return ""
    buffer = io.BytesIO()
    try:
        await bot.download(document, destination=buffer)
    except Exception as exc:
        log.warning("downloading a codes file failed: %s", type(exc).__name__)
        return ""
    data = buffer.getvalue()[: MAX_CODES_FILE + 1]
    if len(data) > MAX_CODES_FILE:
        return ""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return ""


async def _codes(
    message: Message, bot: Bot, db: Database, outbox: Outbox, item_id: int, now: datetime
) -> None:
    text = await _read_codes(message, bot)  # outside any transaction
    if text is None:
        reply(outbox, message, texts.codes_source_missing())
        return
    lines = parse_code_lines(text)
    if not text or not (lines.codes or lines.repeated):
        reply(outbox, message, texts.codes_file_refused() if not text
              else texts.codes_source_missing())
        return
    try:
        async with db.transaction() as session:
            done = await shop.add_codes(session, item_id, lines.codes, now=now)
    except shop.ShopError as exc:
        reply(outbox, message, texts.unknown_item() if exc.code == "unknown_item"
              else texts.goods_no_codes())
        return
    reply(outbox, message, texts.codes_added(
        done, len(lines.repeated), lines.bad_lines,
        show=message.chat.type == "private",
        skipped=lines.repeated + done.already_in_pool,
    ))


async def redemptions(
    message: Message, command: CommandObject, db: Database, outbox: Outbox,
    pond: PondInfo | None = None,
) -> None:
    item_id: int | None = None
    if command.args and command.args.strip():
        try:
            item_id = parse_item_id(command.args)
        except ParseError:
            reply(outbox, message, texts.bad_id(texts.usage_redemptions()))
            return
    async with db.transaction(readonly=True) as session:
        reds = await shop.listing(session, item_id=item_id)
    reply(outbox, message, texts.redemptions(
        reds, show_codes=message.chat.type == "private", timezone=shop_timezone(pond)
    ))


async def refund(
    message: Message, command: CommandObject, db: Database, outbox: Outbox,
    closed_items: ClosedItems, clock: Clock = utcnow,
) -> None:
    words = fold(command.args or "").split(maxsplit=1)
    try:
        rid = parse_item_id(words[0] if words else "")
    except ParseError:
        reply(outbox, message, texts.bad_id(texts.usage_refund()))
        return
    reason = words[1][:200] if len(words) > 1 else ""
    try:
        async with db.transaction() as session:
            done = await shop.refund(
                session, rid, actor_id=actor_of(message), reason=reason, now=clock()
            )
    except shop.ShopError as exc:
        reply(outbox, message, texts.operator_refused(exc.code))
        return
    reply(outbox, message, texts.refunded(done))
    r = done.redemption
    closed_items.forget(r.item_id)  # a unit may be back on sale
    if done.applied and r.dm_linked and r.user_id != message.chat.id:
        outbox.send(SendMessage(chat_id=r.user_id, text=texts.refund_notice(done)))


async def fulfil(
    message: Message, command: CommandObject, db: Database, outbox: Outbox,
    clock: Clock = utcnow,
) -> None:
    try:
        rid = parse_item_id(command.args)
    except ParseError:
        reply(outbox, message, texts.bad_id(texts.usage_fulfil()))
        return
    try:
        async with db.transaction() as session:
            view, applied = await shop.fulfil(
                session, rid, actor_id=actor_of(message), now=clock()
            )
    except shop.ShopError as exc:
        reply(outbox, message, texts.operator_refused(exc.code))
        return
    reply(outbox, message, texts.fulfilled(view, applied))
