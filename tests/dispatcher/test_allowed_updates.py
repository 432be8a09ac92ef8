"""The bot asks Telegram for exactly the update types its routers handle: a type nobody
handles is traffic for nothing, and a handled type left out (`chat_member` must be asked
for by name) would never arrive."""

from __future__ import annotations

from bot.app import ALLOWED_UPDATES
from tests.rig.client import Harness


async def test_the_bot_asks_for_exactly_the_update_types_it_handles(harness: Harness) -> None:
    assert sorted(ALLOWED_UPDATES) == sorted(harness.dp.resolve_used_update_types())
