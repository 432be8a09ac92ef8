"""Daily check-in rules (签到): days, streaks, rewards and make-ups. Pure functions.

* A day is a calendar day in the pond's timezone; `local_day` is the only place that
  turns an instant into a day.
* A check-in counts at the moment it was made: its message's `date` (a button press:
  when it is handled), so a 签到 typed before midnight and delivered after it (the bot
  was down) counts for the day it was typed. `checkin_moment` keeps that moment within
  what Telegram can really deliver: it keeps an undelivered update for 24 hours, so an
  older date is taken as 24 hours ago, and a date ahead of our clock (beyond a small
  lead of Telegram's clock over ours) as now.
* A member checks in at most once per day, shop-wide, and only forward in time: a
  check-in for a day on or before the last one is "already checked in" (a member who
  checked in in Shanghai cannot check in again for the same or an earlier day in a pond
  whose clock is behind). The one exception is a late delivery (`decide_late`): a
  check-in for an earlier day that has none, made before the member's latest check-in
  was made, is credited for its own day — it only arrived out of order.
* The streak counts consecutive days ending at the last check-in. Checking in the day
  after the last one grows it; any gap restarts it at 1. A streak whose last day is
  before yesterday is broken: shown as 0.
* Reward of the check-in that reaches streak `s`:
  `base + min((s - 1) * streak_step, streak_cap)` in one `checkin` ledger entry, plus the
  milestone bonus for `s` (if `s` is a milestone) in a separate `streak_bonus` entry.
* Make-up (补签) fills the most recent missed day: the latest day `M` before today
  without a check-in, provided `M` lies within the last `window` days and the member
  checked in at least once before `M` (there is a streak to mend). The streak is then
  recomputed as the run of consecutive days ending at the last checked-in day. A make-up
  pays no reward and no milestone; it costs points and can be used once per
  `every_days` days. A make-up that would not lengthen the member's streak (two or more
  days missed in a row since the last check-in: the filled day would stand alone) is
  refused, so nobody pays for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Shanghai"
ONE_DAY = timedelta(days=1)
# Telegram keeps an update it could not deliver for this long.
REDELIVERY_WINDOW = timedelta(hours=24)
# How far Telegram's clock (a message's `date`) may run ahead of ours and still be taken
# at its word.
CLOCK_LEAD = timedelta(minutes=5)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The named timezone; an unknown name falls back to the default one. (With the
    `tzdata` package installed, a region such as `Asia` names a folder of it: an OSError,
    not ZoneInfoNotFoundError.)"""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def local_day(now: datetime, timezone: str) -> date:
    """The calendar day `now` (timezone-aware) falls on in `timezone`."""
    if now.tzinfo is None:
        raise ValueError("local_day needs a timezone-aware instant")
    return now.astimezone(zone(timezone)).date()


def checkin_moment(sent: datetime | None, now: datetime) -> datetime:
    """The moment a check-in counts at: `sent`, its message's date (None: a button press,
    which counts when handled), kept within `REDELIVERY_WINDOW` before `now` and no
    later than `now` (a date within `CLOCK_LEAD` ahead is Telegram's clock, kept: the
    same message then always falls on the same day)."""
    if sent is None or sent > now + CLOCK_LEAD:
        return now
    return max(sent, now - REDELIVERY_WINDOW)


@dataclass(frozen=True, slots=True)
class Rules:
    base: int = 5
    streak_step: int = 1
    streak_cap: int = 5
    milestones: Mapping[int, int] = field(default_factory=lambda: {7: 20, 30: 100})


@dataclass(frozen=True, slots=True)
class Reward:
    streak: int
    points: int  # base + streak bonus: the `checkin` entry
    milestone: int  # the `streak_bonus` entry (0: none)

    @property
    def total(self) -> int:
        return self.points + self.milestone


def next_streak(last_day: date | None, last_streak: int, day: date) -> int | None:
    """The streak after checking in on `day`; None if `day` is not after `last_day`."""
    if last_day is None:
        return 1
    if day <= last_day:
        return None
    return last_streak + 1 if day - last_day == ONE_DAY else 1


def reward(rules: Rules, streak: int) -> Reward:
    bonus = min(max(streak - 1, 0) * rules.streak_step, rules.streak_cap)
    return Reward(streak, rules.base + bonus, rules.milestones.get(streak, 0))


@dataclass(frozen=True, slots=True)
class Decision:
    """What one check-in request does: `reward` None means already checked in."""

    day: date
    reward: Reward | None


def decide(rules: Rules, last_day: date | None, last_streak: int, day: date) -> Decision:
    streak = next_streak(last_day, last_streak, day)
    return Decision(day, None if streak is None else reward(rules, streak))


@dataclass(frozen=True, slots=True)
class LateDecision:
    """A late check-in credited for its own day, before the member's last one."""

    reward: Reward  # for the streak reached on the late day
    streak: int  # the member's streak at their last day afterwards


def decide_late(rules: Rules, days: Iterable[date], last_day: date, day: date
                ) -> LateDecision | None:
    """A check-in for `day`, earlier than the member's `last_day`, that arrived late;
    None if `day` has a check-in already. `days`: the member's checked-in days. The
    caller checks that it was made before the last one (see the module docstring).
    The check-ins after it keep what they were paid; the streak they carry on is the
    run through both."""
    have = set(days)
    if day in have or day >= last_day:
        return None
    have.add(day)
    return LateDecision(reward(rules, streak_ending(have, day)), streak_ending(have, last_day))


def current_streak(last_day: date | None, streak: int, today: date) -> int:
    """The streak as shown today: 0 once a day was missed."""
    if last_day is None or last_day < today - ONE_DAY:
        return 0
    return streak


def streak_ending(days: Iterable[date], end: date) -> int:
    """Length of the run of consecutive days in `days` that ends at `end`."""
    have = set(days)
    n = 0
    day = end
    while day in have:
        n += 1
        day -= ONE_DAY
    return n


class MakeupRefused(Exception):
    def __init__(self, code: str, *, day: date | None = None, streak: int = 0) -> None:
        super().__init__(code)
        self.code = code  # nothing_to_make_up | would_not_lengthen | used_recently
        self.day = day  # would_not_lengthen: the day it would fill,
        self.streak = streak  # and the streak it would leave


@dataclass(frozen=True, slots=True)
class Makeup:
    day: date  # the day filled in
    last_day: date  # the member's last checked-in day afterwards
    streak: int  # the streak at `last_day` afterwards


def makeup_target(days: Iterable[date], today: date, window: int) -> date | None:
    """The most recent missed day before `today` within `window` days, after the
    member's first check-in; None when there is none."""
    have = {d for d in days if d < today}
    if not have:
        return None
    first = min(have)
    day = today - ONE_DAY
    oldest = today - timedelta(days=window)
    while day >= oldest and day > first:
        if day not in have:
            return day
        day -= ONE_DAY
    return None


def plan_makeup(
    days: Iterable[date],
    today: date,
    *,
    window: int,
    last_makeup_day: date | None,
    every_days: int,
) -> Makeup:
    """Decide a make-up; raises `MakeupRefused`. `last_makeup_day`: the local day of
    the member's previous make-up (when it was bought, not the day it filled)."""
    all_days = set(days)
    target = makeup_target(all_days, today, window)
    if target is None:
        raise MakeupRefused("nothing_to_make_up")
    last = max(all_days)
    before = streak_ending(all_days, last)
    filled = all_days | {target}
    new_last = max(last, target)
    after = streak_ending(filled, new_last)
    if after <= before:
        # Two or more days missed in a row since the last check-in: the filled day
        # stands alone, and the streak would be no longer than the member's last one.
        raise MakeupRefused("would_not_lengthen", day=target, streak=after)
    if last_makeup_day is not None and today - last_makeup_day < timedelta(days=every_days):
        raise MakeupRefused("used_recently")
    return Makeup(target, new_last, after)
