"""Small helpers that turn a reply into an outbox entry (never a direct API call).

`reply` and `say` are for ordinary replies: they are queued `droppable` (a reply that
waited minutes behind a busy pond's budget is dropped, not sent). Pass
`droppable=False` for what must arrive late rather than never; game posts go through
`Outbox.post` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiogram import Bot, Dispatcher, Router
from aiogram.methods import SendMessage
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    MaybeInaccessibleMessage,
    Message,
    ReplyParameters,
)
from aiogram.utils.i18n import I18n, I18nMiddleware
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from bot import texts
from bot.i18n import make_i18n
from bot.outbox import Outbox
from scheduler.core import Scheduler
from storage.db import Database
from storage.models import Pond, PondStatus

log = logging.getLogger(__name__)


def reply(
    outbox: Outbox,
    message: Message,
    text: str,
    *,
    markup: InlineKeyboardMarkup | None = None,
    droppable: bool = True,
) -> None:
    """Queue a reply to `message` in its chat (and topic). Returns at once."""
    outbox.send(
        SendMessage(
            chat_id=message.chat.id,
            message_thread_id=message.message_thread_id if message.is_topic_message else None,
            text=text,
            reply_markup=markup,
            reply_parameters=ReplyParameters(
                message_id=message.message_id, allow_sending_without_reply=True
            ),
        ),
        droppable=droppable,
    )


def say(
    outbox: Outbox,
    chat_id: int,
    text: str,
    *,
    markup: InlineKeyboardMarkup | None = None,
    droppable: bool = True,
) -> None:
    outbox.send(
        SendMessage(chat_id=chat_id, text=text, reply_markup=markup), droppable=droppable
    )


def actor_of(message: Message) -> int | None:
    """Who did it, for the ledger's audit column: the user, or the chat an anonymous
    admin or a channel speaks as."""
    if message.sender_chat is not None:
        return message.sender_chat.id
    return message.from_user.id if message.from_user else None


async def refuse_non_operator(message: Message, outbox: Outbox) -> None:
    """Registered after an operator command's own handler: a member tried the command."""
    reply(outbox, message, texts.operators_only())


# -- lost posts ----------------------------------------------------------------------------
#
# A game (a red packet, a guess round, a vote) is committed first and posted after, so a
# crash between the two, or a post that failed for good, leaves a game nobody can see.
# Such a game is posted when its command is delivered again (the command's key finds it
# without a stored post) and, at start, by each feature's start-up step (these helpers).
#
# The trade-off: a crash after Telegram answered the post but before its message id was
# stored means the game is posted a second time. A second post is better than an
# invisible game (a guess round would hold the pond's only slot), and the answer is
# recorded the moment it arrives (`Outbox.post`), so that window is one short write.


@dataclass(frozen=True)
class StartupDeps:
    """What a start-up step needs, taken from the dispatcher it serves."""

    db: Database
    outbox: Outbox
    scheduler: Scheduler
    i18n: I18n

    @contextmanager
    def speaking(self, language: str) -> Iterator[None]:
        """Texts inside the block speak `language` (a pond's)."""
        if language not in self.i18n.available_locales:
            language = self.i18n.default_locale
        with self.i18n.context(), self.i18n.use_locale(language):
            yield


def startup_deps(router: Router) -> StartupDeps:
    """The dispatcher's services, for a step registered on `router.startup` (the polling
    runner emits start-up with the bot only; the dispatcher holds the rest)."""
    root = router
    while root.parent_router is not None:
        root = root.parent_router
    if not isinstance(root, Dispatcher):
        raise RuntimeError("start-up step on a router outside a dispatcher")
    i18n = next(
        (m.i18n for m in root.update.outer_middleware if isinstance(m, I18nMiddleware)),
        None,
    ) or make_i18n()
    return StartupDeps(root["db"], root["outbox"], root["scheduler"], i18n)


async def active_ponds(session: AsyncSession, chat_ids: Iterable[int]) -> dict[int, Pond]:
    """The ponds among `chat_ids` that are served and still take our messages (a group
    revoked or left since its game was made gets no post)."""
    wanted = sorted(set(chat_ids))
    if not wanted:
        return {}
    rows = await session.execute(
        select(Pond).where(col(Pond.chat_id).in_(wanted), col(Pond.status) == PondStatus.active)
    )
    return {p.chat_id: p for p in rows.scalars().all() if p.served}


def log_restored(what: str, posted: int) -> None:
    if posted:
        log.warning("%d %s post(s) had not gone out: posted again at start", posted, what)


def carries_button(message: MaybeInaccessibleMessage, query: CallbackQuery, bot: Bot) -> bool:
    """Whether the pressed message is the bot's own and carries exactly the pressed
    button. The message comes from Telegram (a client picks the data, not the message),
    so this proves the press is on a post the bot made with that button."""
    if not isinstance(message, Message) or message.via_bot is not None:
        return False
    if message.from_user is None or message.from_user.id != bot.id:
        return False
    markup = message.reply_markup
    rows = markup.inline_keyboard if markup is not None else []
    return any(button.callback_data == query.data for row in rows for button in row)
