"""/start and /help. `/start` in the private chat links it and delivers every coupon
code (and a birthday greeting) that waited for it."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message

from services import texts
from services.members import deliver_waiting
from services.messaging import reply
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.shop_delivery import deliver_pending
from storage import repo
from storage.db import Database


def setup() -> Router:
    router = Router(name="common")
    router.message.register(start, CommandStart())
    router.message.register(help_, Command("help"))
    return router


async def start(
    message: Message,
    bot: Bot,
    db: Database,
    outbox: Outbox,
    operators: OperatorPolicy,
    person: repo.UserInfo | None,
) -> None:
    is_op = await operators.is_operator(bot, message.chat, message.from_user, message.sender_chat)
    if message.chat.type != "private" or person is None:
        reply(outbox, message, texts.help_text(operator=is_op))
        return
    async with db.transaction() as session:
        await repo.upsert_member(session, person)
        await repo.link_dm(session, person.id)
    outbox.reactivate(person.id)  # they may have blocked the bot before and come back
    glob = operators.is_global(message.from_user, message.sender_chat)
    reply(
        outbox,
        message,
        texts.start_private(person.first_name, operator=is_op, global_operator=glob),
    )
    await deliver_pending(outbox, db, person.id)  # codes that waited for this chat
    await deliver_waiting(outbox, db, person.id)  # a birthday greeting that waited


async def help_(message: Message, bot: Bot, outbox: Outbox, operators: OperatorPolicy) -> None:
    is_op = await operators.is_operator(bot, message.chat, message.from_user, message.sender_chat)
    # /ponds is a private-chat command of global operators: listed only there.
    glob = message.chat.type == "private" and operators.is_global(
        message.from_user, message.sender_chat
    )
    reply(outbox, message, texts.help_text(operator=is_op, global_operator=glob))
