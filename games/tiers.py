"""Tiers from lifetime spend (SPEC F10). Pure functions.

The setting `tiers` reads `name:from_yuan:discount,…` — `VIP1:0.01:9.8,VIP2:300:9.5`:
VIP1 from the first cent spent, shown as 9.8折; VIP2 from ¥300.00, 9.5折. A member
whose lifetime spend reaches no threshold (no purchase yet) is `member`.

Thresholds are compared in cents, exactly: ¥299.99 stays VIP1, ¥300.00 is VIP2. They
must rise strictly from one tier to the next, so every spend has one tier and a member
only ever moves up as purchases add up. The discount is what the member is shown; it is
kept as written (`9.8`), a number of tenths like the 折 a shop prints, between 0 and 10.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from games.orders import AmountError, parse_yuan

MEMBER = "member"  # the tier of a member without a purchase that reaches any threshold
MAX_TIERS = 10
NAME_MAX = 16  # `member.tier` holds this many characters
MAX_THRESHOLD_CENTS = 10**12

_NAME = re.compile(r"[^\s:,]{1,16}")
_DISCOUNT = re.compile(r"\d{1,2}(\.\d{1,2})?")


class TiersError(ValueError):
    """A `tiers` setting that cannot be read; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    from_cents: int  # lifetime spend (cents) from which it applies
    discount: str  # as written, e.g. "9.8" (9.8折)

    @property
    def percent(self) -> int | Decimal:
        """What a member of this tier pays, in percent (9.8 -> 98)."""
        value = Decimal(self.discount) * 10
        return int(value) if value == value.to_integral_value() else value.normalize()


Tiers = tuple[Tier, ...]


def parse_tiers(text: str) -> Tiers:
    """The tiers of a `tiers` setting, lowest first; an empty setting means no tiers."""
    text = text.strip()
    if not text:
        return ()
    tiers: list[Tier] = []
    for part in text.split(","):
        fields = [f.strip() for f in part.split(":")]
        if len(fields) != 3:
            raise TiersError(f"{part.strip()!r}: write name:from_yuan:discount")
        name, from_text, discount = fields
        if not _NAME.fullmatch(name) or name.lower() == MEMBER:
            raise TiersError(
                f"{name!r}: a tier's name is 1-{NAME_MAX} characters without spaces, "
                f"':' or ',' (and not {MEMBER!r})"
            )
        try:
            from_cents = parse_yuan(from_text, maximum=MAX_THRESHOLD_CENTS)
        except AmountError as exc:
            raise TiersError(f"{name}: {from_text!r} is not an amount of yuan > 0") from exc
        if not _DISCOUNT.fullmatch(discount) or not 0 < Decimal(discount) <= 10:
            raise TiersError(f"{name}: discount {discount!r} must be above 0 and at most 10")
        if any(t.name == name for t in tiers):
            raise TiersError(f"{name}: named twice")
        if tiers and from_cents <= tiers[-1].from_cents:
            raise TiersError(f"{name}: thresholds must rise from one tier to the next")
        tiers.append(Tier(name, from_cents, discount))
    if len(tiers) > MAX_TIERS:
        raise TiersError(f"at most {MAX_TIERS} tiers")
    return tuple(tiers)


def tier_for(spent_cents: int, tiers: Tiers) -> Tier | None:
    """The highest tier whose threshold `spent_cents` reaches; None: a plain member."""
    found: Tier | None = None
    for tier in tiers:
        if spent_cents >= tier.from_cents:
            found = tier
    return found


def tier_name(spent_cents: int, tiers: Tiers) -> str:
    """The tier's name for `spent_cents`, `member` below every threshold."""
    tier = tier_for(spent_cents, tiers)
    return tier.name if tier is not None else MEMBER


def named(name: str, tiers: Tiers) -> Tier | None:
    return next((t for t in tiers if t.name == name), None)


__all__ = [
    "MEMBER",
    "Tier",
    "Tiers",
    "TiersError",
    "named",
    "parse_tiers",
    "tier_for",
    "tier_name",
]
