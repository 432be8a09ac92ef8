"""Segments for targeting (F10): RFM from purchases, churn risk from activity. Pure.

RFM as a shop reads it — each of the three is *high* or *low* against a setting:

* R (recency): the last purchase within `segment_recent_days` (default 90, a season);
* F (frequency): at least `segment_min_orders` orders (default 3: a repeat buyer);
* M (money): at least `segment_min_spend` yuan in all (default 300, the VIP2 tier's
  threshold, so "spends much" means the same as on `/points`).

Three highs: gold (重要价值) — recent, frequent, big spenders. Two: key development
(重点发展) — one step from gold (a recent big first order; a regular who has not bought
this season). One: ordinary (一般). None, or no purchase at all: low value (低价值).
Counting highs rather than the textbook eight RFM cells keeps four buckets a shop can
name and act on, each a superset-free band, and every member in exactly one.

Churn risk is separate, from activity (F10): no message, button or purchase for
`churn_days` (default 30). A gold member can be at churn risk — exactly the one to call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Segment(StrEnum):
    gold = "gold"  # 重要价值
    key = "key"  # 重点发展
    ordinary = "ordinary"  # 一般
    low = "low"  # 低价值


CHURN = "churn"  # `to=churn`: the members at churn risk, whatever their segment
TARGETS: tuple[str, ...] = (*(str(s) for s in Segment), CHURN)


@dataclass(frozen=True, slots=True)
class Thresholds:
    recent_days: int = 90
    min_orders: int = 3
    min_spend_cents: int = 30_000
    churn_days: int = 30


@dataclass(frozen=True, slots=True)
class Standing:
    """A member's RFM figures and what they make."""

    recency_days: int | None  # days since the last purchase; None: never bought
    orders: int
    spent_cents: int
    segment: Segment
    churn_risk: bool


def days_between(earlier: datetime, later: datetime) -> int:
    """Whole days from `earlier` to `later` (never negative)."""
    return max(0, (later - earlier) // timedelta(days=1))


def segment_of(
    recency_days: int | None, orders: int, spent_cents: int, t: Thresholds
) -> Segment:
    if recency_days is None or orders <= 0:
        return Segment.low
    highs = (
        (recency_days <= t.recent_days)
        + (orders >= t.min_orders)
        + (spent_cents >= t.min_spend_cents)
    )
    return (Segment.low, Segment.ordinary, Segment.key, Segment.gold)[highs]


def at_churn_risk(last_active: datetime | None, now: datetime, t: Thresholds) -> bool:
    """No activity for `churn_days` (a member never seen active is at risk)."""
    return last_active is None or days_between(last_active, now) >= t.churn_days


def standing(
    last_purchase: datetime | None,
    orders: int,
    spent_cents: int,
    last_seen: datetime | None,
    now: datetime,
    t: Thresholds,
) -> Standing:
    recency = None if last_purchase is None else days_between(last_purchase, now)
    active = max((d for d in (last_seen, last_purchase) if d is not None), default=None)
    return Standing(
        recency,
        orders,
        spent_cents,
        segment_of(recency, orders, spent_cents, t),
        at_churn_risk(active, now, t),
    )


def in_target(s: Standing, target: str) -> bool:
    """Whether a member's standing falls in a `to=<target>` (a segment, or churn)."""
    return s.churn_risk if target == CHURN else str(s.segment) == target


def parse_target(word: str) -> str | None:
    """A `to=` value (case-insensitive): one of `TARGETS`, else None."""
    value = word.strip().lower()
    return value if value in TARGETS else None


def split_target(args: str | None) -> tuple[str | None, str | None, str | None]:
    """A command's arguments without their `to=<segment>` word: (the rest, the target,
    the bad value). No `to=`: (args, None, None); an unknown value: (args, None, value)."""
    words = (args or "").split(" ")
    for i, word in enumerate(words):
        name, sep, value = word.strip().partition("=")
        if sep and name.lower() == "to":
            target = parse_target(value)
            if target is None:
                return args, None, value
            return " ".join(words[:i] + words[i + 1 :]), target, None
    return args, None, None
