"""Purchase amounts, points, `/order`'s arguments, the orders CSV and tiers: pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from games.orders import (
    AmountError,
    parse_order,
    parse_orders_csv,
    parse_yuan,
    points_for,
    yuan,
)
from games.parsing import ParseError
from games.settings import PondSettings
from games.tiers import MEMBER, TiersError, parse_tiers, tier_for, tier_name
from storage.orders import promoted

NOW = datetime(2025, 11, 11, 4, 0, tzinfo=UTC)
SHANGHAI = timedelta(hours=8)


@pytest.mark.parametrize(
    ("text", "cents"),
    [("299.50", 29950), ("299.5", 29950), ("0.01", 1), ("300", 30000), ("２９９．５０", 29950),
     ("¥1,299.00", 129900), ("￥88", 8800), ("10元", 1000), (" 7.05 ", 705),
     ("1000000", 100_000_000)],
)
def test_yuan_amounts_in_cents(text: str, cents: int) -> None:
    assert parse_yuan(text) == cents


@pytest.mark.parametrize(
    ("text", "code"),
    [("abc", "not_a_number"), ("", "not_a_number"), ("299,50", "not_a_number"),
     ("1.", "not_a_number"), (".5", "not_a_number"), ("1e3", "not_a_number"),
     ("0", "not_positive"), ("0.00", "not_positive"), ("-5", "not_positive"),
     ("1.234", "too_precise"), ("1000000.01", "too_large"), ("99999999999999", "too_large")],
)
def test_bad_amounts(text: str, code: str) -> None:
    with pytest.raises(AmountError) as exc:
        parse_yuan(text)
    assert exc.value.code == code


def test_points_are_floored_exactly() -> None:
    assert points_for(1000, 1.1) == 11  # a float product would give 11.000000000000002 or 10
    assert points_for(29950, 1.0) == 299
    assert points_for(199, 0.5) == 0
    assert points_for(30, 0.1) == 0 and points_for(1000, 0.1) == 1
    assert points_for(100_000_000, 1000) == 1_000_000_000
    assert points_for(12345, 0.0) == 0
    assert yuan(30950) == "309.50" and yuan(1) == "0.01" and yuan(0) == "0.00"


def test_order_arguments() -> None:
    a = parse_order("@alice 299.50 TB-2025-0001", replying=False)
    assert (a.username, a.user_id, a.cents, a.order_no) == ("alice", None, 29950, "TB-2025-0001")
    b = parse_order("１２３４５ 88", replying=False)
    assert (b.user_id, b.cents, b.order_no) == (12345, 8800, None)
    c = parse_order("19.9 A1", replying=True)
    assert (c.username, c.user_id, c.cents, c.order_no) == (None, None, 1990, "A1")
    d = parse_order("@bobby 5", replying=True)  # the explicit target wins
    assert d.username == "bobby"
    for args, code in [("", "usage"), ("@alice", "usage"), ("alice 5", "bad_target"),
                       ("@alice 5 A1 extra", "usage"), ("@alice 1.234", "too_precise"),
                       ("@alice 5 msg:1:2", "bad_order_no"), ("@alice 0", "not_positive")]:
        with pytest.raises(ParseError) as exc:
            parse_order(args, replying=False)
        assert exc.value.code == code, args


def test_a_good_csv() -> None:
    text = (
        "Order_No,user_id,amount,paid_at,username\r\n"
        "A1,101,299.50,2025-11-11 00:05:00,alice\r\n"
        "\r\n"
        '"A2",202,"1,000.00",2025-11-11T00:05:00+00:00,\r\n'
        "A3,101,0.01,,\r\n"
    )
    rows, bad = parse_orders_csv(text.splitlines(keepends=True), now=NOW)
    assert bad == []
    assert [(r.line, r.order_no, r.user_id, r.cents) for r in rows] == [
        (2, "A1", 101, 29950), (4, "A2", 202, 100000), (5, "A3", 101, 1)
    ]
    assert rows[0].paid_at == datetime(2025, 11, 10, 16, 5, tzinfo=UTC)  # naive: Shanghai
    assert rows[1].paid_at == datetime(2025, 11, 11, 0, 5, tzinfo=UTC)
    assert rows[2].paid_at is None


def test_every_bad_line_is_named() -> None:
    text = (
        "order_no,user_id,amount,paid_at\n"
        "A1,101,10,\n"
        "A2,xyz,10,\n"
        "A3,101,ten,\n"
        "A1,102,5,\n"
        "A5,101,5,yesterday\n"
        ",101,5,\n"
        "A7,101\n"
        "A8,101,1.999,2030-01-01\n"
    )
    rows, bad = parse_orders_csv(text.splitlines(), now=NOW)
    assert [r.order_no for r in rows] == ["A1"]
    assert [str(b) for b in bad] == [
        "line 3: user_id 'xyz' is not a user id",
        "line 4: amount 'ten' is not an amount of yuan",
        "line 5: order_no 'A1' is already on line 2",
        "line 6: paid_at 'yesterday' is not an ISO date-time",
        "line 7: order_no is missing",
        "line 8: 2 fields, the header has 4",
        "line 9: amount '1.999' has more than 2 decimals; "
        "paid_at '2030-01-01' is before 2000 or in the future",
    ]


@pytest.mark.parametrize(
    ("header", "problem"),
    [("order_no,amount", "missing column user_id"),
     ("order_no,user_id,amount,price", "unknown column 'price'"),
     ("order_no,user_id,amount,amount", "column named twice: amount")],
)
def test_a_bad_header_is_line_1(header: str, problem: str) -> None:
    rows, bad = parse_orders_csv([header, "A1,1,2"], now=NOW)
    assert rows == [] and [b.line for b in bad] == [1] and problem in bad[0].problem
    assert parse_orders_csv([], now=NOW)[1][0].line == 1


def test_tiers_setting() -> None:
    tiers = parse_tiers("VIP1:0.01:9.8,VIP2:300:9.5")
    assert [(t.name, t.from_cents, t.discount, t.percent) for t in tiers] == [
        ("VIP1", 1, "9.8", 98), ("VIP2", 30000, "9.5", 95)
    ]
    assert tier_for(0, tiers) is None and tier_name(0, tiers) == MEMBER
    assert tier_name(1, tiers) == "VIP1"
    assert tier_name(29999, tiers) == "VIP1"
    assert tier_name(30000, tiers) == "VIP2"
    assert tier_name(10**9, tiers) == "VIP2"
    assert parse_tiers("") == ()
    assert parse_tiers(" 金卡 : 1000 : 8.85 ")[0].percent == 88.5


@pytest.mark.parametrize(
    "text",
    ["VIP1:0.01", "VIP1:0:9.8", "VIP1:abc:9.8", "VIP1:1:0", "VIP1:1:11", "VIP1:1:9.875",
     "member:1:9", "VIP 1:1:9", "VIP2:300:9.5,VIP1:0.01:9.8", "A:1:9,A:2:9",
     "VIP1:300:9.8,VIP2:300:9.5", "ABCDEFGHIJKLMNOPQ:1:9"],
)
def test_bad_tiers_are_refused(text: str) -> None:
    with pytest.raises(TiersError):
        parse_tiers(text)
    with pytest.raises(ValidationError):
        PondSettings().changed(tiers=text)
    assert PondSettings.from_stored({"tiers": text}).tiers == PondSettings().tiers


def test_only_a_move_up_is_a_promotion() -> None:
    tiers = parse_tiers("VIP1:0.01:9.8,VIP2:300:9.5")
    assert promoted("", "VIP1", tiers) and promoted("VIP1", "VIP2", tiers)
    assert promoted("OLD", "VIP1", tiers)  # a tier no longer in the setting
    assert not promoted("VIP1", "VIP1", tiers) and not promoted("VIP2", "VIP1", tiers)
    assert not promoted("", MEMBER, tiers)
