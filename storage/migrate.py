"""Schema migrations (alembic), driven from code.

The alembic `Config` is built here, pointing at the `migrations/` folder shipped inside
this package, so nothing depends on the current directory or on an ini file. The engine
is `storage.db.create_engine`, the same one the application uses.

Every function exists twice: a coroutine (`aupgrade`, `adowngrade`, `acurrent_revision`,
`ais_up_to_date`) for code that already runs an event loop, and a blocking twin
(`upgrade`, …) for the CLI and tests. The blocking twins may be called from inside a
running event loop too: they then run on a worker thread with its own loop (and block the
calling thread until done).

Alembic keeps the running migration environment in module globals (`alembic.context`,
`alembic.op`), so two commands must never run at once in one process — not even as two
coroutines of one loop. Upgrades and downgrades therefore run one at a time, each on a
thread without an event loop, behind a process-wide lock; between processes the database
itself serializes them (below).

On PostgreSQL an upgrade or downgrade runs in one transaction that first takes
`pg_advisory_xact_lock(MIGRATION_LOCK_KEY)`: when several instances start at once, one
migrates and the others wait, then find the schema at head and do nothing. The lock goes
with the transaction, also when a migration fails. SQLite's `BEGIN IMMEDIATE` (see
`storage.db`) serializes writers already.

The database URL may carry a password: it is never logged nor put into alembic's config
(whose ini interpolation would also choke on `%`); `safe_url` renders it for messages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from storage.db import READONLY, create_engine, normalize_url

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")

# Key of the PostgreSQL advisory lock held while migrating: b"pondmigr" as a bigint.
# Distinct from any other advisory lock the application takes (e.g. the scheduler's).
MIGRATION_LOCK_KEY = int.from_bytes(b"pondmigr", "big")

T = TypeVar("T")

# Held while an alembic command runs in this process (see module docstring).
_ALEMBIC_LOCK = threading.Lock()


def alembic_config() -> Config:
    """Alembic configuration for the packaged migrations (no ini file, no URL)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    return cfg


def safe_url(url: str | URL) -> str:
    """The URL as text with the password masked, for logs and messages."""
    return normalize_url(url).render_as_string(hide_password=True)


def head_revision() -> str:
    """The newest revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships at least one revision
        raise RuntimeError("no migrations found")
    return head


def _off_loop(fn: Callable[[], T]) -> T:
    """Call `fn` here, or on a worker thread when this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pondbot-db") as pool:
        return pool.submit(fn).result()


def run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine made by `factory` to completion and return its result.

    Without a running event loop in this thread it uses `asyncio.run`; inside one (where
    `asyncio.run` is refused) it runs on a worker thread with a fresh loop.
    """
    return _off_loop(lambda: asyncio.run(factory()))


def _sqlite_file_missing(u: URL) -> bool:
    db = u.database
    if u.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return False
    return not Path(db).expanduser().exists()


async def _on_connection(url: str | URL, fn: Callable[[Connection], T], *, write: bool) -> T:
    engine = create_engine(url)
    try:
        if write:
            async with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                return await conn.run_sync(fn)
        async with engine.connect() as conn:
            await conn.execution_options(**{READONLY: True})
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _run_command(url: str | URL, action: Callable[[Config], None]) -> None:
    """Blocking: run one alembic command on `url`; never on a thread running a loop."""

    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        action(cfg)

    with _ALEMBIC_LOCK:
        asyncio.run(_on_connection(url, run, write=True))


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (default: the newest)."""
    _off_loop(lambda: _run_command(url, lambda cfg: command.upgrade(cfg, revision)))


def downgrade(url: str | URL, revision: str) -> None:
    """Downgrade the schema to `revision` (`"base"` drops everything)."""
    _off_loop(lambda: _run_command(url, lambda cfg: command.downgrade(cfg, revision)))


async def aupgrade(url: str | URL, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, url, revision)


async def adowngrade(url: str | URL, revision: str) -> None:
    await asyncio.to_thread(downgrade, url, revision)


def _current_heads(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


async def acurrent_revision(url: str | URL) -> str | None:
    """The revision the database is at; None for an empty (or missing SQLite) database."""
    u = normalize_url(url)
    if _sqlite_file_missing(u):
        return None
    heads = await _on_connection(u, _current_heads, write=False)
    return heads[0] if heads else None


async def ais_up_to_date(url: str | URL) -> bool:
    """True when the database is at the newest revision shipped with this code."""
    u = normalize_url(url)
    if _sqlite_file_missing(u):
        return False
    heads = await _on_connection(u, _current_heads, write=False)
    return set(heads) == set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revision(url: str | URL) -> str | None:
    return run_blocking(lambda: acurrent_revision(url))


def is_up_to_date(url: str | URL) -> bool:
    return run_blocking(lambda: ais_up_to_date(url))
