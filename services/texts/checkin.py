"""Texts of the daily check-in (签到). Names are escaped here, once."""

from __future__ import annotations

from datetime import date

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.checkin import Reward
from services.texts import place, short_name
from storage.checkin import BoardView, StreakRow


def button() -> str:
    return _("✅ Check in")


def board(view: BoardView) -> str:
    lines = [
        _("📅 <b>Daily check-in</b> · {day}").format(day=view.day.strftime("%m-%d")),
        _("Checked in today: <b>{count}</b>").format(count=view.count),
    ]
    if view.latest:
        names = ", ".join(short_name(n) for n in view.latest)
        lines.append(_("Latest: {names}").format(names=names))
    lines.append(_("Tap the button below or type 签到. Daily streaks earn bonus points!"))
    return "\n".join(lines)


def _milestone(reward: Reward) -> str:
    """The bonus line of a check-in that reached a milestone ("" for the others)."""
    if not reward.milestone:
        return ""
    return "\n" + _("🎉 {days}-day streak bonus: +{bonus}").format(
        days=reward.streak, bonus=reward.milestone
    )


def toast(reward: Reward, rank: int | None) -> str:
    text = _("✅ Checked in: +{points} points · streak {streak} days").format(
        points=reward.points, streak=reward.streak
    )
    if rank:
        text += " · " + _("#{rank} today").format(rank=rank)
    return text + _milestone(reward)


def toast_already(streak: int) -> str:
    return _("You have already checked in today 👍 (streak {streak} days)").format(streak=streak)


def done(
    name: str, reward: Reward, rank: int | None, balance: int, *, late: date | None = None
) -> str:
    """A check-in credited; `late`: the earlier day it counts for (it was typed then)."""
    text = _("✅ {name} checked in: +{points} points, streak {streak} days. Balance {balance}."
             ).format(name=html.quote(name), points=reward.points, streak=reward.streak,
                      balance=balance)
    if late is not None:
        text += " " + _("(Counted for {day}, when you sent it.)").format(
            day=late.strftime("%m-%d"))
    elif rank:
        text += " " + _("#{rank} today.").format(rank=rank)
    return text + _milestone(reward)


def already(name: str, streak: int) -> str:
    return _("{name}, you have already checked in today 👍 (streak {streak} days)").format(
        name=html.quote(name), streak=streak
    )


def button_not_here() -> str:
    return _("This button does not belong to this chat.")


def groups_only() -> str:
    return _("Check-in works in the pond's group: type 签到 there.")


def members_only() -> str:
    return _("Only members can check in.")


def makeup_done(name: str, day: date, cost: int, streak: int, balance: int) -> str:
    return _(
        "🩹 {name} made up {day} for {cost} points: streak {streak} days. Balance {balance}."
    ).format(name=html.quote(name), day=day.strftime("%m-%d"), cost=cost, streak=streak,
             balance=balance)


def makeup_refused(
    code: str,
    *,
    cost: int,
    balance: int,
    every_days: int,
    day: date | None = None,
    streak: int = 0,
) -> str:
    if code == "would_not_lengthen" and day is not None:
        return _(
            "⚠️ Making up {day} would leave your streak at {streak} days: more than one day "
            "was missed in a row, so it would not lengthen it. Nothing was charged."
        ).format(day=day.strftime("%m-%d"), streak=streak)
    if code == "used_recently":
        return _("⚠️ You can make up a check-in once every {days} days.").format(days=every_days)
    if code == "not_enough_points":
        return _("⚠️ A make-up costs {cost} points; you have {balance}.").format(
            cost=cost, balance=balance
        )
    return _("⚠️ There is no missed day to make up.")


def top_streaks(rows: list[StreakRow]) -> str:
    if not rows:
        return _("🔥 No streaks yet: type 签到 to start one!")
    lines = [_("🔥 <b>Streak leaderboard</b>")]
    for i, row in enumerate(rows, start=1):
        lines.append(
            _("{place} {name} — {streak} days").format(
                place=place(i), name=short_name(row.display_name), streak=row.streak
            )
        )
    return "\n".join(lines)
