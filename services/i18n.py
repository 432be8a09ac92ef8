"""aiogram's gettext-based i18n, with the catalogues shipped in `services/locales`."""

from __future__ import annotations

from pathlib import Path

from aiogram.utils.i18n import I18n

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "pondbot"
LANGUAGES = ("zh", "en")


def make_i18n(default_locale: str = "zh") -> I18n:
    return I18n(path=LOCALES_DIR, default_locale=default_locale, domain=DOMAIN)
