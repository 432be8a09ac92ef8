"""Alembic environment for pondbot.

Used two ways:

* programmatically by `storage.migrate`, which opens the connection itself (and holds a
  PostgreSQL advisory lock) and hands it over in `config.attributes["connection"]`;
* from the `alembic` command line (`alembic -c storage/alembic.ini …`), where the URL comes
  from `-x url=…`, then `config.attributes["url"]`, then the `DATABASE_URL` environment
  variable. The URL is never written to the log: it may carry a password.

Engines come from `storage.db.create_engine`, so migrations run with the same SQLite
pragmas (WAL, busy timeout, BEGIN IMMEDIATE) as the application. On SQLite, migrations
are rendered in batch mode (copy-and-move), the only way SQLite can alter a table.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

import storage.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from storage.db import create_engine, normalize_url
from storage.models import UTCDateTime

config = context.config
target_metadata = SQLModel.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.attributes.get("url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: pass -x url=… or set DATABASE_URL")
    return str(url)


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render application types as plain SQLAlchemy ones, so revisions import nothing
    from the application (a revision is a frozen snapshot, the models move on)."""
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection | None = None, **kw: Any) -> None:
    dialect = connection.dialect.name if connection is not None else kw.pop("dialect_name")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=dialect == "sqlite",
        compare_type=True,
        render_item=_render_item,
        **kw,
    )


def run_migrations_offline() -> None:
    url = normalize_url(_url())
    _configure(
        url=url,
        dialect_name=url.get_backend_name(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_engine(_url())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
