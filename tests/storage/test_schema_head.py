"""The start-up check that spares a serving bot alembic's memory: it answers True only at
the shipped head, and alembic agrees with it."""

from __future__ import annotations

from pathlib import Path

from storage import migrate
from storage.db import Database
from storage.schema import at_head, shipped_head


def test_the_shipped_head_is_alembics() -> None:
    assert shipped_head() == migrate.head_revision()


async def test_at_head_only_at_the_shipped_head(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert await at_head(db)
        assert await migrate.ais_up_to_date(db_url)
        previous = str(int(migrate.head_revision()) - 1).zfill(4)
        await migrate.adowngrade(db_url, previous)
        assert not await at_head(db)
        assert not await migrate.ais_up_to_date(db_url)
        await migrate.aupgrade(db_url)
        assert await at_head(db)
    finally:
        await db.dispose()


async def test_a_new_database_is_not_at_head(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
    try:
        assert not await at_head(db)
    finally:
        await db.dispose()
