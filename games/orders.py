"""Purchases (SPEC F2): amounts in yuan, the points they earn, `/order`'s arguments and
the rows of an orders CSV. Pure functions.

Money is never a float. An amount is read as text into whole cents (`299.50` -> 29950);
full-width digits (`２９９．５`), a leading ¥ and a trailing 元 are accepted, thousands
separators only where they group thousands (`1,299.00`; `299,50` is refused rather than
read as ¥29,950). Points are ⌊cents × points_per_yuan / 100⌋, computed exactly: the
setting (a float) is taken by its shortest decimal form, `Decimal(str(ppy))`, so 1.1
points per yuan on ¥10.00 gives 11 points, not 10.

An order is keyed by its order number; a typed order without one is keyed by its
command message (`msg:<chat_id>:<message_id>`), so that prefix is reserved.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from games.checkin import zone
from games.parsing import USER_ID, USERNAME, ParseError, fold, parse_target

MAX_ORDER_CENTS = 100_000_000  # ¥1,000,000.00: above that an amount is a typo
ORDER_NO_MAX = 64
MESSAGE_KEY_PREFIX = "msg:"
SHOP_TIMEZONE = "Asia/Shanghai"  # a paid_at without an offset is read on this clock

_YUAN = re.compile(r"(\d{1,3}(?:,\d{3})+|\d{1,15})(?:\.(\d{1,2}))?")
_ORDER_NO = re.compile(r"[^\s\x00-\x1f\x7f,]{1,64}")


class AmountError(ParseError):
    """`code`: not_a_number, not_positive, too_precise (more than 2 decimals), too_large."""


def parse_yuan(text: str, *, maximum: int = MAX_ORDER_CENTS) -> int:
    """An amount of yuan with up to 2 decimals, > 0, as whole cents."""
    s = fold(text).removeprefix("¥").removesuffix("元").strip()
    if s.startswith("-"):
        raise AmountError("not_positive")
    s = s.removeprefix("+")
    m = _YUAN.fullmatch(s)
    if m is None:
        if re.fullmatch(r"\d[\d,]*\.\d{3,}", s):
            raise AmountError("too_precise")
        raise AmountError("not_a_number")
    whole = int(m.group(1).replace(",", ""))
    cents = whole * 100 + int((m.group(2) or "0").ljust(2, "0"))
    if cents <= 0:
        raise AmountError("not_positive")
    if cents > maximum:
        raise AmountError("too_large")
    return cents


def points_for(cents: int, points_per_yuan: float) -> int:
    """⌊cents × points_per_yuan / 100⌋, exactly (see module docstring)."""
    rate = Fraction(Decimal(str(points_per_yuan)))
    return int(cents * rate // 100)


def yuan(cents: int) -> str:
    """Cents as yuan with two decimals: 30950 -> `309.50`."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"


def parse_order_no(text: str) -> str:
    """An order number as given: 1-64 visible characters, no spaces or commas; the
    `msg:` prefix belongs to typed orders without a number."""
    s = fold(text)
    if not _ORDER_NO.fullmatch(s) or s.lower().startswith(MESSAGE_KEY_PREFIX):
        raise ParseError("bad_order_no")
    return s


def message_key(chat_id: int, message_id: int) -> str:
    """The order number of a typed order that named none: its command message."""
    return f"{MESSAGE_KEY_PREFIX}{chat_id}:{message_id}"


@dataclass(frozen=True, slots=True)
class OrderArgs:
    """`/order <@username|user_id> <amount> [order_no]`; as a reply, `<amount> [order_no]`."""

    username: str | None
    user_id: int | None
    cents: int
    order_no: str | None


def parse_order(args: str | None, *, replying: bool) -> OrderArgs:
    parts = fold(args or "").split()
    username: str | None = None
    user_id: int | None = None
    if replying and parts and USERNAME.fullmatch(parts[0]):
        replying = False  # "/order @x 99" sent as a reply: the explicit target wins
    if not replying:
        if not parts:
            raise ParseError("usage")
        username, user_id = parse_target(parts.pop(0))
    if not 1 <= len(parts) <= 2:
        raise ParseError("usage")
    cents = parse_yuan(parts[0])
    order_no = parse_order_no(parts[1]) if len(parts) == 2 else None
    return OrderArgs(username, user_id, cents, order_no)


# -- the orders CSV (`pondbot import orders FILE`) ------------------------------------

REQUIRED_COLUMNS = ("order_no", "user_id", "amount")
OPTIONAL_COLUMNS = ("paid_at", "username")
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class OrderRow:
    line: int  # where it starts in the file (the header is line 1)
    order_no: str
    user_id: int
    cents: int
    paid_at: datetime | None  # aware; None: the time of the import


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


_AMOUNT_PROBLEMS = {
    "not_a_number": "is not an amount of yuan",
    "not_positive": "must be more than 0",
    "too_precise": "has more than 2 decimals",
    "too_large": f"is over {yuan(MAX_ORDER_CENTS)}",
}


def parse_paid_at(text: str, *, now: datetime, timezone: str = SHOP_TIMEZONE) -> datetime:
    """An ISO date-time; without an offset it is the shop's local time."""
    s = fold(text)
    try:
        at = datetime.fromisoformat(s)
    except ValueError:
        raise ParseError("bad_date") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone(timezone))
    if not EARLIEST <= at <= now + FUTURE_SLACK:
        raise ParseError("date_out_of_range")
    return at


def parse_orders_csv(
    lines: Iterable[str], *, now: datetime, timezone: str = SHOP_TIMEZONE
) -> tuple[list[OrderRow], list[BadLine]]:
    """Every order of the file, and every bad line (all of them, not just the first).

    `lines` is the decoded text (a BOM already removed). Blank lines are skipped. Whether
    a user exists, or an order was recorded before, is the database's to say."""
    reader = csv.reader(lines)
    rows: list[OrderRow] = []
    bad: list[BadLine] = []
    try:
        header = next(reader)
    except StopIteration:
        return [], [BadLine(1, "the file is empty: the header order_no,user_id,amount is missing")]
    except csv.Error as exc:
        return [], [BadLine(1, f"not CSV: {exc}")]
    names = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    unknown = [n for n in names if n not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if missing or unknown or doubled:
        wrong = []
        if missing:
            wrong.append("missing column " + ", ".join(missing))
        if unknown:
            wrong.append("unknown column " + ", ".join(repr(u) for u in unknown))
        if doubled:
            wrong.append("column named twice: " + ", ".join(doubled))
        return [], [BadLine(1, "; ".join(wrong))]
    where = {n: i for i, n in enumerate(names)}
    first_line: dict[str, int] = {}
    last = reader.line_num
    while True:
        start = last + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            bad.append(BadLine(reader.line_num, f"not CSV: {exc}"))
            break
        last = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(names):
            bad.append(BadLine(start, f"{len(record)} fields, the header has {len(names)}"))
            continue
        problems: list[str] = []

        def cell(name: str, record: list[str] = record) -> str:
            i = where.get(name)
            return record[i].strip() if i is not None else ""

        order_no = cell("order_no")
        try:
            order_no = parse_order_no(order_no)
        except ParseError:
            problems.append(
                "order_no is missing" if not order_no else
                f"order_no {order_no[:70]!r} must be 1-{ORDER_NO_MAX} characters without "
                f"spaces or commas, not starting with {MESSAGE_KEY_PREFIX!r}"
            )
            order_no = ""
        raw_user = fold(cell("user_id"))
        user_id = 0
        if USER_ID.fullmatch(raw_user) and 0 < int(raw_user) < 2**63:
            user_id = int(raw_user)
        else:
            problems.append(f"user_id {raw_user[:30]!r} is not a user id")
        cents = 0
        raw_amount = cell("amount")
        try:
            cents = parse_yuan(raw_amount)
        except AmountError as exc:
            problems.append(f"amount {raw_amount[:30]!r} {_AMOUNT_PROBLEMS[exc.code]}")
        paid_at: datetime | None = None
        raw_paid = cell("paid_at")
        if raw_paid:
            try:
                paid_at = parse_paid_at(raw_paid, now=now, timezone=timezone)
            except ParseError as exc:
                problems.append(
                    f"paid_at {raw_paid[:40]!r} is not an ISO date-time"
                    if exc.code == "bad_date" else
                    f"paid_at {raw_paid[:40]!r} is before 2000 or in the future"
                )
        if order_no:
            seen = first_line.setdefault(order_no, start)
            if seen != start:
                problems.append(f"order_no {order_no!r} is already on line {seen}")
        if problems:
            bad.append(BadLine(start, "; ".join(problems)))
        else:
            rows.append(OrderRow(start, order_no, user_id, cents, paid_at))
    return rows, bad


__all__ = [
    "MAX_ORDER_CENTS",
    "AmountError",
    "BadLine",
    "OrderArgs",
    "OrderRow",
    "message_key",
    "parse_order",
    "parse_order_no",
    "parse_orders_csv",
    "parse_paid_at",
    "parse_yuan",
    "points_for",
    "yuan",
]
