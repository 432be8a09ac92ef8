"""Engine, connection settings and the unit of work.

One `Database` per process, created by the composition root. A unit of work is one
transaction: `async with db.transaction() as session:` commits on success and rolls back
on any exception. Repositories and services take the session and never commit.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and every write
transaction starts with `BEGIN IMMEDIATE`: a deferred transaction that reads and then
writes fails at once with "database is locked" when another writer got in first,
whatever the busy timeout. Write transactions of this process take turns on an asyncio
lock before they begin, so they never meet in SQLite's busy handler (which sleeps up to
100 ms a try); the busy timeout is left for other processes.

On PostgreSQL two transactions can lock rows in opposite orders (a deadlock, SQLSTATE
40P01: the server aborts one of them) or meet a serialization failure (40001). Both
mean "do it all again": `run_in_transaction(fn)` runs `fn(session)` in a unit of work
and, on either, runs it again from the start in a fresh one — a few times, after a short
jittered pause — so the two no longer meet. Only for bodies that are safe to run again:
everything they do goes through the session (rolled back with it) or `after_commit`
(dropped with it); a body that sends messages or changes memory first must not use it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from storage import sqlite_driver

log = logging.getLogger(__name__)
T = TypeVar("T")

READONLY = "pondbot_readonly"
BUSY_TIMEOUT_MS = 15_000
RERUN_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure
RERUN_ATTEMPTS = 5  # runs in all
RERUN_PAUSE = 0.05  # seconds before the second run, doubling, each ±50 %


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of an error, through SQLAlchemy's and the driver's wrappers."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        candidate = todo.pop()
        if candidate is None or id(candidate) in seen:
            continue
        seen.add(id(candidate))
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
        todo += [getattr(candidate, "orig", None), candidate.__cause__]
    return None


def must_rerun(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction is to be run again."""
    return sqlstate(exc) in RERUN_SQLSTATES


def normalize_url(url: str | URL) -> URL:
    """Accept plain `sqlite:///…` / `postgresql://…` and pick the async drivers."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+asyncpg")
    return u


def _prepare_sqlite_file(u: URL) -> None:
    db = u.database
    if db and db != ":memory:" and not db.startswith("file:"):
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str | URL, *, echo: bool = False) -> AsyncEngine:
    u = normalize_url(url)
    if u.get_backend_name() != "sqlite":
        return create_async_engine(u, echo=echo, pool_pre_ping=True)

    _prepare_sqlite_file(u)
    engine = create_async_engine(
        u,
        echo=echo,
        async_creator=partial(
            sqlite_driver.connect,
            u.database or ":memory:",
            timeout=BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
            uri=str(u.query.get("uri", "")).lower() in ("1", "true"),
        ),
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin hook issue BEGIN itself (see module docstring).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        sql = "BEGIN" if conn.get_execution_options().get(READONLY, False) else "BEGIN IMMEDIATE"
        driver = conn.connection.driver_connection
        if isinstance(driver, sqlite_driver.LeanConnection):
            driver.begin_lazily(sql)  # sent with the first statement, in the same trip
        else:
            conn.exec_driver_sql(sql)

    return engine


_AFTER_COMMIT = "pondbot_after_commit"


def after_commit(session: AsyncSession, hook: Callable[[], object]) -> None:
    """Run `hook` (sync or async) after the unit of work of `session` commits."""
    hooks = session.info.get(_AFTER_COMMIT)
    if hooks is None:
        raise RuntimeError("after_commit needs a session from Database.transaction()")
    hooks.append(hook)


class Database:
    """The process's engine plus the unit-of-work factory."""

    def __init__(self, url: str | URL, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        self.engine = create_engine(self.url, echo=echo)
        self._writers = asyncio.Lock() if self.is_sqlite else None
        self._writer: asyncio.Task[object] | None = None  # the task whose turn it is

    def _turn(self, readonly: bool) -> AbstractAsyncContextManager[object]:
        """SQLite has one writer at a time. Its own wait for the lock is a sleep that
        grows to 100 ms a try, so writers of this process take turns here instead, in
        order and without sleeping (readers never wait: WAL)."""
        if readonly or self._writers is None:
            return nullcontext()
        return self._write_turn()

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        assert self._writers is not None
        me = asyncio.current_task()
        if me is not None and me is self._writer:
            raise RuntimeError("a write transaction inside a write transaction (deadlock)")
        async with self._writers:
            self._writer = me
            try:
                yield
            finally:
                self._writer = None

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit when the block ends, roll back if it raises.

        Callbacks registered with `after_commit(session, fn)` run once the commit has
        succeeded (e.g. arming a timer for a row this unit of work inserted)."""
        hooks: list[Callable[[], object]] = []
        async with self._turn(readonly), self.engine.connect() as conn:
            if readonly:
                conn = await conn.execution_options(**{READONLY: True})
            async with conn.begin():
                session = AsyncSession(bind=conn, expire_on_commit=False)
                session.info[_AFTER_COMMIT] = hooks
                try:
                    yield session
                    await session.flush()
                finally:
                    await session.close()
        for hook in hooks:
            result = hook()
            if inspect.isawaitable(result):
                await result

    async def run_in_transaction(
        self,
        fn: Callable[[AsyncSession], Awaitable[T]],
        *,
        attempts: int = RERUN_ATTEMPTS,
        pause: float = RERUN_PAUSE,
    ) -> T:
        """`fn(session)` in one unit of work, run again from the start in a fresh one
        when PostgreSQL aborted it as a deadlock or a serialization failure (see the
        module docstring), up to `attempts` runs; any other error, or the last one,
        is raised."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction() as session:
                    return await fn(session)
            except Exception as exc:
                if attempt >= attempts or self.is_sqlite or not must_rerun(exc):
                    raise
                wait = pause * (1 << (attempt - 1)) * random.uniform(0.5, 1.5)
                log.info(
                    "transaction aborted by the database (%s); running it again in %.0f ms "
                    "(attempt %d of %d)", sqlstate(exc), wait * 1000, attempt + 1, attempts,
                )
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def dispose(self) -> None:
        await self.engine.dispose()
