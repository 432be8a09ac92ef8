"""Guess the price (猜价格): parsing, judging and picking winners. Pure functions.

Prices are integer cents. A price is typed as `199`, `199.5`, `１９９`, `¥199` or `￥199`
(at most two decimals); anything else — `1e309`, `NaN`, `inf`, negative numbers,
absurdly large ones — is a `ParseError` and costs no attempt.

Modes:

* `closest` — one guess each (plus one per friend invited during the round); at close
  the nearest guesses win, ties going to the earliest guess; a member wins once.
* `hit` — up to K attempts each (plus invite bonuses), each answered "higher" or "lower";
  the first W guesses within the tolerance win.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from games.parsing import ParseError, fold, parse_duration, parse_points

MAX_PRICE_CENTS = 10**9  # ¥10,000,000.00
MAX_PRODUCT = 100
MAX_ROUND = timedelta(days=30)
MIN_ROUND = timedelta(seconds=10)
MAX_PRIZE = 1_000_000

_PRICE = re.compile(r"(\d{1,12})(?:\.(\d{1,12}))?")
_CURRENCY = ("¥", "￥", "元", "RMB", "rmb")
# Cheap pre-check for plain text replies: digits with an optional currency sign / decimals.
LOOKS_LIKE_PRICE = re.compile(r"\s*[¥￥]?\s*[0-9０-９]{1,12}(?:[.．][0-9０-９]{0,12})?\s*元?\s*")


class Mode(StrEnum):
    closest = "closest"
    hit = "hit"


class Verdict(StrEnum):
    too_low = "too_low"  # the guess is below the price: "higher!"
    too_high = "too_high"
    hit = "hit"


def parse_price(text: str) -> int:
    """A price in cents; `ParseError` codes: not_a_price, not_positive, too_precise,
    too_large."""
    s = fold(text).replace(" ", "")
    for sign in _CURRENCY:
        if s.startswith(sign):
            s = s[len(sign) :]
        if s.endswith(sign):
            s = s[: -len(sign)]
    if s.startswith("-") and _PRICE.fullmatch(s[1:]):
        raise ParseError("not_positive")
    m = _PRICE.fullmatch(s)
    if m is None:
        raise ParseError("not_a_price")
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > 2:
        raise ParseError("too_precise")
    cents = int(whole) * 100 + int(frac.ljust(2, "0"))
    if cents <= 0:
        raise ParseError("not_positive")
    if cents > MAX_PRICE_CENTS:
        raise ParseError("too_large")
    return cents


def format_price(cents: int) -> str:
    """`19900` → `¥199`, `19950` → `¥199.50`."""
    yuan, rest = divmod(cents, 100)
    return f"¥{yuan}" if rest == 0 else f"¥{yuan}.{rest:02d}"


@dataclass(frozen=True, slots=True)
class RoundArgs:
    """`/guessprice <price> <duration> <prize_points> <product name…> [mode=closest|hit]`."""

    price_cents: int
    duration: timedelta
    prize: int
    product: str
    mode: Mode


def parse_round(args: str | None) -> RoundArgs:
    parts = fold(args or "").split()
    mode = Mode.closest
    rest: list[str] = []
    for p in parts:
        if p.lower().startswith("mode="):
            value = p.split("=", 1)[1].lower()
            if value not in (Mode.closest, Mode.hit):
                raise ParseError("bad_mode")
            mode = Mode(value)
        else:
            rest.append(p)
    if len(rest) < 4:
        raise ParseError("usage")
    price = parse_price(rest[0])
    duration = parse_duration(rest[1], maximum=MAX_ROUND)
    if duration < MIN_ROUND:
        raise ParseError("too_short")
    prize = parse_points(rest[2], maximum=MAX_PRIZE)
    product = " ".join(rest[3:]).strip()
    if len(product) > MAX_PRODUCT:
        raise ParseError("product_too_long")
    return RoundArgs(price, duration, prize, product, mode)


def judge(guess_cents: int, price_cents: int, tolerance_cents: int = 0) -> Verdict:
    if abs(guess_cents - price_cents) <= tolerance_cents:
        return Verdict.hit
    return Verdict.too_low if guess_cents < price_cents else Verdict.too_high


def attempts_allowed(mode: Mode, base_attempts: int, friends_invited: int) -> int:
    """Attempts a member has in a round: 1 (closest) or K (hit), plus one per friend
    who joined through their invite link during the round."""
    base = 1 if mode == Mode.closest else base_attempts
    return base + max(0, friends_invited)


@dataclass(frozen=True, slots=True)
class Guess:
    order: int  # the guess's sequence (its id): smaller is earlier
    user_id: int
    cents: int


def closest_winners(guesses: Iterable[Guess], price_cents: int, winners: int) -> list[Guess]:
    """The nearest guesses, at most `winners`, one per member; ties: the earliest."""
    ranked = sorted(guesses, key=lambda g: (abs(g.cents - price_cents), g.order))
    chosen: list[Guess] = []
    seen: set[int] = set()
    for g in ranked:
        if g.user_id in seen:
            continue
        seen.add(g.user_id)
        chosen.append(g)
        if len(chosen) >= winners:
            break
    return chosen
