"""The lottery's rules (抽奖, SPEC F8). Pure functions.

* `parse_prize` reads `/prize add <weight> <stock|-> <points=<n>|item=<id>|none> <name…>`.
* `pick` chooses one prize among those in stock, each with the chance of its weight,
  from an injected random source (`random.Random`, `secrets.SystemRandom`, a seeded one
  in tests). Integers only: the weights' sum is drawn with `randrange`, so the odds are
  exactly the weights' shares.
* `odds` is what `/prize list` shows: each prize's share of the weights in play.
* `free_slot` numbers a member's free draws of a day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from games.parsing import ParseError, fold, parse_points

MAX_WEIGHT = 1_000_000
MAX_STOCK = 1_000_000
MAX_PRIZE_POINTS = 1_000_000
NAME_MAX = 128

PrizeKindName = Literal["points", "item", "none"]


class RandomSource(Protocol):
    def randrange(self, stop: int, /) -> int: ...


@dataclass(frozen=True, slots=True)
class PrizeSpec:
    """A prize as an operator typed it. `stock` None: unlimited."""

    weight: int
    stock: int | None
    kind: PrizeKindName
    points: int  # what a points prize pays (0 otherwise)
    item_id: int | None  # the shop item an item prize grants
    name: str


def parse_prize(args: str | None) -> PrizeSpec:
    """`<weight> <stock|-> <points=<n>|item=<id>|none> <name…>`; raises `ParseError`."""
    parts = fold(args or "").split(maxsplit=3)
    if len(parts) < 4:
        raise ParseError("usage")
    weight_text, stock_text, what, name = parts
    weight = parse_points(weight_text, maximum=MAX_WEIGHT)
    stock = None if stock_text in ("-", "∞") else parse_points(stock_text, maximum=MAX_STOCK)
    kind: PrizeKindName
    points, item_id = 0, None
    key, _, value = what.lower().partition("=")
    if what.lower() == "none":
        kind = "none"
    elif key == "points" and value:
        kind, points = "points", parse_points(value, maximum=MAX_PRIZE_POINTS)
    elif key == "item" and value:
        kind = "item"
        item_id = parse_points(value, maximum=10**15)
    else:
        raise ParseError("prize_what")
    name = " ".join(name.split())
    if not name:
        raise ParseError("usage")
    if len(name) > NAME_MAX:
        raise ParseError("name_too_long")
    return PrizeSpec(weight, stock, kind, points, item_id, name)


def in_stock(stock: int | None) -> bool:
    return stock is None or stock > 0


def pick(weights: Sequence[tuple[int, int]], rng: RandomSource) -> int | None:
    """The id of one of `weights` (`(id, weight)` pairs, weights > 0), each with the
    chance of its share of the total; None when there is none."""
    total = sum(w for _, w in weights)
    if total <= 0:
        return None
    ticket = rng.randrange(total)
    for prize_id, weight in weights:
        if ticket < weight:
            return prize_id
        ticket -= weight
    raise AssertionError("unreachable: the ticket is below the total")


def odds(weights: Sequence[tuple[int, int]]) -> dict[int, float]:
    """Each prize's chance: its share of the weights (of the prizes in play)."""
    total = sum(w for _, w in weights)
    return {prize_id: (w / total if total else 0.0) for prize_id, w in weights}


def free_slot(used: int, free_per_day: int) -> int | None:
    """The number of the next free draw of the day (1-based), or None: all used."""
    return used + 1 if used < free_per_day else None
