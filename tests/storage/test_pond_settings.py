"""Per-pond settings: defaults, overrides stored, bad values refused."""

from __future__ import annotations

from games.settings import PondSettings
from storage import repo
from storage.db import Database


def test_from_stored_ignores_unknown_and_bad_values() -> None:
    s = PondSettings.from_stored({"no_such_setting": 1})
    assert s == PondSettings()
    assert s.overrides() == {}


async def test_change_and_read_back(db: Database) -> None:
    async with db.transaction() as session:
        await repo.upsert_pond(session, -100, title="P", chat_type="supergroup")
        assert await repo.pond_settings(session, -100) == PondSettings()
        assert await repo.pond_settings(session, -999) == PondSettings()
