"""aiogram's gettext-based i18n, with the catalogues shipped in `services/locales`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiogram.utils.i18n import I18n

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "pondbot"
LANGUAGES = ("zh", "en")


def make_i18n(default_locale: str = "zh") -> I18n:
    return I18n(path=LOCALES_DIR, default_locale=default_locale, domain=DOMAIN)


@contextmanager
def speaking(i18n: I18n, language: str) -> Iterator[None]:
    """Texts inside the block speak `language` (a pond's); a language without a
    catalogue speaks the default one."""
    if language not in i18n.available_locales:
        language = i18n.default_locale
    with i18n.context(), i18n.use_locale(language):
        yield
