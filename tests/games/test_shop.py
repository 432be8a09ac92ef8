"""The shop's pure rules: generated codes, `/item add` arguments, uploaded code lines,
the seed advice under the default settings."""

from __future__ import annotations

import math
from datetime import date

import pytest

from games.parsing import ParseError
from games.settings import PondSettings
from games.shop import (
    CODE_ALPHABET,
    CODE_LENGTH,
    ItemArgs,
    above_newcomer,
    code_bits,
    generate_code,
    newcomer_points,
    normalize_code,
    parse_code_lines,
    parse_item_add,
    parse_item_id,
    yuan,
)

TODAY = date(2026, 12, 6)


def test_generated_codes_are_short_unambiguous_and_unguessable() -> None:
    codes = [generate_code() for _ in range(20_000)]
    assert len(set(codes)) == len(codes)
    assert all(len(c) == CODE_LENGTH and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert not set(CODE_ALPHABET) & set("01OIL")  # nothing read alike at a checkout
    assert code_bits() >= 48
    assert math.isclose(code_bits(), CODE_LENGTH * math.log2(31))
    assert normalize_code(" ab-cd ２３ ") == "ABCD23"


def test_item_add_arguments() -> None:
    assert parse_item_add("30 100 满100减10", TODAY) == ItemArgs(30, 100, "满100减10")
    args = parse_item_add(
        "１５０ 20 limit=2 cash=9.9 kind=goods from=12-20 until=01-10 保温杯 大号", TODAY
    )
    assert args == ItemArgs(150, 20, "保温杯 大号", 2, 990, "goods", date(2026, 12, 20),
                            date(2027, 1, 10))
    assert parse_item_add("0 5 limit=0 free sample", TODAY).limit == 0
    assert parse_item_add("10 5 until=01-10 x", date(2026, 7, 1)).active_until == date(
        2027, 1, 10
    )


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "usage"),
        ("30 100", "usage"),
        ("x 100 name", "bad_price_stock"),
        ("-3 100 name", "bad_price_stock"),
        ("30 100 limit=x name", "bad_limit"),
        ("30 100 cash=9.999 name", "bad_cash"),
        ("30 100 kind=car name", "bad_kind"),
        ("30 100 from=13-01 name", "bad_date"),
        ("30 100 limit=2", "no_name"),
        ("30 100 from=12-10 until=12-08 name", "bad_dates"),
        ("30 100 " + "x" * 129, "name_too_long"),
        ("99999999999 1 name", "too_large"),
    ],
)
def test_bad_item_add_arguments(text: str, code: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_item_add(text, TODAY)
    assert exc.value.code == code


def test_ids_and_yuan() -> None:
    assert parse_item_id("#12") == 12 and parse_item_id(" ７ ") == 7
    for bad in (None, "", "0", "-1", "x", "1" * 16):
        with pytest.raises(ParseError):
            parse_item_id(bad)
    assert (yuan(0), yuan(990), yuan(30950)) == ("0.00", "9.90", "309.50")


def test_code_lines_skip_repeats_blanks_headers_and_junk() -> None:
    text = "\ufeffcode\nA1,10元\n\nA2\nA1\n" + "x" * 65 + "\nhas space\n A3 \n\"A4\",x\n"
    lines = parse_code_lines(text)
    assert lines.codes == ("A1", "A2", "A3", "A4")
    assert lines.repeated == ("A1",)
    assert lines.bad_lines == (6, 7)


def test_a_newcomer_can_afford_a_cheap_item_under_the_default_settings() -> None:
    earned = newcomer_points(PondSettings())
    defaults = PondSettings()
    # Derived from the settings: the first check-in, one vote, one friend invited.
    assert earned.checkin == defaults.checkin_base
    assert earned.vote == defaults.vote_points
    assert earned.referral == defaults.referral_points
    assert earned.total == 27
    cheap = 20  # a no-threshold coupon priced like the seed advice suggests
    assert above_newcomer(cheap, defaults) is None
    assert above_newcomer(earned.total, defaults) is None
    assert above_newcomer(earned.total + 1, defaults) == earned.total
    stingy = defaults.changed(referral_points=0, vote_points=0, checkin_base=3)
    assert newcomer_points(stingy).total == 3 and above_newcomer(cheap, stingy) == 3
