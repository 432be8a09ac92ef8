"""Per-pond settings: every number a feature uses is a default an operator can change.

A pond stores only what differs from the defaults (a JSON object in `pond.settings`).
Each feature adds its fields here, grouped and prefixed by feature (`checkin_base`,
`redpacket_max_total`, …), each with its default and bounds; unknown keys in stored
JSON are ignored, so removing a setting never breaks an old database.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
