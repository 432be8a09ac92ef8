"""F11 decisions as pure functions: which post a refused one collides with over several
ponds, how late a post may still go out, who may confirm a preview, and what a campaign's
timeline counts in each phase (the walk over a recurring post's times)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from games.campaign import MAX_WALK, Campaign, DayRange, Phase, local_day, phase_at, phase_runs
from games.promo import (
    CapRefusal,
    CapVerdict,
    ConfirmRight,
    cap_refusal,
    confirm_right,
    draft_author,
    grace,
    over_cap,
    within_grace,
)
from games.settings import PondSettings
from scheduler.core import next_cron_time

TZ = "Asia/Shanghai"
DOUBLE_11 = Campaign("双十一", date(2026, 11, 11))  # build-up 09-01..10-31: 61 days


def utc(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


# -- the cap over several ponds -------------------------------------------------------------


def test_no_refusal_when_every_pond_allows() -> None:
    verdicts = {1: CapVerdict(True), 2: CapVerdict(True)}
    assert cap_refusal(verdicts, [1, 2]) is None
    assert over_cap(verdicts) == frozenset()
    assert cap_refusal({}, []) is None


def test_refusal_quotes_the_first_refused_pond_and_the_latest_next_time() -> None:
    verdicts = {
        1: CapVerdict(True),
        2: CapVerdict(False, utc(10, 21), utc(10, 28)),
        3: CapVerdict(False, utc(10, 19), utc(10, 30)),
        4: CapVerdict(False, utc(10, 24), utc(10, 26)),
    }
    # Pond 2 comes first in the targets' order: its collision is the one quoted. The
    # whole post fits only once every refused pond allows it: the latest next time.
    assert cap_refusal(verdicts, [1, 2, 3, 4]) == CapRefusal(2, utc(10, 21), utc(10, 30), 3)
    # The order of the targets decides which pond is quoted, not the mapping's order.
    assert cap_refusal(verdicts, [4, 3, 2, 1]) == CapRefusal(4, utc(10, 24), utc(10, 30), 3)
    assert over_cap(verdicts) == frozenset({2, 3, 4})


def test_refused_ponds_without_a_next_time_give_none_or_the_others() -> None:
    assert cap_refusal({5: CapVerdict(False)}, [5]) == CapRefusal(5, None, None, 1)
    both = {5: CapVerdict(False), 6: CapVerdict(False, utc(10, 1), utc(10, 8))}
    assert cap_refusal(both, [5, 6]) == CapRefusal(5, None, utc(10, 8), 2)


# -- grace -------------------------------------------------------------------------------


def test_a_ponds_post_has_its_ponds_grace_and_a_broadcast_the_default() -> None:
    assert grace(PondSettings(promo_grace_minutes=45)) == timedelta(minutes=45)
    assert grace(PondSettings(promo_grace_minutes=0)) == timedelta(0)
    assert grace(None) == timedelta(minutes=PondSettings().promo_grace_minutes)
    assert grace(None) == timedelta(minutes=10)


@pytest.mark.parametrize(
    ("late", "allowed", "sent"),
    [
        (timedelta(0), timedelta(minutes=10), True),  # on time
        (timedelta(minutes=10), timedelta(minutes=10), True),  # exactly at the limit
        (timedelta(minutes=10, microseconds=1), timedelta(minutes=10), False),
        (timedelta(hours=3), timedelta(minutes=10), False),
        (timedelta(0), timedelta(0), True),  # no grace: only on the dot
        (timedelta(seconds=1), timedelta(0), False),
        (timedelta(seconds=-5), timedelta(0), True),  # early (a clock a little ahead)
    ],
)
def test_within_grace_boundaries(late: timedelta, allowed: timedelta, sent: bool) -> None:
    due = utc(10, 20)
    assert within_grace(due, due + late, allowed) is sent


# -- who may confirm ------------------------------------------------------------------------

GROUP = -100123
AUTHOR, OTHER = 11, 22


def test_the_author_of_a_draft_is_the_member_or_the_anonymous_admins_group() -> None:
    assert draft_author(AUTHOR, None, GROUP) == AUTHOR
    assert draft_author(AUTHOR, GROUP, GROUP) == AUTHOR  # a user id always wins
    assert draft_author(None, GROUP, GROUP) == GROUP  # an anonymous admin: the group
    assert draft_author(None, -100999, GROUP) is None  # a channel speaking in the group
    assert draft_author(None, None, GROUP) is None


def test_only_the_author_confirms_a_members_preview() -> None:
    assert confirm_right(AUTHOR, GROUP, AUTHOR) == ConfirmRight.yes
    assert confirm_right(AUTHOR, GROUP, OTHER) == ConfirmRight.no
    # The preview in the author's DM: the chat is the author.
    assert confirm_right(AUTHOR, AUTHOR, AUTHOR) == ConfirmRight.yes
    assert confirm_right(AUTHOR, AUTHOR, OTHER) == ConfirmRight.no


def test_an_anonymous_admins_preview_is_for_the_operators_of_its_group() -> None:
    assert confirm_right(GROUP, GROUP, OTHER) == ConfirmRight.if_operator
    assert confirm_right(GROUP, GROUP, AUTHOR) == ConfirmRight.if_operator
    # Shown in another chat than the group that wrote it: nobody.
    assert confirm_right(GROUP, -100999, OTHER) == ConfirmRight.no


# -- the phase timeline ---------------------------------------------------------------------


def cron(expr: str) -> Callable[[datetime], datetime | None]:
    return lambda after: next_cron_time(expr, TZ, after)


def counting(
    step: Callable[[datetime], datetime | None],
) -> tuple[list[int], Callable[..., datetime | None]]:
    calls = [0]

    def wrapped(after: datetime) -> datetime | None:
        calls[0] += 1
        return step(after)

    return calls, wrapped


def test_default_build_up_is_61_days() -> None:
    r = DOUBLE_11.phase_range(Phase.buildup)
    assert (r.first, r.last) == (date(2026, 9, 1), date(2026, 10, 31))
    assert (r.last - r.first).days + 1 == 61


def test_a_daily_post_counts_every_day_of_each_phase() -> None:
    first = next_cron_time("0 20 * * *", TZ, utc(8, 1))
    assert first is not None
    runs = phase_runs(DOUBLE_11, first, cron("0 20 * * *"), TZ)
    assert runs.complete
    assert runs.counts == {Phase.buildup: 61, Phase.warmup: 10, Phase.sprint: 1, Phase.afterglow: 3}


def test_a_weekly_post_counts_its_weekdays_in_each_phase() -> None:
    first = next_cron_time("0 20 * * 5", TZ, utc(8, 1))  # Fridays, 20:00 in Shanghai
    assert first is not None
    runs = phase_runs(DOUBLE_11, first, cron("0 20 * * 5"), TZ)
    fridays = [
        DOUBLE_11.sale_day + timedelta(days=d)
        for d in range(-71, 4)
        if (DOUBLE_11.sale_day + timedelta(days=d)).weekday() == 4
    ]
    want: dict[Phase, int] = {}
    for day in fridays:
        phase = DOUBLE_11.phase_on(day)
        assert phase is not None
        want[phase] = want.get(phase, 0) + 1
    assert runs.complete and runs.counts == want
    assert runs.counts[Phase.buildup] == 9  # 09-04 … 10-30
    assert sum(runs.counts.values()) == len(fridays) == 11


def test_a_post_that_starts_mid_campaign_counts_from_its_first_time() -> None:
    first = next_cron_time("0 20 * * *", TZ, utc(10, 20, 0))  # 10-20 20:00 local
    assert first is not None and local_day(first, TZ) == date(2026, 10, 20)
    runs = phase_runs(DOUBLE_11, first, cron("0 20 * * *"), TZ)
    assert runs.counts == {Phase.buildup: 12, Phase.warmup: 10, Phase.sprint: 1, Phase.afterglow: 3}


def test_the_walk_starts_at_the_campaign_and_stops_after_it() -> None:
    # A daily post that began long before the campaign: the days before it cost nothing.
    calls, step = counting(cron("0 20 * * *"))
    runs = phase_runs(DOUBLE_11, utc(1, 1), step, TZ)
    assert runs.complete and sum(runs.counts.values()) == 61 + 10 + 1 + 3
    assert calls[0] == 1 + 75  # one jump to the first day, then one step per time
    # A post whose times end before the campaign, and one with no more times at all.
    assert phase_runs(DOUBLE_11, utc(1, 1), lambda _at: None, TZ).counts == {}
    assert phase_runs(DOUBLE_11, utc(12, 1), cron("0 20 * * *"), TZ).counts == {}


def test_the_walk_is_bounded_for_a_post_that_fires_every_minute() -> None:
    calls, step = counting(cron("* * * * *"))
    start = next_cron_time("* * * * *", TZ, utc(9, 1, 0))
    assert start is not None
    runs = phase_runs(DOUBLE_11, start, step, TZ)
    assert not runs.complete  # counted up to the bound: "at least"
    assert sum(runs.counts.values()) == MAX_WALK
    assert calls[0] <= MAX_WALK + 1
    assert phase_runs(DOUBLE_11, start, step, TZ, limit=5).counts == {Phase.buildup: 5}


def test_a_gap_between_changed_phases_counts_for_no_phase() -> None:
    gapped = Campaign(
        "618",
        date(2026, 6, 18),
        {Phase.buildup: DayRange(date(2026, 5, 1), date(2026, 5, 10))},
    )
    first = next_cron_time("0 20 * * *", TZ, utc(4, 1))
    assert first is not None
    runs = phase_runs(gapped, first, cron("0 20 * * *"), TZ)
    assert runs.counts == {Phase.buildup: 10, Phase.warmup: 10, Phase.sprint: 1, Phase.afterglow: 3}
    assert phase_at(gapped, datetime(2026, 5, 20, 12, tzinfo=UTC), TZ) is None
    # A one-off post's phase is its local day's: 16:30 UTC on 06-07 is 06-08 in Shanghai.
    assert phase_at(gapped, datetime(2026, 6, 7, 16, 30, tzinfo=UTC), TZ) == Phase.warmup
    assert phase_at(gapped, datetime(2026, 6, 7, 15, 30, tzinfo=UTC), TZ) is None
