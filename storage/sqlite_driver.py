"""The SQLite connection under the async engine: aiosqlite, with fewer trips between threads.

aiosqlite runs every call of the DB-API on the connection's own thread and hands the
result back to the event loop. Each hand-over waits for the loop to come round, and a
loop serving a few hundred updates at once comes round every few milliseconds. Through
SQLAlchemy a plain statement used to cost four of them (open a cursor, execute, fetch,
close) and a pooled connection one more on its way back (a rollback when nothing was
open). Here a statement is ONE trip — execute, fetch, close happen together on the
connection's thread — and a rollback with no transaction open is no trip at all.

Large results are not read at once: the first `PREFETCH` rows come back with the
statement and the rest on demand, so streamed reads (`session.stream`, the CSV export)
stay bounded in memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import aiosqlite

PREFETCH = 2000
T = TypeVar("T")


class LeanCursor:
    """An aiosqlite-style cursor whose statements are a single trip to the thread."""

    arraysize = 1

    def __init__(self, connection: LeanConnection) -> None:
        self._connection = connection
        self._cursor: sqlite3.Cursor | None = None  # open only while rows remain
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> LeanCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _run(self, call: Callable[[sqlite3.Cursor], object]) -> tuple[Any, ...]:
        """On the connection's thread: run the statement and read its first rows."""
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        connection = self._connection
        begin, connection.pending_begin = connection.pending_begin, None
        cursor = connection._conn.cursor()
        try:
            if begin is not None:
                cursor.execute(begin)
            call(cursor)
            description = cursor.description
            rows = cursor.fetchmany(PREFETCH) if description else []
        except BaseException:
            cursor.close()
            raise
        more = description is not None and len(rows) == PREFETCH
        if not more:
            cursor.close()
        return description, rows, cursor.rowcount, cursor.lastrowid, cursor if more else None

    def _take(self, result: tuple[Any, ...]) -> LeanCursor:
        self.description, self._rows, self.rowcount, self.lastrowid, self._cursor = result
        return self

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> LeanCursor:
        args = () if parameters is None else (parameters,)
        return self._take(
            await self._connection.call(self._run, lambda c: c.execute(sql, *args))
        )

    async def executemany(self, sql: str, parameters: Any) -> LeanCursor:
        return self._take(
            await self._connection.call(self._run, lambda c: c.executemany(sql, parameters))
        )

    async def fetchone(self) -> Any:
        rows = await self.fetchmany(1)
        return rows[0] if rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        if len(self._rows) < size and self._cursor is not None:
            self._rows += await self._connection.call(self._read, size - len(self._rows))
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchall(self) -> list[Any]:
        if self._cursor is not None:
            self._rows += await self._connection.call(self._read, None)
        rows, self._rows = self._rows, []
        return rows

    def _read(self, size: int | None) -> list[Any]:
        cursor = self._cursor
        if cursor is None:
            return []
        rows = cursor.fetchall() if size is None else cursor.fetchmany(size)
        if size is None or len(rows) < size:
            cursor.close()
            self._cursor = None
        return rows

    async def close(self) -> None:
        self._rows = []
        if self._cursor is not None:
            await self._connection.call(self._close_cursor)

    def _close_cursor(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None


class LeanConnection(aiosqlite.Connection):
    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the connection's thread: one trip."""
        return cast(T, await self._execute(fn, *args))  # type: ignore[no-untyped-call]

    # `BEGIN …` waiting to go out with the transaction's first statement (one trip for
    # both); a transaction that runs no statement never reaches the thread at all.
    pending_begin: str | None = None

    def begin_lazily(self, sql: str) -> None:
        self.pending_begin = sql

    def cursor(self) -> LeanCursor:  # type: ignore[override]
        return LeanCursor(self)

    async def commit(self) -> None:
        if self.pending_begin is not None:
            self.pending_begin = None
            return
        await super().commit()

    async def rollback(self) -> None:
        self.pending_begin = None
        # Reading the flag from this thread is safe: it is sqlite3_get_autocommit().
        if self._connection is not None and self._connection.in_transaction:
            await super().rollback()


async def connect(database: str, **kwargs: Any) -> LeanConnection:
    """Open `database` (a path, or a URI with `uri=True`) on its own thread."""

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(database, **kwargs)  # type: ignore[no-any-return]

    connection = LeanConnection(connector, iter_chunk_size=64)
    connection._thread.daemon = True
    await connection
    return connection

