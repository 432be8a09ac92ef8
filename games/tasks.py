"""Daily tasks (每日任务, SPEC F13): a member's task list of one day in one pond. Pure.

* The day is the pond's local day (`games.checkin.local_day`), like the check-in's.
* The list: the check-in, plus each kind of game the pond had that day — a vote opened
  that day, a guess round opened that day, a red packet dropped that day, and the
  lottery once anyone drew in the pond that day (its prizes are shop-wide; a draw in the
  pond is what shows it is played there). A cancelled vote or round and a recalled
  packet are undone: as if never opened. Several games of one kind are one task, done by
  taking part in any of them (a ballot, a guess, a grabbed share — or the packet one
  sent, which its sender cannot grab —, a draw).
* A task is `done`, `open` (not done, and the member still can: one of the day's games
  of that kind still takes part — a vote or round not closed, a packet with shares left
  and not expired, a prize in play — and the day is still today) or `over` (not done and
  no longer possible). An over task does not count against the member: packets run out
  by design, and nobody loses the bonus to a game they could not play any more.
* The bonus (`task_bonus`) is earned when the check-in is done, no task is open, and at
  least one game an operator opened that day (a vote, a guess round, a red packet) was
  done. A day without such a game is no task day: the standing lottery alone does not
  make one, so a plain check-in day pays the check-in and nothing more. It is paid once
  per member and day (shop-wide, however many ponds), and once paid it stays paid.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from games.checkin import zone


class Kind(StrEnum):
    checkin = "checkin"
    vote = "vote"
    guess = "guess"
    red_packet = "red_packet"
    lottery = "lottery"


# Games an operator opens for the day; the lottery stands (see the module docstring).
EVENTS = (Kind.vote, Kind.guess, Kind.red_packet)
ORDER = (Kind.checkin, *EVENTS, Kind.lottery)


class State(StrEnum):
    done = "done"
    open = "open"
    over = "over"


@dataclass(frozen=True, slots=True)
class Game:
    """What the pond had of one kind of game on the day, and what the member did."""

    offered: bool = False  # one was opened (dropped, drawn) in the pond that day
    joinable: bool = False  # one of them can still be joined now
    done: bool = False  # the member took part in one of them


@dataclass(frozen=True, slots=True)
class Facts:
    checked_in: bool
    games: dict[Kind, Game]
    today: bool  # the day is the pond's today (a past day: nothing is open any more)


@dataclass(frozen=True, slots=True)
class Task:
    kind: Kind
    state: State


@dataclass(frozen=True, slots=True)
class TaskList:
    tasks: tuple[Task, ...]
    task_day: bool  # an operator opened a game in the pond that day
    complete: bool  # the bonus is earned

    @property
    def left(self) -> int:
        return sum(1 for t in self.tasks if t.state is State.open)


def _state(done: bool, joinable: bool, today: bool) -> State:
    if done:
        return State.done
    return State.open if joinable and today else State.over


def task_list(facts: Facts) -> TaskList:
    tasks = [Task(Kind.checkin, _state(facts.checked_in, True, facts.today))]
    for kind in ORDER[1:]:
        game = facts.games.get(kind, Game())
        if game.offered or game.done:
            tasks.append(Task(kind, _state(game.done, game.joinable, facts.today)))
    task_day = any(facts.games.get(k, Game()).offered for k in EVENTS)
    complete = (
        facts.checked_in
        and task_day
        and all(t.state is not State.open for t in tasks)
        and any(t.state is State.done for t in tasks if t.kind in EVENTS)
    )
    return TaskList(tuple(tasks), task_day, complete)


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """The UTC instants where `day` begins and ends (exclusive) in `timezone`."""
    tz = zone(timezone)
    start = datetime.combine(day, time(), tz)
    end = datetime.combine(day + timedelta(days=1), time(), tz)
    return start.astimezone(UTC), end.astimezone(UTC)
