"""Small helpers that turn a reply into an outbox entry (never a direct API call)."""

from __future__ import annotations

from aiogram.methods import SendMessage
from aiogram.types import InlineKeyboardMarkup, Message, ReplyParameters

from bot import texts
from bot.outbox import Outbox


def reply(
    outbox: Outbox, message: Message, text: str, *, markup: InlineKeyboardMarkup | None = None
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
        )
    )


def say(
    outbox: Outbox, chat_id: int, text: str, *, markup: InlineKeyboardMarkup | None = None
) -> None:
    outbox.send(SendMessage(chat_id=chat_id, text=text, reply_markup=markup))


def actor_of(message: Message) -> int | None:
    """Who did it, for the ledger's audit column: the user, or the chat an anonymous
    admin or a channel speaks as."""
    if message.sender_chat is not None:
        return message.sender_chat.id
    return message.from_user.id if message.from_user else None


async def refuse_non_operator(message: Message, outbox: Outbox) -> None:
    """Registered after an operator command's own handler: a member tried the command."""
    reply(outbox, message, texts.operators_only())
