"""What differs between the two supported backends, in one place."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_for(session: AsyncSession, table: Any) -> Any:
    """An INSERT for the session's backend, with `on_conflict_do_…` (an upsert)."""
    return insert_for_dialect(session.get_bind().dialect.name, table)


def insert_for_dialect(name: str, table: Any) -> Any:
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(name)  # pragma: no cover - only the two supported backends
