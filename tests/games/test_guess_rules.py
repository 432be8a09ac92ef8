"""Guess-the-price, vote and invite-name rules (pure functions)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from games.guess import (
    LOOKS_LIKE_PRICE,
    Guess,
    Mode,
    Verdict,
    attempts_allowed,
    closest_winners,
    format_price,
    judge,
    parse_price,
    parse_round,
)
from games.parsing import ParseError
from games.votes import invite_link_name, parse_vote


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("199", 19900),
        ("199.5", 19950),
        ("199.50", 19950),
        ("0.01", 1),
        ("１９９", 19900),
        ("１９９．５", 19950),
        ("¥199", 19900),
        ("￥199", 19900),
        ("￥ 199", 19900),
        ("199元", 19900),
        (" 199 ", 19900),
        ("10000000", 10**9),
    ],
)
def test_prices_accepted(text: str, cents: int) -> None:
    assert parse_price(text) == cents


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("1e309", "not_a_price"),
        ("NaN", "not_a_price"),
        ("nan", "not_a_price"),
        ("inf", "not_a_price"),
        ("-inf", "not_a_price"),
        ("Infinity", "not_a_price"),
        ("0x10", "not_a_price"),
        ("1_000", "not_a_price"),
        ("199.", "not_a_price"),
        (".5", "not_a_price"),
        ("", "not_a_price"),
        ("¥", "not_a_price"),
        ("abc", "not_a_price"),
        ("1,000", "not_a_price"),
        ("-199", "not_positive"),
        ("0", "not_positive"),
        ("0.00", "not_positive"),
        ("199.999", "too_precise"),
        ("10000000.01", "too_large"),
        ("9" * 12, "too_large"),
        ("9" * 40, "not_a_price"),
    ],
)
def test_prices_refused(text: str, code: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_price(text)
    assert exc.value.code == code


@given(st.integers(min_value=1, max_value=10**9))
def test_format_and_parse_round_trip(cents: int) -> None:
    assert parse_price(format_price(cents)) == cents


@given(st.text(max_size=20))
def test_parse_price_never_crashes(text: str) -> None:
    try:
        cents = parse_price(text)
    except ParseError:
        return
    assert 1 <= cents <= 10**9


def test_reply_precheck_matches_prices_only() -> None:
    for ok in ("199", "¥199", "１９９", "199.5", "199.999"):
        assert LOOKS_LIKE_PRICE.fullmatch(ok), ok
    for no in ("签到", "hello 199", "/guess 199", "NaN", "1e309"):
        assert not LOOKS_LIKE_PRICE.fullmatch(no), no


def test_parse_round() -> None:
    a = parse_round("199 20s 100 Test Dress")
    assert (a.price_cents, a.duration, a.prize, a.product, a.mode) == (
        19900,
        timedelta(seconds=20),
        100,
        "Test Dress",
        Mode.closest,
    )
    b = parse_round("￥99.9 1h ５０ 连衣裙 mode=hit")
    assert (b.price_cents, b.prize, b.product, b.mode) == (9990, 50, "连衣裙", Mode.hit)
    for bad, code in [
        ("", "usage"),
        ("199 20s 100", "usage"),
        ("NaN 20s 100 x", "not_a_price"),
        ("199 forever 100 x", "bad_duration"),
        ("199 5s 100 x", "too_short"),
        ("199 31d 100 x", "too_large"),
        ("199 1m -5 x", "not_positive"),
        ("199 1m 100 x mode=lucky", "bad_mode"),
        ("199 1m 100 " + "x" * 101, "product_too_long"),
    ]:
        with pytest.raises(ParseError) as exc:
            parse_round(bad)
        assert exc.value.code == code, bad


def test_judge_and_attempts() -> None:
    assert judge(150, 199) == Verdict.too_low
    assert judge(250, 199) == Verdict.too_high
    assert judge(199, 199) == Verdict.hit
    assert judge(198, 199, tolerance_cents=1) == Verdict.hit
    assert attempts_allowed(Mode.closest, 3, 0) == 1
    assert attempts_allowed(Mode.hit, 3, 0) == 3
    assert attempts_allowed(Mode.hit, 3, 2) == 5


def test_closest_winners_ties_go_to_the_earliest_and_one_win_each() -> None:
    guesses = [
        Guess(1, 10, 15000),
        Guess(2, 11, 20000),  # diff 100
        Guess(3, 12, 19800),  # diff 100, later: loses the tie
        Guess(4, 10, 19850),  # member 10's second guess, diff 50: best
        Guess(5, 13, 19950),  # diff 50, later than 4
    ]
    assert [g.user_id for g in closest_winners(guesses, 19900, 1)] == [10]
    assert [g.user_id for g in closest_winners(guesses, 19900, 3)] == [10, 13, 11]
    assert closest_winners([], 19900, 1) == []


def test_parse_vote() -> None:
    v = parse_vote("1h 上新选哪个？ | 红色 | 蓝色 |  绿 色 ")
    assert v.duration == timedelta(hours=1)
    assert v.question == "上新选哪个？"
    assert v.options == ("红色", "蓝色", "绿 色")
    cases = [
        ("1h Q | A", "too_few_options"),
        ("1h Q | " + " | ".join(str(i) for i in range(11)), "too_many_options"),
        ("1h " + "q" * 256 + " | A | B", "question_too_long"),
        ("1h Q | A | " + "b" * 101, "option_too_long"),
        ("1h Q | A | | B", "empty_option"),
        ("1h Q | A | a", "duplicate_option"),
        ("1h Q", "usage"),
        ("| A | B", "bad_duration"),
        ("soon Q | A | B", "bad_duration"),
        ("5s Q | A | B", "too_short"),
        ("", "usage"),
    ]
    for text, code in cases:
        with pytest.raises(ParseError) as exc:
            parse_vote(text)
        assert exc.value.code == code, text
    assert len(parse_vote("1h Q | " + " | ".join(str(i) for i in range(10))).options) == 10


def test_invite_link_name_fits_telegram() -> None:
    assert invite_link_name("Alice") == "邀请·Alice"
    long = invite_link_name("🐟" * 40)
    assert len(long.encode("utf-16-le")) // 2 <= 32
    assert invite_link_name("a\n b") == "邀请·a b"
