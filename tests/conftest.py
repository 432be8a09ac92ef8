"""Database fixtures shared by every test package.

* `sqlite_url` — a fresh SQLite file under `tmp_path`, migrated to head.
* `pg_url` — a fresh database on a real PostgreSQL, migrated to head; `pg_empty_url` —
  the same without migrations. The server starts once per session, on first use, from
  `tests/rig/postgres.py` (or is `PONDBOT_TEST_PG_URL`). When it cannot start the tests
  are skipped with the reason — or fail, if the `CI` variable is set.
* `redis_server`, `redis_url` — a private `redis-server` for the session
  (`tests/rig/redis.py`; skipped without one, failing in CI), emptied after each test.
* `db_url` — both of the above, as parameters `sqlite` and `postgres`; `db` — a
  `storage.db.Database` on it, disposed afterwards.

Feature-specific fixtures belong in the conftest of their own test folder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage import migrate
from storage.db import Database
from tests.rig.postgres import ExternalPostgres, PostgresServer
from tests.rig.redis import redis_server, redis_url  # noqa: F401  (fixtures)

PG_URL_ENV = "PONDBOT_TEST_PG_URL"


def sqlite_url_for(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; tests get copies of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(sqlite_url_for(path))  # the engine is disposed: WAL checkpointed
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "pond.db"
    shutil.copyfile(sqlite_template, path)
    return sqlite_url_for(path)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer | ExternalPostgres]:
    server: PostgresServer | ExternalPostgres
    try:
        if os.environ.get(PG_URL_ENV):
            server = ExternalPostgres(os.environ[PG_URL_ENV])
            server.ping()
        else:
            server = PostgresServer()
            server.start()
    except Exception as e:  # whatever the cause, say it: skip locally, fail on CI
        reason = f"PostgreSQL unavailable: {e}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield server
    finally:
        if isinstance(server, PostgresServer):
            server.stop()
        else:
            server.close()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer | ExternalPostgres) -> str:
    """Name of a database migrated to head, copied for every test that wants one."""
    name = asyncio.run(pg_server.create_database())
    migrate.upgrade(pg_server.url_for(name))
    return name


@pytest.fixture
async def pg_empty_url(pg_server: PostgresServer | ExternalPostgres) -> str:
    return pg_server.url_for(await pg_server.create_database())


@pytest.fixture
async def pg_url(pg_server: PostgresServer | ExternalPostgres, pg_template: str) -> str:
    return pg_server.url_for(await pg_server.create_database(template=pg_template))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Database]:
    """A database on the session's PostgreSQL only (for what only PostgreSQL has)."""
    database = Database(pg_url)
    try:
        yield database
    finally:
        await database.dispose()
