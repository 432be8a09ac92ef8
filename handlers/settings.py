"""Settings (SPEC F12): `/settings` and `/settings key=value [key=value …]`, operators.

In a pond: every setting with its value and the shop-wide default (which ones are
defaults), or changes to them. In a private chat, a global operator (`OPERATOR_IDS`)
sees and changes the shop-wide defaults, which every pond follows where its own value
is the default (storage/settings.py). Every pair is checked before anything changes;
one bad pair changes nothing and the answer names it and what it accepts. The settings
that decide how many of the shop's points are handed out (`games.settings.SHOP_LEVEL`)
are changed in a pond only by global operators. The shop-wide ones (`SHOP_WIDE`:
birthdays, points expiry, segments) are not a pond's at all: a pond shows the shop's
values, and a change of one there is refused, whoever asks, with where to set it.

A change takes effect at once: every reader of a pond's numbers reads them from the
database, and the pond's time zone and language — which the tracking middleware keeps
for a while — are forgotten here at once, and in other processes within
`TrackingMiddleware.settings_poll` seconds (they watch the audit rows). The command
message is the change's key: a redelivered update changes nothing and writes no second
audit row.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from aiogram.utils.i18n import I18n

from games.settings import SHOP_WIDE, Effective, PondSettings, shop_level_keys
from services.filters import IsOperator
from services.i18n import speaking
from services.messaging import actor_of, refuse_non_operator, reply
from services.middlewares import PondInfo, TrackingMiddleware
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.texts import settings as texts
from storage import settings as store
from storage.db import Database

Clock = Callable[[], datetime]


def setup() -> Router:
    router = Router(name="settings")
    router.message.register(settings, Command("settings"), IsOperator())
    # Everyone else who tries is told so, and nothing changes.
    router.message.register(refuse_non_operator, Command("settings"))
    return router


async def settings(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    operators: OperatorPolicy,
    tracking: TrackingMiddleware,
    i18n: I18n,
    clock: Clock,
    pond: PondInfo | None = None,
) -> None:
    if message.chat.type in ("group", "supergroup"):
        if pond is None:
            return
        chat_id: int | None = pond.chat_id
    elif message.chat.type == "private" and operators.is_global(
        message.from_user, message.sender_chat
    ):
        chat_id = None  # the shop-wide defaults
    else:
        reply(outbox, message, texts.in_a_pond_or_private())
        return
    fallback = store.Fallback(tracking.default_timezone, tracking.default_language)
    args = (command.args or "").strip()
    # A shop-wide setting is refused in a pond to everyone (storage: `change_pond`).
    reserved = [k for k in shop_level_keys(args) if k not in SHOP_WIDE]
    if reserved and not operators.is_global(message.from_user, message.sender_chat):
        reply(outbox, message, texts.shop_level_only(reserved))
        return
    if not args:
        await _show(message, db, outbox, chat_id, fallback)
    else:
        await _change(message, args, db, outbox, tracking, i18n, clock, chat_id, fallback)


async def _show(
    message: Message, db: Database, outbox: Outbox, chat_id: int | None, fallback: store.Fallback
) -> None:
    async with db.transaction(readonly=True) as session:
        if chat_id is None:
            current = await store.shop_defaults(session, fallback)
            defaults = Effective(PondSettings(), fallback.timezone, fallback.language)
        else:
            found = await store.pond_effective(session, chat_id, fallback)
            if found is None:
                return
            current, defaults = found
    for text in texts.listing(current, defaults, shop_wide=chat_id is None):
        reply(outbox, message, text)


async def _change(
    message: Message,
    args: str,
    db: Database,
    outbox: Outbox,
    tracking: TrackingMiddleware,
    i18n: I18n,
    clock: Clock,
    chat_id: int | None,
    fallback: store.Fallback,
) -> None:
    key = f"settings:{message.chat.id}:{message.message_id}"
    actor = actor_of(message)
    async with db.transaction() as session:
        if chat_id is None:
            outcome: store.Outcome | None = await store.change_shop(
                session, args, fallback, actor_id=actor, source_key=key, now=clock()
            )
        else:
            outcome = await store.change_pond(
                session, chat_id, args, actor_id=actor, source_key=key, now=clock()
            )
    if outcome is None or outcome.replayed:
        return  # a pond we don't know, or a command carried out before: stay silent
    if outcome.errors:
        reply(outbox, message, texts.refused(outcome.errors))
        return
    if outcome.changes:
        # This process sees a new time zone or language with the very next update.
        if chat_id is None:
            tracking.forget_ponds()
        else:
            tracking.forget_pond(chat_id)
    changes = [(c.key, c.old, c.new) for c in outcome.changes]
    # A pond that now speaks another language is answered in it.
    voice = speaking(i18n, outcome.applied.language) if chat_id is not None else nullcontext()
    with voice:
        text = texts.changed(changes, shop_wide=chat_id is None, moved=len(outcome.moved))
    reply(outbox, message, text)
