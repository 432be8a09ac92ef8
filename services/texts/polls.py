"""The shape of a button poll's texts — a vote's (services/texts/games.py) and a
survey's (services/texts/surveys.py): its post with live counts, its result, a press's
toast. Each feature passes its own translated lines (they name a vote or a survey);
the question and options are escaped here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from aiogram import html

from services.texts import clip, local_time

TOAST_MAX = 200  # answerCallbackQuery.text


class PollView(Protocol):
    @property
    def question(self) -> str: ...
    @property
    def options(self) -> tuple[str, ...]: ...
    @property
    def points(self) -> int: ...
    @property
    def closes_at(self) -> datetime: ...


def post(
    view: PollView,
    counts: Sequence[int],
    timezone: str,
    *,
    closed: bool,
    title: str,
    closed_line: str,
    open_line: str,
    points_line: str,
) -> str:
    """The poll's post: `title` ({question}), a line per option with its count, then
    `closed_line` ({total}) once closed, else `open_line` ({total}, {time}) and, with
    points, `points_line` ({points})."""
    total = sum(counts)
    lines = [title.format(question=html.quote(view.question)), ""]
    for option, n in zip(view.options, counts, strict=True):
        lines.append(f"{html.quote(option)} — <b>{n}</b>")
    lines.append("")
    if closed:
        lines.append(closed_line.format(total=total))
    else:
        lines.append(open_line.format(total=total, time=local_time(view.closes_at, timezone)))
        if view.points:
            lines.append(points_line.format(points=view.points))
    return "\n".join(lines)


def result(view: PollView, counts: Sequence[int], *, title: str, total_line: str) -> str:
    """The poll's result: `title` ({question}), the options most chosen first with their
    counts and shares, then `total_line` ({total})."""
    total = sum(counts)
    lines = [title.format(question=html.quote(view.question))]
    ranked = sorted(range(len(counts)), key=lambda i: (-counts[i], i))
    for i in ranked:
        share = f"{100 * counts[i] / total:.0f}%" if total else "0%"
        lines.append(f"{html.quote(view.options[i])} — <b>{counts[i]}</b> ({share})")
    lines.append(total_line.format(total=total))
    return "\n".join(lines)


def toast(
    kind: str, option: str, paid: int, *, changed: str, same: str, done: str, points: str
) -> str:
    """A press's toast ({option}): `changed`, `same` or `done` by the press's `kind`,
    after `points` ({points}) when it paid. Toasts are plain text (no HTML): nothing to
    escape."""
    if kind == "changed":
        text = changed.format(option=option)
    elif kind == "same":
        text = same.format(option=option)
    else:
        text = done.format(option=option)
    if paid:
        text = points.format(points=paid) + text
    return clip(text, TOAST_MAX)
