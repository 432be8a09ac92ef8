"""Scheduled promotion posts (大促预告): the command grammar, the frequency cap and the
sales planner. Pure functions; time is passed in.

    /promo at 2026-11-01 20:00 [pin] <text>        one post at a local time
    /promo at +2h [pin] <text>                     one post after a while
    /promo every 0 20 * * 5 [pin] <text>           a recurring post (5-field crontab)
    /promo list · /promo cancel <id>

The text may end with a line `[button text](https://…)`: the post gets a URL button.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from games.checkin import zone
from games.parsing import ParseError, fold, parse_duration, parse_points
from games.settings import PondSettings

MAX_AHEAD = timedelta(days=366)
MAX_BUTTON_TEXT = 64
MAX_URL = 1024
PIN_FLAGS = frozenset({"pin", "置顶"})

_TOKEN = re.compile(r"\S+")
_DAY = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,\-?]{1,40}")
_BUTTON = re.compile(r"\[([^\[\]\n]{1,64})\]\((.*)\)")
_ID = re.compile(r"#?(\d{1,12})")


@dataclass(frozen=True, slots=True)
class Button:
    text: str
    url: str


@dataclass(frozen=True, slots=True)
class PostRequest:
    """`/promo at …` or `/promo every …`, parsed (time not yet resolved)."""

    kind: str  # "at" | "every"
    local: datetime | None  # at: naive local date and time …
    delay: timedelta | None  # … or a delay from now
    cron: str | None  # every: the crontab expression
    pin: bool
    text: str
    button: Button | None


@dataclass(frozen=True, slots=True)
class PromoCommand:
    action: str  # "post" | "list" | "cancel"
    post: PostRequest | None = None
    post_id: int | None = None


def _tokens(s: str) -> list[re.Match[str]]:
    return list(_TOKEN.finditer(s))


def parse_button_url(raw: str) -> str:
    """An http(s) URL fit for a button, or `ParseError("bad_url")`."""
    url = fold(raw)
    if len(url) > MAX_URL or any(c in url for c in '<>"\\ \t\n'):
        raise ParseError("bad_url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ParseError("bad_url") from None
    if parts.scheme not in ("http", "https") or not host or "." not in host.strip("."):
        raise ParseError("bad_url")
    return url


def split_button(text: str) -> tuple[str, Button | None]:
    """Take a `[label](url)` last line off the text."""
    body, _nl, last = text.rstrip().rpartition("\n")
    if not _nl:
        body, last = "", text.strip()
    m = _BUTTON.fullmatch(last.strip())
    if m is None:
        return text.strip(), None
    label = m.group(1).strip()
    if not label:
        raise ParseError("bad_button")
    return body.strip(), Button(label, parse_button_url(m.group(2)))


def parse_promo(args: str | None) -> PromoCommand:
    raw = args or ""
    toks = _tokens(raw)
    if not toks:
        raise ParseError("usage")
    verb = fold(toks[0].group(0)).lower()
    if verb == "list" and len(toks) == 1:
        return PromoCommand("list")
    if verb == "cancel":
        if len(toks) != 2:
            raise ParseError("usage")
        m = _ID.fullmatch(fold(toks[1].group(0)))
        if m is None:
            raise ParseError("bad_id")
        return PromoCommand("cancel", post_id=int(m.group(1)))
    if verb not in ("at", "every"):
        raise ParseError("usage")

    local, delay, cron, used = parse_when(verb, [fold(t.group(0)) for t in toks[1:7]])
    i = 1 + used
    pin = False
    while i < len(toks) and fold(toks[i].group(0)).lower() in PIN_FLAGS:
        pin = True
        i += 1
    rest = raw[toks[i].start() :] if i < len(toks) else ""
    text, button = split_button(rest)
    if not text:
        raise ParseError("no_text")
    return PromoCommand("post", PostRequest(verb, local, delay, cron, pin, text, button))


def parse_when(
    verb: str, words: Sequence[str]
) -> tuple[datetime | None, timedelta | None, str | None, int]:
    """The time after `at` (`YYYY-MM-DD HH:MM` or `+2h`) or `every` (5 crontab fields)
    at the start of `words`: (naive local time, delay, crontab, how many words it took)."""
    if verb == "at":
        if not words:
            raise ParseError("usage")
        if words[0].startswith("+"):
            return None, parse_duration(words[0][1:], maximum=MAX_AHEAD), None, 1
        if len(words) < 2:
            raise ParseError("bad_time")
        return _local_time(words[0], words[1]), None, None, 2
    fields = [w.lower() for w in words[:5]]
    if len(fields) < 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise ParseError("bad_cron")
    fields[4] = crontab_weekdays(fields[4])
    return None, None, " ".join(fields), 5


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_WEEKDAY_PART = re.compile(r"(\*|\w{1,3})(?:-(\w{1,3}))?(?:/(\d{1,2}))?")


def _weekday(token: str) -> int:
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    if token in _WEEKDAYS:
        return _WEEKDAYS.index(token)
    raise ParseError("bad_cron")


def crontab_weekdays(field: str) -> str:
    """A crontab weekday field (0 or 7 = Sunday, 1 = Monday … names too) as weekday
    names. The scheduler library numbers weekdays from Monday = 0, so a number passed
    through would move every weekly post by a day; names mean the same to both."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        m = _WEEKDAY_PART.fullmatch(part)
        if m is None:
            raise ParseError("bad_cron")
        start_s, end_s, step_s = m.groups()
        step = int(step_s) if step_s else 1
        if step < 1:
            raise ParseError("bad_cron")
        if start_s == "*":
            if end_s:
                raise ParseError("bad_cron")
            first, last = 0, 6
        else:
            first = _weekday(start_s)
            last = (
                (7 if end_s == "7" else _weekday(end_s)) if end_s else (first if not step_s else 6)
            )
            if last < first:
                raise ParseError("bad_cron")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def _local_time(day_s: str, time_s: str) -> datetime:
    d, t = _DAY.fullmatch(day_s), _TIME.fullmatch(time_s)
    if d is None or t is None:
        raise ParseError("bad_time")
    try:
        return datetime(
            int(d.group(1)), int(d.group(2)), int(d.group(3)), int(t.group(1)), int(t.group(2))
        )
    except ValueError:
        raise ParseError("bad_time") from None


def resolve_at(request: PostRequest, now: datetime, timezone: str) -> datetime:
    """The UTC time of a one-off post; it must lie ahead, within a year."""
    if request.delay is not None:
        at = now + request.delay
    else:
        assert request.local is not None
        at = request.local.replace(tzinfo=zone(timezone)).astimezone(UTC)
    if at <= now:
        raise ParseError("in_the_past")
    if at - now > MAX_AHEAD:
        raise ParseError("too_far")
    return at


# -- the frequency cap -----------------------------------------------------------------

Interval = tuple[datetime, datetime]  # [start, end)


@dataclass(frozen=True, slots=True)
class CapVerdict:
    allowed: bool
    conflict: datetime | None = None  # the counted post that is too close
    next_allowed: datetime | None = None  # the earliest time at or after the wish that fits


def _exempt(at: datetime, exempt: Sequence[Interval]) -> bool:
    return any(start <= at < end for start, end in exempt)


def check_cap(
    at: datetime, others: Sequence[datetime], exempt: Sequence[Interval], period: timedelta
) -> CapVerdict:
    """At most one marketing post per `period` in a pond, outside the exempt phases.

    `others` are the pond's other posts (sent or scheduled). Posts inside an exempt
    interval (warm-up, sprint) are neither capped nor counted. A refused time comes with
    the post it collides with and the earliest time at or after it that would pass."""
    if period <= timedelta(0) or _exempt(at, exempt):
        return CapVerdict(True)
    counted = [o for o in others if not _exempt(o, exempt)]

    def fits(t: datetime) -> bool:
        return _exempt(t, exempt) or all(abs(o - t) >= period for o in counted)

    if fits(at):
        return CapVerdict(True)
    conflict = min((o for o in counted if abs(o - at) < period), key=lambda o: abs(o - at))
    candidates = sorted(
        {o + period for o in counted if o + period > at} | {s for s, _e in exempt if s > at}
    )
    nxt = next(t for t in candidates if fits(t))
    return CapVerdict(False, conflict, nxt)


@dataclass(frozen=True, slots=True)
class CapRefusal:
    """Why a post is refused, over all its target ponds: the first refused pond and the
    post it collides with, the latest of the refused ponds' next allowed times (the
    earliest time the whole post could pass), and how many ponds refused."""

    chat_id: int
    conflict: datetime | None
    next_allowed: datetime | None
    ponds: int


def over_cap(verdicts: Mapping[int, CapVerdict]) -> frozenset[int]:
    """The ponds whose verdict refuses the post (a recurring post skips them)."""
    return frozenset(chat_id for chat_id, v in verdicts.items() if not v.allowed)


def cap_refusal(verdicts: Mapping[int, CapVerdict], order: Sequence[int]) -> CapRefusal | None:
    """The refusal of a post to the ponds `order` (their verdicts in `verdicts`), or None
    when every pond allows it. The first refused pond in `order` is the one quoted."""
    refused = [(c, verdicts[c]) for c in order if not verdicts[c].allowed]
    if not refused:
        return None
    first_chat, first = refused[0]
    latest = max((v.next_allowed for _c, v in refused if v.next_allowed), default=None)
    return CapRefusal(first_chat, first.conflict, latest, len(refused))


# -- being late and confirming ----------------------------------------------------------


def grace(settings: PondSettings | None) -> timedelta:
    """How late a post may still go out: a pond's post by its pond's
    `promo_grace_minutes`; a broadcast (no single pond, None) by the default."""
    return timedelta(minutes=(settings or PondSettings()).promo_grace_minutes)


def within_grace(due: datetime, now: datetime, grace: timedelta) -> bool:
    """A post due at `due` and run at `now` is still sent when it is at most `grace`
    late (exactly `grace` late included); later it is recorded as missed."""
    return now - due <= grace


def draft_author(user_id: int | None, sender_chat_id: int | None, chat_id: int) -> int | None:
    """Who owns a draft: the member who wrote the command; for an anonymous admin (the
    group speaking as itself) the group's id; nobody for a channel or another chat."""
    if user_id is not None:
        return user_id
    if sender_chat_id is not None and sender_chat_id == chat_id:
        return chat_id
    return None


class ConfirmRight(StrEnum):
    yes = "yes"  # the author
    if_operator = "if_operator"  # an anonymous admin's post: any operator of the pond
    no = "no"


def confirm_right(author_id: int, preview_chat_id: int, presser_id: int) -> ConfirmRight:
    """Who may press a preview's buttons: its author; for a post written by an anonymous
    admin (its author is the group the preview is in; group ids are negative) any
    operator of that group."""
    if presser_id == author_id:
        return ConfirmRight.yes
    if author_id == preview_chat_id and author_id < 0:
        return ConfirmRight.if_operator
    return ConfirmRight.no


# -- the planner -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    sales: int
    per_buyer: int
    buyers: int
    invite_low: int  # buyers + 20 %
    invite: int  # buyers + 25 %
    invite_high: int  # buyers + 30 %


def _ceil_percent(n: int, percent: int) -> int:
    return -(-n * percent // 100)


def plan(sales: int, per_buyer: int) -> Plan:
    """`/plan 200 5`: 40 buyers; with the seed's 20–30 % no-show margin invite 48–52 (50)."""
    buyers = -(-sales // per_buyer)
    return Plan(
        sales,
        per_buyer,
        buyers,
        _ceil_percent(buyers, 120),
        _ceil_percent(buyers, 125),
        _ceil_percent(buyers, 130),
    )


MAX_PLAN = 10_000_000


def parse_plan(args: str | None) -> tuple[int, int]:
    parts = fold(args or "").split()
    if len(parts) != 2:
        raise ParseError("usage")
    return parse_points(parts[0], maximum=MAX_PLAN), parse_points(parts[1], maximum=MAX_PLAN)
