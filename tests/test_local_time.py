"""One timezone fallback: an unknown zone name reads as the shop's default zone
(Asia/Shanghai) in every day computation and every time a text shows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from games.checkin import DEFAULT_TIMEZONE, local_day, zone
from services.texts import local_time
from services.texts import promo as promo_texts

AT = datetime(2025, 3, 1, 17, 30, tzinfo=UTC)  # 01:30 the next day in Shanghai


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "Asia", "../etc", "UTC "])
def test_an_unknown_zone_is_the_shops_default(name: str) -> None:
    assert zone(name) == zone(DEFAULT_TIMEZONE)
    assert local_day(AT, name) == date(2025, 3, 2)
    assert local_time(AT, name) == "03-02 01:30"
    assert promo_texts.local(AT, name) == "2025-03-02 01:30"


def test_a_known_zone_is_used() -> None:
    assert local_time(AT, "UTC") == "03-01 17:30"
    assert local_time(AT, "Europe/Berlin", "%Y-%m-%d %H:%M") == "2025-03-01 18:30"
    assert local_day(AT, "UTC") == date(2025, 3, 1)


@pytest.mark.parametrize("name", ["Mars/Olympus", "Asia", "../etc"])
def test_the_default_zone_of_new_ponds_must_be_a_zone(name: str) -> None:
    from pydantic import ValidationError

    from bot.config import Settings

    with pytest.raises(ValidationError, match="unknown time zone"):
        Settings(bot_token="1:a", tz=name)
