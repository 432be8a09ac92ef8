"""A button poll's messages — a vote's (handlers/votes.py, scheduler/games.py) or a
survey's (handlers/survey.py, scheduler/surveys.py): its buttons, its post, the live
counts edited in place, and at the close the frozen post and the result.

Every message goes through the outbox. The post and the result are queued with
`Outbox.post`, which records Telegram's answer when it comes (the post's message id; the
result's stamp), so nobody waits for a busy pond's queue; the live counts are a board
edit under the post's key, which the outbox coalesces, so a pond of thousands pressing
stays within the group's 20 messages a minute.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiogram.methods import EditMessageText, SendMessage
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters
from sqlalchemy.ext.asyncio import AsyncSession

from services.outbox import Outbox
from storage.db import Database


def markup(options: Sequence[str], data: Callable[[int], str]) -> InlineKeyboardMarkup:
    """A button per option, one a row; `data(i)` is option i's callback data."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=o, callback_data=data(i))] for i, o in enumerate(options)
        ]
    )


def post(
    outbox: Outbox,
    key: str,
    chat_id: int,
    text: str,
    buttons: InlineKeyboardMarkup,
    record: Callable[[Message], Awaitable[None]],
) -> bool:
    """Queue the poll's post under `key`; `record` stores its message id when Telegram
    answers. False: the outbox refused it."""
    queued = outbox.post(
        SendMessage(chat_id=chat_id, text=text, reply_markup=buttons), key=key, record=record
    )
    return queued is not None


def refresh(
    outbox: Outbox,
    key: str,
    chat_id: int,
    message_id: int,
    text: str,
    buttons: InlineKeyboardMarkup,
) -> None:
    """The post's live counts, edited in place under the post's board `key` (bursts of
    presses are coalesced into one edit)."""
    outbox.board(
        key,
        EditMessageText(chat_id=chat_id, message_id=message_id, text=text, reply_markup=buttons),
    )


def announce(
    db: Database,
    outbox: Outbox,
    *,
    key: str,
    chat_id: int,
    message_id: int | None,
    final: str,
    result: str,
    mark: Callable[[AsyncSession], Awaitable[None]],
) -> bool:
    """Freeze a closed poll's post (`final`: the final counts, no buttons) and queue its
    `result` post under `key`, in reply to the post; `mark` records it as announced once
    Telegram answered it. False: already on its way."""
    if outbox.posting(key):
        return False
    if message_id is not None:
        outbox.send(EditMessageText(chat_id=chat_id, message_id=message_id, text=final))

    async def record(_: Message) -> None:
        async with db.transaction() as session:
            await mark(session)

    replying = (
        None
        if message_id is None
        else ReplyParameters(message_id=message_id, allow_sending_without_reply=True)
    )
    queued = outbox.post(
        SendMessage(chat_id=chat_id, text=result, reply_parameters=replying),
        key=key,
        record=record,
    )
    return queued is not None
