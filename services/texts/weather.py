"""Texts for when Telegram is not answering (see `bot.weather`)."""

from __future__ import annotations

from aiogram.utils.i18n import gettext as _


def telegram_not_answering() -> str:
    return _("⏳ Telegram is not answering just now. Please try again in a minute.")
