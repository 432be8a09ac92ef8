"""A promotion post as Telegram gets it: the same for the private preview and for the
real post in each pond, so the operator sees exactly what members will see; the control
message under a preview; the size check a draft passes first.

Call inside the pond's language (the `{phase}` placeholder is translated)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from aiogram.filters.callback_data import CallbackData
from aiogram.methods import SendMessage, SendPhoto
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters

from games.campaign import Campaign, current_campaign, render, uses_campaign, widest_render
from services.texts import promo as t
from storage.models import PromoPost


def size_problem(text: str, photo: bool) -> str | None:
    """A text too long for Telegram once its placeholders are filled in at their widest
    (whatever the day it is sent): the parse error's code, else None."""
    longest = max(len(label) for label in t.phase_labels().values())
    size = t.utf16_len(widest_render(text, longest))
    if photo and size > t.CAPTION_LIMIT:
        return "caption_too_long"
    if size > t.TEXT_LIMIT:
        return "text_too_long"
    return None


class PromoCB(CallbackData, prefix="pp"):
    """A preview's buttons: `ok` schedules the post, `no` discards the draft."""

    action: str
    post_id: int


def preview_keyboard(post_id: int) -> InlineKeyboardMarkup:
    def button(text: str, action: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(
            text=text, callback_data=PromoCB(action=action, post_id=post_id).pack()
        )

    return InlineKeyboardMarkup(
        inline_keyboard=[[button(t.confirm_button(), "ok"), button(t.discard_button(), "no")]]
    )


def _replying(message_id: int | None) -> ReplyParameters | None:
    if message_id is None:
        return None
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


def preview_control(
    post: PromoPost,
    ponds: int,
    campaigns: Sequence[Campaign],
    day: date,
    *,
    reply_to: int | None = None,
) -> SendMessage:
    """The message under a preview: when and where the post goes, with its buttons."""
    assert post.id is not None
    control = t.preview(
        post.id,
        t.when(post.kind, post.run_at, post.cron, post.timezone),
        t.where(post.chat_id, ponds),
        pin=post.pin,
        recurring=post.kind == "every",
        needs_campaign=uses_campaign(post.text) and current_campaign(campaigns, day) is None,
    )
    return SendMessage(
        chat_id=post.preview_chat_id,
        text=control,
        reply_markup=preview_keyboard(post.id),
        reply_parameters=_replying(reply_to),
    )


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
    reply = _replying(reply_to)
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
