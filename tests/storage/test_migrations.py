"""Migrations: the stairway, the match with the models, and the programmatic API."""

from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlmodel import SQLModel

import storage.models
from storage import migrate
from storage.db import create_engine

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it, on each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("pg_empty_url"))


def _revisions() -> list[Any]:
    """All revisions, oldest first."""
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return list(reversed(list(script.walk_revisions())))


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def test_history_is_linear_and_head_is_known() -> None:
    revisions = _revisions()
    assert revisions, "no migrations shipped"
    assert revisions[0].down_revision is None
    for older, newer in itertools.pairwise(revisions):
        assert newer.down_revision == older.revision
    assert migrate.head_revision() == revisions[-1].revision
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert len(script.get_heads()) == 1


def test_migrations_folder_ships_inside_the_package() -> None:
    package_dir = Path(storage.models.__file__).resolve().parent
    assert package_dir / "migrations" == migrate.MIGRATIONS_DIR
    assert (migrate.MIGRATIONS_DIR / "env.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "script.py.mako").is_file()


async def test_stairway(empty_url: str) -> None:
    """Every revision: upgrade → downgrade → upgrade, then all the way down and up."""
    assert await migrate.acurrent_revision(empty_url) is None
    for rev in _revisions():
        below = rev.down_revision or "base"
        await migrate.aupgrade(empty_url, rev.revision)
        assert await migrate.acurrent_revision(empty_url) == rev.revision
        await migrate.adowngrade(empty_url, below)
        assert await migrate.acurrent_revision(empty_url) == (rev.down_revision or None)
        await migrate.aupgrade(empty_url, rev.revision)
        assert await migrate.acurrent_revision(empty_url) == rev.revision
    assert await migrate.ais_up_to_date(empty_url)
    await migrate.adowngrade(empty_url, "base")
    assert await _tables(empty_url) <= {"alembic_version"}
    await migrate.aupgrade(empty_url)
    assert await _tables(empty_url) >= set(SQLModel.metadata.tables)


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def test_migrated_schema_matches_the_models(db_url: str) -> None:
    """`db_url` is migrated to head; autogenerate finds nothing to change."""
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == []


async def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    assert await migrate.ais_up_to_date(db_url)
    await migrate.aupgrade(db_url)
    assert await migrate.acurrent_revision(db_url) == migrate.head_revision()


def test_instances_starting_at_once_do_not_race(empty_url: str) -> None:
    """Three processes upgrade one database at once: one migrates, the others find head."""
    code = "import sys; from storage import migrate; migrate.upgrade(sys.argv[1])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", code, empty_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert migrate.is_up_to_date(empty_url)


async def test_concurrent_calls_in_one_process_are_serialized(empty_url: str) -> None:
    """Alembic's globals are shared: coroutines and threads must not interleave commands."""
    await asyncio.gather(
        *(migrate.aupgrade(empty_url) for _ in range(3)),
        asyncio.to_thread(migrate.upgrade, empty_url),
    )
    assert await migrate.ais_up_to_date(empty_url)


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.db"
    url = f"sqlite:///{path}"
    assert migrate.current_revision(url) is None
    assert migrate.is_up_to_date(url) is False
    assert not path.exists()


async def test_blocking_api_works_inside_a_running_loop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    migrate.upgrade(url)  # would be refused by asyncio.run() on this thread
    assert migrate.is_up_to_date(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None


@pytest.mark.postgres
async def test_password_never_reaches_the_log(
    pg_empty_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-Pw%40x"
    url = make_url(pg_empty_url).set(password=secret)  # the test server trusts any password
    caplog.set_level(logging.DEBUG)
    await migrate.aupgrade(url)
    assert await migrate.ais_up_to_date(url)
    assert "s3cret" not in caplog.text
    assert "s3cret" not in migrate.safe_url(url)
    assert "***" in migrate.safe_url(url)


@pytest.mark.postgres
async def test_upgrade_holds_an_advisory_lock(pg_empty_url: str) -> None:
    """While another session holds the migration lock, an upgrade waits for it."""
    engine = create_engine(pg_empty_url)
    try:
        async with engine.connect() as holder:
            await holder.execute(
                text("SELECT pg_advisory_lock(:k)"), {"k": migrate.MIGRATION_LOCK_KEY}
            )
            task = asyncio.create_task(migrate.aupgrade(pg_empty_url))
            await asyncio.sleep(0.5)
            assert not task.done()
            await holder.execute(
                text("SELECT pg_advisory_unlock(:k)"), {"k": migrate.MIGRATION_LOCK_KEY}
            )
            await holder.commit()
        await asyncio.wait_for(task, 30)
    finally:
        await engine.dispose()
    assert await migrate.ais_up_to_date(pg_empty_url)


def test_runs_from_any_directory_without_aiogram(tmp_path: Path) -> None:
    """The CLI's `migrate`/`export` path: no ini file in the cwd, no bot library loaded."""
    db = tmp_path / "elsewhere.db"
    code = textwrap.dedent(
        f"""
        import sys
        from storage import export, migrate
        migrate.upgrade({f"sqlite:///{db}"!r})
        assert migrate.is_up_to_date({f"sqlite:///{db}"!r})
        assert not any(m == "aiogram" or m.startswith("aiogram.") for m in sys.modules)
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
