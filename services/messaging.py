"""Small helpers that turn a reply into an outbox entry (never a direct API call).

`reply` and `say` are for ordinary replies: they are queued `droppable` (a reply that
waited minutes behind a busy pond's budget is dropped, not sent). Pass
`droppable=False` for what must arrive late rather than never; game posts go through
`Outbox.post` instead.
"""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.methods import SendMessage
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    MaybeInaccessibleMessage,
    Message,
    ReplyParameters,
)

from services import texts
from services.outbox import Outbox

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


def replied_message(message: Message) -> Message | None:
    """The message `message` answers, if it answers one: in a forum topic every message
    "replies" to the topic's first one, which names nobody."""
    target = message.reply_to_message
    if target is None or target.forum_topic_created is not None:
        return None
    return None if target.message_id == message.message_thread_id else target


def actor_of(message: Message) -> int | None:
    """Who did it, for the ledger's audit column: the user, or the chat an anonymous
    admin or a channel speaks as."""
    if message.sender_chat is not None:
        return message.sender_chat.id
    return message.from_user.id if message.from_user else None


async def refuse_non_operator(message: Message, outbox: Outbox) -> None:
    """Registered after an operator command's own handler: a member tried the command."""
    reply(outbox, message, texts.operators_only())


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
