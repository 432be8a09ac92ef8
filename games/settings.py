"""Per-pond settings: every number a feature uses is a default an operator can change.

A pond stores only what differs from the defaults (a JSON object in `pond.settings`).
Each feature adds its fields here, grouped and prefixed by feature (`checkin_base`,
`redpacket_max_total`, …), each with its default and bounds; unknown keys in stored
JSON are ignored, so removing a setting never breaks an old database.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class PondSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    # -- F1 -----------------------------------------------------------------------
    # (timezone and language live in their own columns of `pond`)

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
