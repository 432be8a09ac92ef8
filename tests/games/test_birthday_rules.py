"""Birthday rules (F10): the forms `/birthday` reads, the day celebrated (02-29 on 02-28
in a year without one), and when a birthday may change again."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from games import birthday as rules


@pytest.mark.parametrize(
    ("text", "value"),
    [("11-05", "11-05"), ("11/5", "11-05"), ("１１－０５", "11-05"), ("11月5日", "11-05"),
     ("2-29", "02-29"), (" 12.31 ", "12-31")],
)
def test_forms_read(text: str, value: str) -> None:
    assert rules.parse(text) == value


@pytest.mark.parametrize("text", ["13-01", "02-30", "00-10", "11-00", "1105", "soon", "11-05x", ""])
def test_not_a_day_of_the_calendar(text: str) -> None:
    with pytest.raises(rules.BadBirthday):
        rules.parse(text)


def test_february_29() -> None:
    assert rules.celebrated_on("02-29", 2027) == date(2027, 2, 28)
    assert rules.celebrated_on("02-29", 2028) == date(2028, 2, 29)
    assert rules.celebrated_on("02-29", 2100) == date(2100, 2, 28)  # no leap day in 2100
    assert rules.birthdays_on(date(2027, 2, 28)) == ("02-28", "02-29")
    assert rules.birthdays_on(date(2028, 2, 28)) == ("02-28",)
    assert rules.due("02-29", datetime(2027, 2, 28, 9), 9)
    assert not rules.due("02-29", datetime(2027, 2, 28, 8, 59), 9)
    assert not rules.due("02-29", datetime(2027, 3, 1, 9), 9)


def test_changeable_once_a_year() -> None:
    assert rules.may_change(None, date(2026, 1, 1))
    assert not rules.may_change(date(2026, 3, 1), date(2027, 2, 28))
    assert rules.may_change(date(2026, 3, 1), date(2027, 3, 1))
    assert rules.next_change(date(2028, 2, 29)) == date(2029, 2, 28)
    assert rules.days_until("11-05", date(2026, 11, 5)) == 0
    assert rules.days_until("11-05", date(2026, 11, 6)) == 364
