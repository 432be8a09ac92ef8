"""Texts of birthdays (`/birthday`, F10) and of the points expiry reminder (F14)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from aiogram import html
from aiogram.utils.i18n import gettext as _


def birthday_usage() -> str:
    return _(
        "Usage: /birthday MM-DD, e.g. <code>/birthday 11-05</code> — on the day you get a "
        "greeting and a gift of points. It can be changed once a year."
    )


def birthday_in_private_only() -> str:
    return _("🎂 Tell me your birthday in a private chat with me: /birthday MM-DD")


def birthday_bad(text: str) -> str:
    return _("“{text}” is not a month and day. Usage: /birthday MM-DD, e.g. 11-05").format(
        text=html.quote(text[:20])
    )


def birthday_shown(birthday: str | None) -> str:
    if birthday is None:
        return birthday_usage()
    return _("🎂 Your birthday: {birthday}. To change it: /birthday MM-DD").format(
        birthday=birthday
    )


def birthday_set(birthday: str, days_left: int) -> str:
    text = _("🎂 Birthday saved: {birthday}.").format(birthday=birthday)
    if days_left == 0:
        return text + " " + _("That's today — your gift is on its way!")
    return text + " " + _("{days} days to go. It can be changed once a year.").format(
        days=days_left
    )


def birthday_same(birthday: str) -> str:
    return _("🎂 Your birthday is {birthday} already.").format(birthday=birthday)


def birthday_too_soon(birthday: str, next_change: date) -> str:
    return _(
        "🎂 Your birthday is {birthday}; it can be changed once a year — next from "
        "{day}."
    ).format(birthday=birthday, day=next_change.isoformat())


def birthday_greeting(first_name: str, points: int) -> str:
    name = html.quote(first_name or "")
    if points > 0:
        return _("🎂 Happy birthday, {name}! A gift from the shop: {points} points.").format(
            name=name, points=points
        )
    return _("🎂 Happy birthday, {name}!").format(name=name)


def expiry_reminder(lots: Mapping[date, tuple[int, date]]) -> str:
    """One DM for the member's lots about to expire: points per day they expire."""
    by_day: dict[date, int] = {}
    for points, on in lots.values():
        by_day[on] = by_day.get(on, 0) + points
    lines = [_("⏳ Points about to expire:")]
    lines += [
        _("• {points} points on {day}").format(points=points, day=on.isoformat())
        for on, points in sorted(by_day.items())
    ]
    lines.append(_("Spend them before then: /shop, /draw."))
    return "\n".join(lines)
