"""The pure rules of segments (games/segments.py) and of the survey command
(games/surveys.py): RFM bands at their thresholds, churn risk, `to=` targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from games.parsing import ParseError
from games.segments import (
    TARGETS,
    Segment,
    Thresholds,
    at_churn_risk,
    days_between,
    in_target,
    segment_of,
    split_target,
    standing,
)
from games.surveys import parse_survey

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
T = Thresholds()  # 90 days, 3 orders, ¥300, churn after 30 days


@pytest.mark.parametrize(
    ("recency", "orders", "cents", "segment"),
    [
        (90, 3, 30_000, Segment.gold),  # every threshold met exactly
        (91, 3, 30_000, Segment.key),  # a regular big spender, not this season
        (0, 1, 50_000, Segment.key),  # a recent big first order
        (10, 5, 2_000, Segment.key),  # recent and frequent, small baskets
        (10, 1, 2_000, Segment.ordinary),  # recent only
        (200, 1, 29_999, Segment.low),  # nothing high
        (None, 0, 0, Segment.low),  # never bought
    ],
)
def test_rfm_bands(recency: int | None, orders: int, cents: int, segment: Segment) -> None:
    assert segment_of(recency, orders, cents, T) == segment


def test_churn_risk_counts_any_activity_and_whole_days() -> None:
    assert days_between(NOW - timedelta(days=30, seconds=-1), NOW) == 29
    assert not at_churn_risk(NOW - timedelta(days=29, hours=23), NOW, T)
    assert at_churn_risk(NOW - timedelta(days=30), NOW, T)
    assert at_churn_risk(None, NOW, T)
    # Not seen for 40 days, but bought 2 days ago: active.
    s = standing(NOW - timedelta(days=2), 1, 100, NOW - timedelta(days=40), NOW, T)
    assert not s.churn_risk and s.recency_days == 2
    assert in_target(s, "ordinary") and not in_target(s, "churn")


def test_targets_and_the_to_word() -> None:
    assert TARGETS == ("gold", "key", "ordinary", "low", "churn")
    assert split_target("at +1h Sale to=GOLD today") == ("at +1h Sale today", "gold", None)
    assert split_target("at +1h Sale to=vip") == ("at +1h Sale to=vip", None, "vip")
    assert split_target("at +1h Sale") == ("at +1h Sale", None, None)
    assert split_target(None) == (None, None, None)


def test_survey_command() -> None:
    args = parse_survey("１d 肤质 你的肤质？ | 干性 | 油性")
    assert args.key == "肤质" and args.vote.question == "你的肤质？"
    assert args.vote.options == ("干性", "油性") and args.vote.duration == timedelta(days=1)
    assert parse_survey("1h Skin_Type Q | A | B").key == "skin_type"
    for bad, code in [("1h sk!n Q | A | B", "bad_key"), ("1h skin Q", "usage"),
                      ("1h " + "k" * 33 + " Q | A | B", "bad_key"), ("", "usage"),
                      ("1h skin Q | A", "too_few_options"), ("5s skin Q | A | B", "too_short")]:
        with pytest.raises(ParseError) as err:
            parse_survey(bad)
        assert err.value.code == code, bad
