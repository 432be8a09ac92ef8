"""Parsing of what people type: amounts, targets, durations. Pure functions.

Full-width digits (`１９９`) and other compatibility forms are folded with NFKC first, so
what a Chinese keyboard produces is accepted. Anything else is a `ParseError` whose
`code` names the problem; the caller turns it into a short, translated message.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

MAX_ADJUST = 1_000_000
MAX_REASON = 200


class ParseError(ValueError):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def fold(text: str) -> str:
    """NFKC-normalise and trim: full-width digits, letters and spaces become ASCII."""
    return unicodedata.normalize("NFKC", text).strip()


_INT = re.compile(r"[+]?\d{1,18}")


def parse_points(text: str, *, maximum: int = MAX_ADJUST) -> int:
    """A positive whole number of points, at most `maximum`."""
    s = fold(text).replace(",", "")
    digits = s.lstrip("+-")
    if not digits.isdigit():
        raise ParseError("not_a_number")
    if s.startswith("-"):
        raise ParseError("not_positive")
    if not _INT.fullmatch(s):
        raise ParseError("too_large")
    value = int(s)
    if value <= 0:
        raise ParseError("not_positive")
    if value > maximum:
        raise ParseError("too_large")
    return value


@dataclass(frozen=True, slots=True)
class AdjustArgs:
    """`/give <@username|user_id> <points> [reason]`, or as a reply: `<points> [reason]`."""

    username: str | None
    user_id: int | None
    points: int
    reason: str


USERNAME = re.compile(r"@[A-Za-z][A-Za-z0-9_]{3,31}")
USER_ID = re.compile(r"\d{1,20}")


def parse_target(word: str) -> tuple[str | None, int | None]:
    """The member an operator's command names: `@username` (without the @) or a user id;
    else `ParseError("bad_target")`."""
    if USERNAME.fullmatch(word):
        return word[1:], None
    if USER_ID.fullmatch(word) and 0 < int(word) < 2**63:
        return None, int(word)
    raise ParseError("bad_target")


def parse_adjust(args: str | None, *, replying: bool, maximum: int = MAX_ADJUST) -> AdjustArgs:
    parts = fold(args or "").split(maxsplit=2 if not replying else 1)
    username: str | None = None
    user_id: int | None = None
    if not replying:
        if not parts:
            raise ParseError("usage")
        username, user_id = parse_target(parts.pop(0))
    elif parts and USERNAME.fullmatch(parts[0]):
        # "/give @x 5" sent as a reply: the explicit target wins.
        return parse_adjust(args, replying=False, maximum=maximum)
    if not parts:
        raise ParseError("usage")
    points = parse_points(parts[0], maximum=maximum)
    reason = " ".join(parts[1:]).strip()
    if len(reason) > MAX_REASON:
        raise ParseError("reason_too_long")
    return AdjustArgs(username, user_id, points, reason)


_DURATION = re.compile(r"(\d{1,6})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, maximum: timedelta = timedelta(days=366)) -> timedelta:
    """`30s`, `10m`, `2h`, `1d` (also combined, `1h30m`)."""
    s = fold(text).lower()
    if not s:
        raise ParseError("bad_duration")
    pos = 0
    seconds = 0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            raise ParseError("bad_duration")
        seconds += int(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s) or seconds <= 0:
        raise ParseError("bad_duration")
    if seconds > maximum.total_seconds():
        raise ParseError("too_large")
    return timedelta(seconds=seconds)
