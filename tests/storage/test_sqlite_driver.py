"""The SQLite connection under the engine: one trip per statement, bounded streaming."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from storage import sqlite_driver
from storage.db import Database
from storage.migrate import aupgrade
from storage.models import Member

COUNT = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :top) "
    "SELECT x FROM n"
)


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> Database:
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    await aupgrade(url)
    db = Database(url)
    yield db  # type: ignore[misc]
    await db.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = sqlite_driver.LeanConnection._execute

    async def execute(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(getattr(fn, "__name__", "?"))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(sqlite_driver.LeanConnection, "_execute", execute)
    return seen


async def test_results_larger_than_the_prefetch(sqlite_db: Database) -> None:
    top = sqlite_driver.PREFETCH * 2 + 7
    async with sqlite_db.transaction(readonly=True) as s:
        rows = (await s.execute(text(COUNT), {"top": top})).scalars().all()
        assert rows == list(range(1, top + 1))
        streamed = await s.stream(text(COUNT), {"top": top})
        got = [x async for x in streamed.scalars()]
    assert got == list(range(1, top + 1))


async def test_one_trip_per_statement_and_none_for_an_empty_transaction(
    sqlite_db: Database, trips: list[str]
) -> None:
    async with sqlite_db.transaction() as s:
        await s.execute(text("SELECT 1"))  # the pool's connection is open (and set up)
    trips.clear()
    async with sqlite_db.transaction() as s:
        pass
    async with sqlite_db.transaction(readonly=True) as s:
        pass
    assert trips == []
    async with sqlite_db.transaction() as s:
        await s.execute(text("SELECT 1"))
        await s.execute(text("SELECT 2"))
    # BEGIN IMMEDIATE rides with the first statement; then the second; then COMMIT.
    assert trips == ["_run", "_run", "commit"]


async def test_failed_statement_rolls_back_the_whole_unit(sqlite_db: Database) -> None:
    with pytest.raises(Exception, match=r"(?i)unique"):
        async with sqlite_db.transaction() as s:
            s.add(Member(user_id=1, first_name="A"))
            await s.flush()
            s.add(Member(user_id=1, first_name="A again"))
            await s.flush()
    async with sqlite_db.transaction(readonly=True) as s:
        assert await s.get(Member, 1) is None
    async with sqlite_db.transaction() as s:  # the connection is usable again
        s.add(Member(user_id=1, first_name="A"))
    async with sqlite_db.transaction(readonly=True) as s:
        assert await s.get(Member, 1) is not None


async def test_writers_take_turns_and_readers_do_not_wait(sqlite_db: Database) -> None:
    import asyncio

    holding = asyncio.Event()
    release = asyncio.Event()

    async def slow_writer() -> None:
        async with sqlite_db.transaction() as s:
            s.add(Member(user_id=1, first_name="A"))
            await s.flush()
            holding.set()
            await release.wait()

    first = asyncio.ensure_future(slow_writer())
    await holding.wait()
    second_done = asyncio.Event()

    async def second_writer() -> None:
        async with sqlite_db.transaction() as s:
            s.add(Member(user_id=2, first_name="B"))
        second_done.set()

    second = asyncio.ensure_future(second_writer())
    async with sqlite_db.transaction(readonly=True) as s:  # a reader goes straight in
        assert await s.get(Member, 1) is None  # not committed yet
    await asyncio.sleep(0.05)
    assert not second_done.is_set()  # waits for its turn, without "database is locked"
    release.set()
    await asyncio.gather(first, second)
    async with sqlite_db.transaction(readonly=True) as s:
        assert await s.get(Member, 1) is not None and await s.get(Member, 2) is not None


async def test_a_write_inside_a_write_fails_at_once(sqlite_db: Database) -> None:
    async with sqlite_db.transaction():
        with pytest.raises(RuntimeError, match="inside a write transaction"):
            async with sqlite_db.transaction():
                pass
        async with sqlite_db.transaction(readonly=True) as inner:  # reading is fine
            await inner.execute(text("SELECT 1"))
