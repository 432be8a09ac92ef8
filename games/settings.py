"""Per-pond settings: every number a feature uses is a default an operator can change.

A pond stores only what differs from the defaults (a JSON object in `pond.settings`).
Each feature adds its fields here, grouped and prefixed by feature (`checkin_base`,
`redpacket_max_total`, …), each with its default and bounds; unknown keys in stored
JSON are ignored, so removing a setting never breaks an old database.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from difflib import get_close_matches
from functools import cache
from typing import Any, Literal
from zoneinfo import available_timezones

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from games.parsing import fold
from games.tiers import parse_tiers


class PondSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    # -- F1 -----------------------------------------------------------------------
    # (timezone and language live in their own columns of `pond`)
    # Points a pond operator who is not a global operator may /give in this pond per
    # local day (global operators, listed in OPERATOR_IDS, are not limited).
    operator_give_daily_cap: int = Field(default=2_000, ge=0, le=10_000_000)

    # -- F3 daily check-in (rules in games/checkin.py) -----------------------------
    checkin_base: int = Field(default=5, ge=0, le=10_000)
    checkin_streak_step: int = Field(default=1, ge=0, le=1_000)
    checkin_streak_cap: int = Field(default=5, ge=0, le=10_000)
    # streak day -> bonus points paid by the check-in that reaches it
    checkin_milestones: dict[int, int] = Field(
        default_factory=lambda: {7: 20, 30: 100}, max_length=20
    )
    checkin_makeup_cost: int = Field(default=20, ge=1, le=1_000_000)
    checkin_makeup_every_days: int = Field(default=7, ge=1, le=366)
    checkin_makeup_window_days: int = Field(default=7, ge=1, le=366)
    # A typed check-in gets its own group reply only while fewer messages than this went
    # to the pond in the last minute (else the board shows it); like `guess_quiet_below`.
    checkin_quiet_below: int = Field(default=3, ge=0, le=20)

    # -- F6 red packets (rules in games/red_packet.py) -----------------------------
    redpacket_max_total: int = Field(default=100_000, ge=1, le=10_000_000)
    redpacket_max_shares: int = Field(default=200, ge=1, le=1_000)
    redpacket_expiry_seconds: int = Field(default=86_400, ge=10, le=30 * 86_400)
    redpacket_max_expiry_seconds: int = Field(default=7 * 86_400, ge=10, le=30 * 86_400)
    redpacket_members_may_send: bool = True

    # -- F4 guess the price, F5 votes, F9 invites (games/guess.py, games/votes.py) --
    guess_attempts: int = Field(default=3, ge=1, le=20)  # hit mode: K
    guess_winners: int = Field(default=1, ge=1, le=100)  # W
    guess_tolerance_cents: int = Field(default=0, ge=0, le=10**8)  # hit mode: 0 = exact
    # A guess gets its own group reply only while fewer messages than this went to the
    # pond in the last minute (else the round post's count shows it).
    guess_quiet_below: int = Field(default=3, ge=0, le=20)
    vote_points: int = Field(default=2, ge=0, le=10_000)
    referral_points: int = Field(default=20, ge=0, le=100_000)

    # -- F13 daily tasks (rules in games/tasks.py) ---------------------------------
    # Points for doing every task of a day in a pond: once per member and day; 0: none.
    task_bonus: int = Field(default=10, ge=0, le=100_000)

    # -- F10 birthdays, F14 points expiry (games/birthday.py, games/expiry.py) -------
    # Shop-wide (`SHOP_WIDE`): read from the shop's defaults (a member's birthday and lots
    # are not a pond's). The greeting and gift go out at `birthday_hour` in the shop's
    # timezone.
    birthday_points: int = Field(default=50, ge=0, le=100_000)
    birthday_hour: int = Field(default=9, ge=0, le=23)
    # Points expire this many days after the day they were earned; 0: never.
    points_expiry_days: int = Field(default=0, ge=0, le=3_660)
    points_expiry_reminder_days: int = Field(default=7, ge=0, le=366)

    @field_validator("checkin_milestones")
    @classmethod
    def _milestones_in_bounds(cls, value: dict[int, int]) -> dict[int, int]:
        for day, bonus in value.items():
            if not 1 <= day <= 3660 or not 0 <= bonus <= 1_000_000:
                raise ValueError("milestones: days 1..3660, bonus 0..1000000")
        return dict(sorted(value.items()))

    # -- F11 promotion posts (rules in games/promo.py, games/campaign.py) -----------
    promo_grace_minutes: int = Field(default=10, ge=0, le=24 * 60)  # late, yet still sent
    promo_cap_days: int = Field(default=7, ge=0, le=365)  # one post per N days; 0: no cap
    promo_cap_exempt_phases: tuple[Literal["buildup", "warmup", "sprint", "afterglow"], ...] = (
        "warmup",
        "sprint",
    )

    # -- F7 shop, F8 lottery, F2 purchases, F10 tiers ------------------------------
    # Free lottery draws per member per local day, then paid ones at `lottery_cost`.
    lottery_free_per_day: int = Field(default=1, ge=0, le=100)
    lottery_cost: int = Field(default=10, ge=0, le=1_000_000)
    # A typed /draw gets its own group reply only while fewer messages than this went to
    # the pond in the last minute (else the answer goes by DM or not at all).
    lottery_quiet_below: int = Field(default=3, ge=0, le=20)
    # Points per yuan of a recorded purchase: points = floor(amount x this).
    points_per_yuan: float = Field(default=1.0, ge=0, le=1_000)
    # Tiers from lifetime spend: `name:from_yuan:discount`, comma separated, ascending.
    tiers: str = Field(default="VIP1:0.01:9.8,VIP2:300:9.5", max_length=500)

    @field_validator("tiers")
    @classmethod
    def _tiers_readable(cls, value: str) -> str:
        parse_tiers(value)  # raises TiersError (a ValueError) saying what is wrong
        return value.strip()

    # -- F10 surveys and segments (rules in games/segments.py) ----------------------
    # The segments' thresholds are shop-wide (`SHOP_WIDE`), `survey_points` a pond's.
    survey_points: int = Field(default=2, ge=0, le=10_000)  # once per member and survey
    # RFM: each of recency, frequency and money is "high" against its threshold — bought
    # within `segment_recent_days`, at least `segment_min_orders` orders, at least
    # `segment_min_spend` yuan in all; three highs gold, two key, one ordinary, none low.
    segment_recent_days: int = Field(default=90, ge=1, le=3_660)
    segment_min_orders: int = Field(default=3, ge=1, le=100_000)
    segment_min_spend: int = Field(default=300, ge=1, le=10_000_000)
    # Churn risk: no activity (a message, a button, a purchase) for this many days.
    churn_days: int = Field(default=30, ge=1, le=3_660)

    @classmethod
    def from_stored(cls, stored: dict[str, Any] | None) -> PondSettings:
        """Defaults overlaid with what the pond stored; bad stored values fall back."""
        stored = dict(stored or {})
        try:
            return cls.model_validate(stored)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            return cls.model_validate({k: v for k, v in stored.items() if k not in bad})

    def changed(self, **changes: Any) -> PondSettings:
        """A validated copy with `changes` applied (raises `ValidationError`)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def overrides(self) -> dict[str, Any]:
        """What differs from the defaults: what gets stored."""
        defaults = type(self)()
        return {k: v for k, v in self.model_dump().items() if getattr(defaults, k) != v}


# -- reading and showing settings as text (`/settings key=value …`) -------------------
#
# Every setting an operator can change: the fields above, then the two that live in
# their own columns of `pond`. Values are typed as one word each, lists comma separated
# without spaces: `checkin_milestones=7:20,30:100` (streak day:bonus), `tiers=VIP1:0.01:
# 9.8,VIP2:300:9.5` (name:from_yuan:discount), `promo_cap_exempt_phases=warmup,sprint`,
# switches on|off; `-` (or `none`) is the empty list.

POND_COLUMNS = ("timezone", "language")
LANGUAGES = ("zh", "en")
PHASES = ("buildup", "warmup", "sprint", "afterglow")
_EMPTY = frozenset({"-", "none", "无", "空"})
_TRUE = frozenset({"on", "true", "yes", "1", "开", "是"})
_FALSE = frozenset({"off", "false", "no", "0", "关", "否"})


# How many of the shop's points are handed out, and what bounds a pond's own operators:
# points are shop-wide, so a pond's admin changing these could mint (a check-in worth
# 10,000, a give cap of millions). In a pond only global operators change them.
SHOP_LEVEL = frozenset({
    "operator_give_daily_cap",
    "checkin_base", "checkin_streak_step", "checkin_streak_cap", "checkin_milestones",
    "vote_points", "referral_points", "task_bonus",
    "lottery_free_per_day", "lottery_cost",
    "points_per_yuan", "tiers",
    "birthday_points", "birthday_hour", "points_expiry_days", "points_expiry_reminder_days",
    "survey_points", "segment_recent_days", "segment_min_orders", "segment_min_spend",
    "churn_days",
})


# Shop-wide: what reads them reads the shop-wide defaults only (a member's birthday, lots
# and segment belong to the shop, not to a pond: the birthday and expiry jobs, the
# segments), so a pond has no value of its own. In a pond, `/settings` shows the shop's
# value and refuses to change them; a global operator sets them in a private chat, and
# every pond follows (storage/settings.py).
SHOP_WIDE = frozenset({
    "birthday_points", "birthday_hour", "points_expiry_days", "points_expiry_reminder_days",
    "segment_recent_days", "segment_min_orders", "segment_min_spend", "churn_days",
})


def _named(args: str | None, among: frozenset[str]) -> list[str]:
    keys = (word.partition("=")[0].strip().lower() for word in fold(args or "").split())
    return sorted({k for k in keys if k in among})


def shop_level_keys(args: str | None) -> list[str]:
    """The shop-level settings a `key=value …` argument names."""
    return _named(args, SHOP_LEVEL)


def shop_wide_keys(args: str | None) -> list[str]:
    """The shop-wide settings a `key=value …` argument names."""
    return _named(args, SHOP_WIDE)


def setting_names() -> tuple[str, ...]:
    """Every setting, in the order `/settings` shows them."""
    return (*POND_COLUMNS, *PondSettings.model_fields)


@dataclass(frozen=True, slots=True)
class Allowed:
    """What a setting accepts: `kind` is int, number, bool, milestones, phases, tiers,
    timezone or language; numbers have bounds, lists and languages their choices."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


def allowed(name: str) -> Allowed:
    if name == "timezone":
        return Allowed("timezone")
    if name == "language":
        return Allowed("language", choices=LANGUAGES)
    if name == "checkin_milestones":
        return Allowed("milestones")
    if name == "promo_cap_exempt_phases":
        return Allowed("phases", choices=PHASES)
    if name == "tiers":
        return Allowed("tiers")
    field = PondSettings.model_fields[name]
    if field.annotation is bool:
        return Allowed("bool")
    low = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, Le)), None)
    kind = "number" if field.annotation is float else "int"
    return Allowed(kind, float(low) if low is not None else None,  # type: ignore[arg-type]
                   float(high) if high is not None else None)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SettingError:
    """One refused pair. `code`: `unknown` (no such setting; `suggestions` are near
    names), `bad` (a value the setting does not accept; `detail` may say why), `pair`
    (not `key=value`), `twice` (the same setting given twice)."""

    code: str
    key: str
    suggestions: tuple[str, ...] = ()
    detail: str = ""


class BadValue(ValueError):
    pass


@cache
def _zones() -> dict[str, str]:
    return {z.lower(): z for z in available_timezones()}


def _number(text: str, whole: bool) -> float:
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation:
        raise BadValue("") from None
    if not value.is_finite() or (whole and value != value.to_integral_value()):
        raise BadValue("")
    return int(value) if whole else float(value)


def parse_value(name: str, raw: str) -> Any:
    """The value of setting `name` typed as `raw` (raises `BadValue`); bounds are checked
    here too, so an error names the setting."""
    text = fold(raw)
    spec = allowed(name)
    if spec.kind == "timezone":
        zone_name = _zones().get(text.lower())
        if zone_name is None:
            raise BadValue("")
        return zone_name
    if spec.kind == "language":
        if text.lower() not in LANGUAGES:
            raise BadValue("")
        return text.lower()
    if spec.kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise BadValue("")
    empty = text.lower() in _EMPTY
    if spec.kind == "milestones":
        milestones: dict[int, int] = {}
        for part in [] if empty else text.split(","):
            day, sep, bonus = part.partition(":")
            if not sep:
                raise BadValue("")
            milestones[int(_number(day.strip(), True))] = int(_number(bonus.strip(), True))
        return milestones
    if spec.kind == "phases":
        phases = [] if empty else [p.strip().lower() for p in text.split(",")]
        if any(p not in PHASES for p in phases):
            raise BadValue("")
        return tuple(dict.fromkeys(phases))
    if spec.kind == "tiers":
        return "" if empty else text
    value = _number(text, spec.kind == "int")
    if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
        raise BadValue("")
    return value


def format_value(name: str, value: Any) -> str:
    """A value as `/settings` shows it and `parse_value` reads it back."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if name == "checkin_milestones":
        return ",".join(f"{d}:{b}" for d, b in sorted(value.items())) or "-"
    if name == "promo_cap_exempt_phases":
        return ",".join(value) or "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "-"


@dataclass(frozen=True, slots=True)
class Effective:
    """Every setting of one scope: a pond's (or the shop-wide defaults)."""

    settings: PondSettings
    timezone: str
    language: str

    def value(self, name: str) -> Any:
        return getattr(self, name) if name in POND_COLUMNS else getattr(self.settings, name)

    def text(self, name: str) -> str:
        return format_value(name, self.value(name))

    def differing(self, other: Effective) -> list[str]:
        """The settings whose values differ from `other`'s, in `setting_names` order."""
        return [n for n in setting_names() if self.value(n) != other.value(n)]


def parse_pairs(args: str | None) -> tuple[dict[str, str], list[SettingError]]:
    """`key=value key=value …` into raw values by setting name, and what was refused."""
    pairs: dict[str, str] = {}
    errors: list[SettingError] = []
    names = setting_names()
    for word in fold(args or "").split():
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        if not sep or not key or not value.strip():
            errors.append(SettingError("pair", word))
        elif key not in names:
            near = tuple(get_close_matches(key, names, n=3, cutoff=0.6))
            if not near:  # a part of a name (`base`, `milestones`) finds the names with it
                near = tuple(n for n in names if key in n)[:3]
            errors.append(SettingError("unknown", key, near))
        elif key in pairs:
            errors.append(SettingError("twice", key))
        else:
            pairs[key] = value
    return pairs, errors


def apply_pairs(current: Effective, args: str | None) -> tuple[Effective, list[SettingError]]:
    """`current` with every pair of `args` applied, or `current` and every refused pair:
    all are checked before anything changes, so one bad pair changes nothing."""
    pairs, errors = parse_pairs(args)
    values: dict[str, Any] = {}
    for key, raw in pairs.items():
        try:
            values[key] = parse_value(key, raw)
        except (BadValue, ValueError):
            errors.append(SettingError("bad", key))
    if errors:
        return current, errors
    numbers = {k: v for k, v in values.items() if k not in POND_COLUMNS}
    try:
        settings = current.settings.changed(**numbers)
    except ValidationError as exc:
        for e in exc.errors():
            key = str(e["loc"][0]) if e["loc"] else ""
            detail = str(e.get("ctx", {}).get("error", "")) if key == "tiers" else ""
            errors.append(SettingError("bad", key, detail=detail))
        return current, errors
    return Effective(
        settings,
        values.get("timezone", current.timezone),
        values.get("language", current.language),
    ), []
