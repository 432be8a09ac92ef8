"""A promotion post as Telegram gets it: the same for the private preview and for the
real post in each pond, so the operator sees exactly what members will see.

Call inside the pond's language (the `{phase}` placeholder is translated)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from aiogram.methods import SendMessage, SendPhoto
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters

from games.campaign import Campaign, render
from services.texts import promo as t
from storage.models import PromoPost


def rendered_text(post: PromoPost, campaigns: Sequence[Campaign], day: date) -> str:
    text = render(post.text, campaigns, day, t.phase_labels())
    return text if text.strip() else post.text  # never an empty message


def post_method(
    post: PromoPost,
    chat_id: int,
    campaigns: Sequence[Campaign],
    day: date,
    *,
    reply_to: int | None = None,
) -> SendMessage | SendPhoto:
    text = rendered_text(post, campaigns, day)
    rows: list[list[InlineKeyboardButton]] = []
    if post.button_text and post.button_url:
        rows.append([InlineKeyboardButton(text=post.button_text, url=post.button_url)])
    markup = InlineKeyboardMarkup(inline_keyboard=rows) if rows else None
    reply = (
        ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
        if reply_to is not None
        else None
    )
    if post.photo_file_id:
        return SendPhoto(
            chat_id=chat_id,
            photo=post.photo_file_id,
            caption=t.post_body(text, t.CAPTION_LIMIT),
            reply_markup=markup,
            reply_parameters=reply,
        )
    return SendMessage(
        chat_id=chat_id,
        text=t.post_body(text, t.TEXT_LIMIT),
        reply_markup=markup,
        reply_parameters=reply,
    )
