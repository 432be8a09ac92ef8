"""Check-in rules as pure functions: days, streaks, rewards, make-ups."""

from __future__ import annotations

import datetime as dt

import pytest

from games import checkin as c

D = dt.date
UTC = dt.UTC


def test_day_boundary_in_shanghai() -> None:
    last_second = dt.datetime(2025, 3, 1, 15, 59, 59, tzinfo=UTC)  # 23:59:59 +08:00
    midnight = dt.datetime(2025, 3, 1, 16, 0, 0, tzinfo=UTC)  # 00:00:00 +08:00
    assert c.local_day(last_second, "Asia/Shanghai") == D(2025, 3, 1)
    assert c.local_day(midnight, "Asia/Shanghai") == D(2025, 3, 2)


def test_day_boundary_in_another_timezone() -> None:
    instant = dt.datetime(2025, 3, 2, 4, 59, 59, tzinfo=UTC)
    assert c.local_day(instant, "America/New_York") == D(2025, 3, 1)
    assert c.local_day(instant + dt.timedelta(seconds=1), "America/New_York") == D(2025, 3, 2)
    assert c.local_day(instant, "Asia/Shanghai") == D(2025, 3, 2)
    assert c.local_day(instant, "No/Such_Zone") == D(2025, 3, 2)  # falls back to Shanghai
    with pytest.raises(ValueError):
        c.local_day(dt.datetime(2025, 3, 2), "Asia/Shanghai")


def test_streak_and_reward() -> None:
    rules = c.Rules()
    assert c.next_streak(None, 0, D(2025, 3, 1)) == 1
    assert c.next_streak(D(2025, 3, 1), 4, D(2025, 3, 2)) == 5
    assert c.next_streak(D(2025, 3, 1), 4, D(2025, 3, 3)) == 1
    assert c.next_streak(D(2025, 3, 1), 4, D(2025, 3, 1)) is None
    assert c.next_streak(D(2025, 3, 2), 4, D(2025, 3, 1)) is None
    assert [c.reward(rules, s).points for s in range(1, 9)] == [5, 6, 7, 8, 9, 10, 10, 10]
    assert c.reward(rules, 7).milestone == 20 and c.reward(rules, 30).milestone == 100
    assert c.reward(rules, 8).milestone == 0
    assert c.current_streak(D(2025, 3, 1), 3, D(2025, 3, 2)) == 3
    assert c.current_streak(D(2025, 3, 1), 3, D(2025, 3, 3)) == 0


def test_makeup_target_and_plan() -> None:
    days = {D(2025, 3, 1), D(2025, 3, 2), D(2025, 3, 4)}
    today = D(2025, 3, 5)
    assert c.makeup_target(days, today, 7) == D(2025, 3, 3)
    plan = c.plan_makeup(days, today, window=7, last_makeup_day=None, every_days=7)
    assert (plan.day, plan.last_day, plan.streak) == (D(2025, 3, 3), D(2025, 3, 4), 4)
    assert c.makeup_target(set(), today, 7) is None
    assert c.makeup_target({D(2025, 3, 4)}, today, 7) is None  # nothing missed since
    assert c.makeup_target({D(2025, 1, 1)}, today, 7) == D(2025, 3, 4)  # yesterday
    run = {D(2025, 2, 20) + dt.timedelta(days=i) for i in range(13)} - {D(2025, 2, 25)}
    assert c.makeup_target(run, today, 7) is None  # Feb 25 is 8 days back
    assert c.makeup_target(run, today, 10) == D(2025, 2, 25)
    with pytest.raises(c.MakeupRefused, match="used_recently"):
        c.plan_makeup(days, today, window=7, last_makeup_day=D(2025, 2, 27), every_days=7)
    again = c.plan_makeup(days, today, window=7, last_makeup_day=D(2025, 2, 26), every_days=7)
    assert again.day == D(2025, 3, 3)
    with pytest.raises(c.MakeupRefused, match="nothing_to_make_up"):
        c.plan_makeup(set(), today, window=7, last_makeup_day=None, every_days=7)
