"""Texts of the daily tasks (`/tasks`, SPEC F13)."""

from __future__ import annotations

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.tasks import Kind, State, TaskList
from services.texts import N_

NAMES: dict[Kind, str] = {
    Kind.checkin: N_("Check in (签到)"),
    Kind.vote: N_("Vote in today's vote"),
    Kind.guess: N_("Guess in today's price round"),
    Kind.red_packet: N_("Grab a share of today's red packet"),
    Kind.lottery: N_("Draw in the lottery (/draw)"),
}
MARKS = {State.done: "✅", State.open: "⬜", State.over: "➖"}


def task_list(name: str, tasks: TaskList, *, bonus: int, paid: bool) -> str:
    lines = [_("📋 <b>Today's tasks</b> — {name}").format(name=html.quote(name))]
    for task in tasks.tasks:
        line = f"{MARKS[task.state]} {_(NAMES[task.kind])}"
        if task.state is State.over:
            line += " " + _("(over — not counted)")
        lines.append(line)
    lines.append("")
    if paid and tasks.complete:
        lines.append(_("🎉 All done: the bonus of {bonus} points is paid.").format(bonus=bonus))
    elif paid:
        lines.append(_("🎉 Today's bonus is paid already (one a day, whichever pond)."))
    elif not tasks.task_day:
        lines.append(_(
            "No game in the pond today yet: the bonus is for days with a vote, a price "
            "round or a red packet."
        ))
    elif bonus <= 0:
        lines.append(_("No bonus is set for today's tasks."))
    elif tasks.left:
        lines.append(_("{left} to go for the bonus of {bonus} points.").format(
            left=tasks.left, bonus=bonus))
    else:
        lines.append(_("Today's games are over without you: no bonus today."))
    return "\n".join(lines)


def bonus_paid(bonus: int, balance: int) -> str:
    return _("🎉 Every task of today is done: +{bonus} points. Balance {balance}.").format(
        bonus=bonus, balance=balance)


def private_only_in_ponds() -> str:
    return _("Daily tasks are per pond: send /tasks in the pond's group.")
