"""Sale campaigns (大促): phases around a sale day, and post texts with placeholders.

A campaign is a sale day (11-11, 6-18 …) and four phases, each a range of local days:

* 蓄势 build-up — from 71 days before to 11 days before (Sep 1 – Oct 31 for 11-11);
* 预热 warm-up — 10 days before to the day before (11-01 – 11-10);
* 冲刺 sprint — the sale day itself;
* 余温 after-glow — the 3 days after.

Every range can be changed per campaign. Where phases overlap the more urgent one wins
(sprint, then warm-up, after-glow, build-up). Post texts may use `{campaign}`, `{phase}`,
`{days_left}` and `{date}`; they are filled in when the post is sent. Pure functions:
days are passed in, already in the pond's timezone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from games.checkin import zone
from games.parsing import ParseError, fold


class Phase(StrEnum):
    buildup = "buildup"
    warmup = "warmup"
    sprint = "sprint"
    afterglow = "afterglow"


# Timeline order, and which phase wins a day two phases share.
TIMELINE: tuple[Phase, ...] = (Phase.buildup, Phase.warmup, Phase.sprint, Phase.afterglow)
PRECEDENCE: tuple[Phase, ...] = (Phase.sprint, Phase.warmup, Phase.afterglow, Phase.buildup)

# (first day, last day) relative to the sale day.
DEFAULT_OFFSETS: Mapping[Phase, tuple[int, int]] = {
    Phase.buildup: (-71, -11),
    Phase.warmup: (-10, -1),
    Phase.sprint: (0, 0),
    Phase.afterglow: (1, 3),
}

PHASE_NAMES: Mapping[str, Phase] = {
    "蓄势": Phase.buildup,
    "buildup": Phase.buildup,
    "build-up": Phase.buildup,
    "预热": Phase.warmup,
    "warmup": Phase.warmup,
    "warm-up": Phase.warmup,
    "冲刺": Phase.sprint,
    "sprint": Phase.sprint,
    "余温": Phase.afterglow,
    "afterglow": Phase.afterglow,
    "after-glow": Phase.afterglow,
}

MAX_NAME = 32
_NAME = re.compile(r"[^\s{}<>&]{1,32}")
_MMDD = re.compile(r"(\d{1,2})-(\d{1,2})")


@dataclass(frozen=True, slots=True)
class DayRange:
    first: date
    last: date

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.first <= day <= self.last


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    sale_day: date
    # Phases changed from the defaults; the others follow the sale day.
    overrides: Mapping[Phase, DayRange] = field(default_factory=dict)

    def phase_range(self, phase: Phase) -> DayRange:
        if phase in self.overrides:
            return self.overrides[phase]
        first, last = DEFAULT_OFFSETS[phase]
        return DayRange(self.sale_day + timedelta(days=first), self.sale_day + timedelta(days=last))

    def timeline(self) -> list[tuple[Phase, DayRange]]:
        return [(p, self.phase_range(p)) for p in TIMELINE]

    @property
    def span(self) -> DayRange:
        ranges = [r for _p, r in self.timeline()]
        return DayRange(min(r.first for r in ranges), max(r.last for r in ranges))

    def phase_on(self, day: date) -> Phase | None:
        for phase in PRECEDENCE:
            if day in self.phase_range(phase):
                return phase
        return None

    def days_left(self, day: date) -> int:
        """Whole days until the sale day (0 on the day and after it)."""
        return max(0, (self.sale_day - day).days)


def default_phases(sale_day: date) -> list[tuple[Phase, DayRange]]:
    return Campaign("", sale_day).timeline()


def current_campaign(campaigns: Iterable[Campaign], day: date) -> Campaign | None:
    """The campaign a post on `day` speaks of: one whose timeline covers the day, the
    soonest sale first (a campaign already in its after-glow yields to one ahead)."""
    covering = [c for c in campaigns if day in c.span]
    if not covering:
        return None
    ahead = [c for c in covering if c.sale_day >= day]
    pool = ahead or covering
    return min(pool, key=lambda c: (abs((c.sale_day - day).days), c.name))


def phase_on(campaigns: Iterable[Campaign], day: date) -> Phase | None:
    campaign = current_campaign(campaigns, day)
    return None if campaign is None else campaign.phase_on(day)


# -- what is scheduled in each phase ----------------------------------------------------

# At most this many times of one recurring post are walked per campaign: bounds the work
# of a timeline for a cron that fires often (every minute …); a daily or weekly post is
# counted exactly over even the longest phases (75 days by default, ≤ 367 when changed).
MAX_WALK = 400


@dataclass(frozen=True, slots=True)
class PhaseRuns:
    """How many times a recurring post fires in each phase; `complete` is False when the
    walk stopped at `MAX_WALK` before the campaign's end (the counts are then at least)."""

    counts: Mapping[Phase, int]
    complete: bool = True


def local_day(at: datetime, timezone: str) -> date:
    return at.astimezone(zone(timezone)).date()


def phase_at(campaign: Campaign, at: datetime, timezone: str) -> Phase | None:
    """The phase a one-off post at `at` falls in (its local day in `timezone`)."""
    return campaign.phase_on(local_day(at, timezone))


def phase_runs(
    campaign: Campaign,
    first: datetime,
    next_time: Callable[[datetime], datetime | None],
    timezone: str,
    *,
    limit: int = MAX_WALK,
) -> PhaseRuns:
    """Count a recurring post's times per phase. `first` is its next time; `next_time(t)`
    gives the time after `t` (None: no more). The walk starts at the campaign's first day
    (times before it count for no phase) and stops after its last day or `limit` times."""
    start = datetime.combine(campaign.span.first, time(), zone(timezone)).astimezone(UTC)
    at: datetime | None = first
    if first < start:
        at = next_time(start - timedelta(seconds=1))
    counts: Counter[Phase] = Counter()
    for _ in range(limit):
        if at is None or local_day(at, timezone) > campaign.span.last:
            return PhaseRuns(dict(counts))
        phase = campaign.phase_on(local_day(at, timezone))
        if phase is not None:
            counts[phase] += 1
        at = next_time(at)
    complete = at is None or local_day(at, timezone) > campaign.span.last
    return PhaseRuns(dict(counts), complete)


# -- placeholders ---------------------------------------------------------------------

PLACEHOLDERS = ("campaign", "phase", "days_left", "date")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]{1,20})\}")


def render(
    text: str,
    campaigns: Iterable[Campaign],
    day: date,
    phase_labels: Mapping[Phase, str],
) -> str:
    """Fill in `{campaign}`, `{phase}`, `{days_left}`, `{date}` for a post sent on `day`.

    Without a campaign covering the day they become empty (`{date}`: the day itself).
    Anything else in braces is left exactly as written; this never raises."""
    campaign = current_campaign(campaigns, day)
    values: dict[str, str]
    if campaign is None:
        values = {"campaign": "", "phase": "", "days_left": "", "date": _mmdd(day)}
    else:
        phase = campaign.phase_on(day)
        values = {
            "campaign": campaign.name,
            "phase": phase_labels.get(phase, "") if phase else "",
            "days_left": str(campaign.days_left(day)),
            "date": _mmdd(campaign.sale_day),
        }

    def fill(m: re.Match[str]) -> str:
        return values.get(m.group(1), m.group(0))

    return _PLACEHOLDER.sub(fill, text)


def uses_campaign(text: str) -> bool:
    """Whether the text has a placeholder that needs a campaign."""
    return any(
        m.group(1) in ("campaign", "phase", "days_left") for m in _PLACEHOLDER.finditer(text)
    )


def widest_render(text: str, longest_phase_label: int) -> str:
    """The text with every placeholder at its widest (for the size check before a post is
    scheduled: whatever the day, the sent text is no longer than this)."""
    widths = {"campaign": MAX_NAME, "phase": longest_phase_label, "days_left": 4, "date": 5}
    return _PLACEHOLDER.sub(lambda m: "x" * widths.get(m.group(1), len(m.group(0))), text)


def _mmdd(day: date) -> str:
    return f"{day.month:02d}-{day.day:02d}"


# -- parsing --------------------------------------------------------------------------


def parse_name(text: str) -> str:
    name = fold(text)
    if not _NAME.fullmatch(name) or name.startswith("/"):
        raise ParseError("bad_name")
    return name


def parse_phase(text: str) -> Phase:
    phase = PHASE_NAMES.get(fold(text).lower())
    if phase is None:
        raise ParseError("bad_phase")
    return phase


def _month_day(text: str) -> tuple[int, int]:
    m = _MMDD.fullmatch(fold(text))
    if m is None:
        raise ParseError("bad_date")
    month, day = int(m.group(1)), int(m.group(2))
    try:
        date(2024, month, day)  # a leap year: 02-29 is a valid month-day
    except ValueError:
        raise ParseError("bad_date") from None
    return month, day


def _on(year: int, month: int, day: int) -> date:
    try:
        return date(year, month, day)
    except ValueError:  # 02-29 outside a leap year
        return date(year, 2, 28)


def next_sale_day(text: str, today: date) -> date:
    """`MM-DD` as the next such day, today included."""
    month, day = _month_day(text)
    this_year = _on(today.year, month, day)
    return this_year if this_year >= today else _on(today.year + 1, month, day)


def near(text: str, anchor: date) -> date:
    """`MM-DD` as the such day closest to `anchor` (phase dates around a sale day)."""
    month, day = _month_day(text)
    candidates = [_on(anchor.year + k, month, day) for k in (-1, 0, 1)]
    return min(candidates, key=lambda d: abs((d - anchor).days))


def parse_range(text: str, sale_day: date) -> DayRange:
    """`MM-DD..MM-DD` (or a single `MM-DD`) near the sale day."""
    s = fold(text).replace("～", "..").replace("~", "..").replace("—", "..")
    first_s, sep, last_s = s.partition("..")
    first = near(first_s, sale_day)
    last = near(last_s, sale_day) if sep else first
    if last < first:
        raise ParseError("bad_range")
    if (last - first).days > 366:
        raise ParseError("bad_range")
    return DayRange(first, last)
