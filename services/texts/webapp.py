"""Texts of `/me`, the members' page (F15). The page's own words are in its static files
(`bot/webapp_static/`), in both languages, chosen by the member's Telegram language."""

from __future__ import annotations

from aiogram import html
from aiogram.utils.i18n import gettext as _


def button() -> str:
    return _("📱 My page")


def opened() -> str:
    return _(
        "📱 Your members' page: balance, points history, this month's check-ins and the "
        "shop. Tap the button below."
    )


def sent_to_dm(name: str) -> str:
    return _("📱 {name}, I sent your members' page to our private chat.").format(
        name=html.quote(name)
    )


def start_first(name: str) -> str:
    return _(
        "📱 {name}, open a private chat with me and send /start first, then /me again: "
        "your members' page opens there."
    ).format(name=html.quote(name))


def not_set_up() -> str:
    return _("📱 The members' page is not set up for this shop yet.")
