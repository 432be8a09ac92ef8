"""Red packet rules: the split (property-based), the command's arguments, who pays, grab
refusals."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from games.parsing import ParseError
from games.red_packet import (
    Funding,
    PacketLimits,
    PacketState,
    PacketView,
    Refusal,
    SplitMode,
    funding,
    luckiest,
    packet_limits,
    parse_packet,
    refusal,
    split,
    split_equal,
    split_random,
)
from games.settings import PondSettings

LIMITS = PacketLimits(
    max_total=100_000,
    max_shares=200,
    default_expiry=timedelta(hours=24),
    max_expiry=timedelta(days=7),
)


@st.composite
def packets(draw: st.DrawFn) -> tuple[int, int]:
    shares = draw(st.integers(min_value=1, max_value=300))
    total = draw(st.integers(min_value=shares, max_value=shares * 1000))
    return total, shares


@given(packets(), st.integers(min_value=0, max_value=2**32), st.sampled_from(list(SplitMode)))
@settings(max_examples=400, deadline=None)
def test_every_split_is_exact_and_at_least_one(
    packet: tuple[int, int], seed: int, mode: SplitMode
) -> None:
    total, shares = packet
    amounts = split(total, shares, mode, random.Random(seed))
    assert len(amounts) == shares
    assert sum(amounts) == total
    assert min(amounts) >= 1


@given(packets())
def test_equal_split_spreads_the_remainder_over_the_first_shares(packet: tuple[int, int]) -> None:
    total, shares = packet
    amounts = split_equal(total, shares)
    base, extra = divmod(total, shares)
    assert amounts == [base + 1] * extra + [base] * (shares - extra)


def test_random_split_is_not_constant_and_respects_double_average() -> None:
    rng = random.Random(7)
    amounts = split_random(100, 10, rng)
    assert len(set(amounts)) > 1
    # No share can exceed twice the average of what was left when it was drawn, and the
    # first draw (from 100 over 10) is at most 20; the last share takes the remainder.
    assert max(amounts) <= 100 - 9


@pytest.mark.parametrize(("total", "shares"), [(100, 5), (1000, 10), (10, 10), (11, 10)])
def test_random_split_gives_every_grab_position_the_same_expected_amount(
    total: int, shares: int
) -> None:
    """Over many seeds, the mean amount at each grab position is the fair share
    total/shares, within 4.5 standard errors: grabbing early brings no edge."""
    runs = 6000
    by_position: list[list[int]] = [[] for _ in range(shares)]
    for seed in range(runs):
        for i, a in enumerate(split_random(total, shares, random.Random(seed))):
            by_position[i].append(a)
    fair = total / shares
    for amounts in by_position:
        mean = statistics.fmean(amounts)
        error = statistics.pstdev(amounts) / runs**0.5
        assert abs(mean - fair) <= 4.5 * error + 1e-9, (mean, fair, error)


def test_split_refuses_impossible_packets() -> None:
    with pytest.raises(ValueError):
        split(4, 5, SplitMode.random, random.Random(1))
    with pytest.raises(ValueError):
        split(4, 0, SplitMode.equal, random.Random(1))


def test_luckiest_is_the_largest_and_the_earliest_on_ties() -> None:
    assert luckiest([]) is None
    assert luckiest([(1, 5), (2, 9), (3, 9), (4, 1)]) == 2
    assert luckiest([(3, 4), (1, 4)]) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("100 5", (100, 5, SplitMode.random, None, timedelta(hours=24))),
        ("１００ ５ equal", (100, 5, SplitMode.equal, None, timedelta(hours=24))),
        ("10 2 pwd=Open Sesame", None),  # the password is one word
        ("10 2 pwd=ＳＥＳＡＭＥ for=90m",
         (10, 2, SplitMode.random, "sesame", timedelta(minutes=90))),
        ("10 2 for=1d random 口令=芝麻开门",
         (10, 2, SplitMode.random, "芝麻开门", timedelta(days=1))),
    ],
)
def test_parse_packet(args: str, expected: tuple[object, ...] | None) -> None:
    if expected is None:
        with pytest.raises(ParseError):
            parse_packet(args, LIMITS)
        return
    p = parse_packet(args, LIMITS)
    assert (p.total, p.shares, p.mode, p.password, p.expiry) == expected


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (None, "usage"),
        ("5", "usage"),
        ("x 5", "not_a_number"),
        ("5 0", "not_positive"),
        ("4 5", "share_below_one"),
        ("100001 5", "total_too_large"),
        ("1000 201", "too_many_shares"),
        ("10 2 for=8d", "expiry_too_long"),
        ("10 2 for=later", "bad_duration"),
        ("10 2 pwd=/give", "bad_password"),
        ("10 2 equal equal", "usage"),
    ],
)
def test_parse_packet_errors(args: str | None, code: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_packet(args, LIMITS)
    assert err.value.code == code


NOW = datetime(2026, 11, 11, 20, 0, tzinfo=UTC)


def view(**kw: object) -> PacketView:
    base: dict[str, object] = {
        "chat_id": -100, "funder_id": 1, "state": PacketState.open,
        "expires_at": NOW + timedelta(hours=1), "has_password": False,
    }
    base.update(kw)
    return PacketView(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("packet", "kw", "why"),
    [
        (None, {}, Refusal.unknown),
        (view(), {"chat_id": -200}, Refusal.wrong_chat),
        (view(), {"already": True}, Refusal.already),
        (view(state=PacketState.finished), {}, Refusal.gone),
        (view(state=PacketState.expired), {}, Refusal.expired),
        (view(expires_at=NOW), {}, Refusal.expired),
        (view(), {"user_id": 1}, Refusal.own_packet),
        (view(has_password=True), {}, Refusal.needs_password),
        (view(has_password=True), {"by_password": True}, None),
        (view(funder_id=None), {}, None),
    ],
)
def test_refusals(packet: PacketView | None, kw: dict[str, object], why: Refusal | None) -> None:
    args: dict[str, object] = {
        "user_id": 2, "chat_id": -100, "now": NOW, "by_password": False, "already": False,
    }
    args.update(kw)
    assert refusal(packet, **args) == why  # type: ignore[arg-type]


# -- who pays -------------------------------------------------------------------------


def test_the_shop_pays_operators_packets_and_only_a_pond_admins_count_against_the_cap() -> None:
    assert funding(operator=True, global_operator=True, members_may_send=False) == Funding(
        shop_funded=True, capped=False
    )
    assert funding(operator=True, global_operator=False, members_may_send=False) == Funding(
        shop_funded=True, capped=True
    )


def test_members_pay_their_own_packets_where_the_pond_lets_them_send() -> None:
    assert funding(operator=False, global_operator=False, members_may_send=True) == Funding(
        shop_funded=False, capped=False
    )
    assert funding(operator=False, global_operator=False, members_may_send=False) is None


def test_a_ponds_limits_come_from_its_settings() -> None:
    assert packet_limits(PondSettings()) == LIMITS
    tight = PondSettings(redpacket_max_total=50, redpacket_max_shares=5,
                         redpacket_expiry_seconds=600, redpacket_max_expiry_seconds=3600)
    assert packet_limits(tight) == PacketLimits(50, 5, timedelta(minutes=10), timedelta(hours=1))
