"""The shop's rules (F7): `/item add` arguments, coupon codes, and the seed advice. Pure.

Generated codes are `CODE_LENGTH` characters of `CODE_ALPHABET` — digits and capital
letters without the ones read alike at a checkout (0/O, 1/I/L) — drawn with `secrets`:
31**10 ≈ 2**49.5 codes, so a guessed code is valid with odds far below one in a
billion even for an item with thousands of codes. A code is read back from a member
loosely (`normalize_code`): case, spaces and dashes do not matter.

Seed advice: a newcomer who plays every earn game once under the pond's settings earns
`newcomer_points(settings)`: a first check-in, one vote and one friend invited. Games
whose prize is set per round (guess the price), random (red packets, the lottery) or
bought (purchases) are not counted — the advice is what every newcomer can count on.
An item priced above that gets a note in `/item add`'s answer.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date

from games.checkin import Rules, reward
from games.parsing import ParseError, fold, parse_points
from games.settings import PondSettings

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 10
CODE_MAX = 64  # characters of an uploaded code (the column's width)
MAX_PRICE = 10_000_000
MAX_STOCK = 1_000_000
MAX_LIMIT = 1_000
MAX_CASH_CENTS = 10**9  # 10,000,000 yuan
NAME_MAX = 128


def generate_code() -> str:
    """A fresh code: unguessable, typed at a checkout without confusion."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def code_bits() -> float:
    """The entropy of a generated code, in bits."""
    import math

    return CODE_LENGTH * math.log2(len(CODE_ALPHABET))


_CODE_SEPARATORS = re.compile(r"[\s\-]+")


def normalize_code(text: str) -> str:
    """What a person typed, as a generated code is stored: no spaces or dashes, capitals."""
    return _CODE_SEPARATORS.sub("", fold(text)).upper()


# -- `/item add` -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemArgs:
    """`/item add <price> <stock> [limit=<n>] [cash=<yuan>] [kind=coupon|goods]
    [from=<MM-DD>] [until=<MM-DD>] <name…>`. `limit` 0: no limit."""

    price: int
    stock: int
    name: str
    limit: int = 1
    cash_cents: int = 0
    kind: str = "coupon"
    active_from: date | None = None
    active_until: date | None = None


_CASH = re.compile(r"(\d{1,8})(?:\.(\d{1,2}))?")
_MONTH_DAY = re.compile(r"(\d{1,2})-(\d{1,2})")


def parse_whole(text: str, *, maximum: int, allow_zero: bool = True) -> int:
    """A whole number 0..maximum (1..maximum without `allow_zero`)."""
    s = fold(text)
    if s in ("0", "+0") and allow_zero:
        return 0
    return parse_points(s, maximum=maximum)


def parse_cash(text: str) -> int:
    """Yuan with up to two decimals (`9.9`, `12`, `0.50`), in cents."""
    m = _CASH.fullmatch(fold(text).lstrip("¥￥"))
    if m is None:
        raise ParseError("bad_cash")
    cents = int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
    if cents > MAX_CASH_CENTS:
        raise ParseError("bad_cash")
    return cents


def parse_month_day(text: str, today: date, *, future: bool = False) -> date:
    """`MM-DD` in `today`'s year, or next year's when it has already passed by more than
    half a year (a `from=01-15` typed in December means the coming January); `future`:
    the next such day on or after `today` (an end date is never in the past)."""
    m = _MONTH_DAY.fullmatch(fold(text))
    if m is None:
        raise ParseError("bad_date")
    month, day = int(m.group(1)), int(m.group(2))
    try:
        found = date(today.year, month, day)
    except ValueError:
        try:  # 02-29 outside a leap year: next year may have it
            found = date(today.year + 1, month, day)
        except ValueError:
            raise ParseError("bad_date") from None
        return found
    if (today - found).days > (0 if future else 183):
        try:
            found = date(today.year + 1, month, day)
        except ValueError:
            raise ParseError("bad_date") from None
    return found


_OPTIONS = ("limit", "cash", "kind", "from", "until")


def parse_item_add(args: str, today: date) -> ItemArgs:
    """The arguments after `/item add`; `today` is the shop's local day (for MM-DD)."""
    parts = fold(args).split()
    if len(parts) < 3:
        raise ParseError("usage")
    try:
        price = parse_whole(parts[0], maximum=MAX_PRICE)
        stock = parse_whole(parts[1], maximum=MAX_STOCK)
    except ParseError as exc:
        raise ParseError("bad_price_stock" if exc.code != "too_large" else "too_large") from None
    options: dict[str, str] = {}
    rest = parts[2:]
    while rest and "=" in rest[0] and rest[0].split("=", 1)[0].lower() in _OPTIONS:
        key, value = rest.pop(0).split("=", 1)
        key = key.lower()
        if key in options:
            raise ParseError("usage")
        options[key] = value
    name = " ".join(rest).strip()
    if not name:
        raise ParseError("no_name")
    if len(name) > NAME_MAX:
        raise ParseError("name_too_long")
    limit = 1
    if "limit" in options:
        try:
            limit = parse_whole(options["limit"], maximum=MAX_LIMIT)
        except ParseError:
            raise ParseError("bad_limit") from None
    cash = parse_cash(options["cash"]) if "cash" in options else 0
    kind = options.get("kind", "coupon").lower()
    if kind not in ("coupon", "goods"):
        raise ParseError("bad_kind")
    start = parse_month_day(options["from"], today) if "from" in options else None
    end = parse_month_day(options["until"], today, future=True) if "until" in options else None
    if start is not None and end is not None and end < start:
        try:  # `from=12-20 until=01-10`: the until is in the next year
            end = end.replace(year=end.year + 1)
        except ValueError:
            raise ParseError("bad_dates") from None
        if end < start or (end - start).days > 183:
            raise ParseError("bad_dates")
    if end is not None and end < today:
        raise ParseError("bad_dates")
    return ItemArgs(price, stock, name, limit, cash, kind, start, end)


def parse_item_id(text: str | None) -> int:
    """An item's or a redemption's id: `12` or `#12`."""
    s = fold(text or "").lstrip("#")
    if not s.isdigit() or len(s) > 15 or int(s) <= 0:
        raise ParseError("bad_id")
    return int(s)


# -- uploaded codes --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeLines:
    """Codes read from an upload: the new ones in order, the repeated ones (within the
    upload), and the lines that are no code (numbered from 1)."""

    codes: tuple[str, ...]
    repeated: tuple[str, ...]
    bad_lines: tuple[int, ...]


def parse_code_lines(text: str) -> CodeLines:
    """One code per line; in a CSV the first column (a first line `code` is a header).
    Blank lines are skipped; a code is at most 64 characters without inner spaces."""
    codes: list[str] = []
    seen: set[str] = set()
    repeated: list[str] = []
    bad: list[int] = []
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        cell = raw.split(",", 1)[0].split("\t", 1)[0].strip().strip('"').strip()
        if not cell:
            continue
        if number == 1 and cell.lower() in ("code", "codes", "券码"):
            continue
        if len(cell) > CODE_MAX or any(ch.isspace() for ch in cell) or not cell.isprintable():
            bad.append(number)
            continue
        if cell in seen:
            repeated.append(cell)
            continue
        seen.add(cell)
        codes.append(cell)
    return CodeLines(tuple(codes), tuple(repeated), tuple(bad))


# -- on sale ---------------------------------------------------------------------------


def on_sale_on(
    on_sale: bool, active_from: date | None, active_until: date | None, day: date
) -> bool:
    """Whether an item is sold on the local `day`."""
    if not on_sale:
        return False
    if active_from is not None and day < active_from:
        return False
    return active_until is None or day <= active_until


# -- seed advice -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewcomerEarnings:
    """What a newcomer earns playing each earn game once (see the module docstring)."""

    checkin: int
    vote: int
    referral: int

    @property
    def total(self) -> int:
        return self.checkin + self.vote + self.referral


def newcomer_points(settings: PondSettings) -> NewcomerEarnings:
    first = reward(
        Rules(
            base=settings.checkin_base,
            streak_step=settings.checkin_streak_step,
            streak_cap=settings.checkin_streak_cap,
            milestones=settings.checkin_milestones,
        ),
        1,
    )
    return NewcomerEarnings(first.total, settings.vote_points, settings.referral_points)


def above_newcomer(price: int, settings: PondSettings) -> int | None:
    """What a newcomer earns when `price` is more than that; None when they can afford it."""
    earned = newcomer_points(settings).total
    return earned if price > earned else None


def yuan(cents: int) -> str:
    """Cents as yuan with two decimals: `990` -> `9.90`."""
    return f"{cents // 100}.{cents % 100:02d}"
