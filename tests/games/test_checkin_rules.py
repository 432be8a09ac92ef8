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


def test_makeup_refused_when_it_would_not_lengthen_the_streak() -> None:
    today = D(2025, 3, 5)
    # Mar 3 and Mar 4 missed after a streak of 2: filling Mar 4 alone leaves a streak of 1.
    with pytest.raises(c.MakeupRefused, match="would_not_lengthen") as refused:
        c.plan_makeup({D(2025, 3, 1), D(2025, 3, 2)}, today, window=7, last_makeup_day=None,
                      every_days=7)
    assert (refused.value.day, refused.value.streak) == (D(2025, 3, 4), 1)
    # Refused for that before "used recently": the member learns the real reason.
    with pytest.raises(c.MakeupRefused, match="would_not_lengthen"):
        c.plan_makeup({D(2025, 3, 2)}, today, window=7, last_makeup_day=D(2025, 3, 4),
                      every_days=7)
    # Checked in today after two missed days: filling yesterday makes the streak 2.
    plan = c.plan_makeup({D(2025, 3, 1), D(2025, 3, 5)}, today, window=7, last_makeup_day=None,
                         every_days=7)
    assert (plan.day, plan.last_day, plan.streak) == (D(2025, 3, 4), D(2025, 3, 5), 2)
    # One day missed right after the last check-in: the streak goes on through it.
    plan = c.plan_makeup({D(2025, 3, 2), D(2025, 3, 3)}, today, window=7, last_makeup_day=None,
                         every_days=7)
    assert (plan.day, plan.last_day, plan.streak) == (D(2025, 3, 4), D(2025, 3, 4), 3)


def test_checkin_moment_is_the_message_date_within_reach() -> None:
    now = dt.datetime(2025, 3, 2, 16, 0, 30, tzinfo=UTC)  # 00:00:30 on Mar 3 in Shanghai
    typed = now - dt.timedelta(seconds=35)  # 23:59:55 on Mar 2
    assert c.checkin_moment(typed, now) == typed
    assert c.local_day(c.checkin_moment(typed, now), "Asia/Shanghai") == D(2025, 3, 2)
    assert c.checkin_moment(None, now) == now  # a button press: when handled
    assert c.checkin_moment(now + dt.timedelta(days=3), now) == now  # from the future
    ahead = now + dt.timedelta(seconds=20)  # Telegram's clock a little ahead: kept
    assert c.checkin_moment(ahead, now) == ahead
    ancient = now - dt.timedelta(days=40)  # older than Telegram keeps an update
    assert c.checkin_moment(ancient, now) == now - c.REDELIVERY_WINDOW


def test_late_checkin_fills_its_day_and_joins_the_runs() -> None:
    rules = c.Rules()
    days = {D(2025, 3, 1), D(2025, 3, 3)}
    late = c.decide_late(rules, days, D(2025, 3, 3), D(2025, 3, 2))
    assert late is not None
    assert (late.reward.streak, late.reward.points, late.streak) == (2, 6, 3)
    assert c.decide_late(rules, days, D(2025, 3, 3), D(2025, 3, 1)) is None  # has one
    assert c.decide_late(rules, days, D(2025, 3, 3), D(2025, 3, 4)) is None  # not earlier
