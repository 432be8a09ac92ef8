"""Birthdays (SPEC F10): registering one, when it is celebrated, when it may change.

A birthday is a month and a day, `MM-DD`, kept on the member (the person: one wallet,
one birthday, whichever ponds they are in). 02-29 is celebrated on 02-28 in the years
without one. It can be set freely the first time and then changed once a year: the
next change is allowed from the same date a year after the last one.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from games.parsing import fold

_MM_DD = re.compile(r"(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?")
LEAP = 2000  # a leap year: every MM-DD of the calendar is a day in it


class BadBirthday(ValueError):
    """Not a month and day of the calendar."""


def parse(text: str) -> str:
    """`MM-DD` from `11-05`, `11/5`, `１１-０５` or `11月5日`; raises `BadBirthday`."""
    m = _MM_DD.fullmatch(fold(text))
    if m is None:
        raise BadBirthday(text)
    month, day = int(m.group(1)), int(m.group(2))
    try:
        date(LEAP, month, day)
    except ValueError:
        raise BadBirthday(text) from None
    return f"{month:02d}-{day:02d}"


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def celebrated_on(birthday: str, year: int) -> date:
    """The day `birthday` (`MM-DD`) is celebrated in `year`: 02-29 on 02-28 off leap years."""
    month, day = int(birthday[:2]), int(birthday[3:])
    if (month, day) == (2, 29) and not _is_leap(year):
        return date(year, 2, 28)
    return date(year, month, day)


def birthdays_on(day: date) -> tuple[str, ...]:
    """The `MM-DD` values celebrated on `day` (02-28 also takes 02-29 off leap years)."""
    own = f"{day.month:02d}-{day.day:02d}"
    if (day.month, day.day) == (2, 28) and not _is_leap(day.year):
        return (own, "02-29")
    return (own,)


def due(birthday: str, local_now: datetime, hour: int) -> bool:
    """Whether the greeting of `birthday` is due at `local_now` (the shop's local time):
    its day this year, at or after `hour`."""
    today = local_now.date()
    return celebrated_on(birthday, today.year) == today and local_now.hour >= hour


def next_change(set_on: date) -> date:
    """The first day a birthday set on `set_on` may be changed again (a year later;
    set on 02-29: from 02-28 of a year without one)."""
    try:
        return set_on.replace(year=set_on.year + 1)
    except ValueError:
        return date(set_on.year + 1, 2, 28)


def may_change(set_on: date | None, today: date) -> bool:
    return set_on is None or today >= next_change(set_on)


def days_until(birthday: str, today: date) -> int:
    """Days from `today` to the next celebration (0: today)."""
    this_year = celebrated_on(birthday, today.year)
    if this_year >= today:
        return (this_year - today).days
    return (celebrated_on(birthday, today.year + 1) - today).days


__all__ = [
    "BadBirthday", "birthdays_on", "celebrated_on", "days_until", "due", "may_change",
    "next_change", "parse",
]
