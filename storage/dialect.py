"""What differs between the two supported backends, in one place."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


def insert_for(session: AsyncSession, table: Any) -> Any:
    """An INSERT for the session's backend, with `on_conflict_do_…` (an upsert)."""
    return insert_for_dialect(session.get_bind().dialect.name, table)


def insert_for_dialect(name: str, table: Any) -> Any:
    # Each backend's module is loaded on first use: a bot on SQLite never holds
    # SQLAlchemy's PostgreSQL dialect (about 2 MB).
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    raise NotImplementedError(name)  # pragma: no cover - only the two supported backends
