"""A database that fails on cue: `Outage(db)` makes the statements that write a check-in
for chosen members raise, from the engine's own statement hook, so the error comes up
through SQLAlchemy, the unit of work and the batch writer exactly as a real one would.

    with Outage(db).installed() as outage:
        outage.fail(ALICE, times=1)   # her next check-in write meets a dropped connection
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from storage.db import Database


class Outage:
    """Makes the database fail the check-in of chosen members: every statement that
    writes a check-in for them raises `error` while they have failures left."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.left: dict[int, int] = {}
        self.raised = 0
        self.error: Callable[[str], Exception] = lambda sql: OperationalError(
            sql, None, ConnectionResetError("server closed the connection unexpectedly")
        )

    def fail(self, user_id: int, times: int) -> None:
        self.left[user_id] = times

    def hook(self, _conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if not statement.lstrip().upper().startswith("INSERT INTO CHECKIN"):
            return
        rows = params if isinstance(params, list) else [params]
        for user_id, left in self.left.items():
            if left > 0 and any(user_id in _values(row) for row in rows):
                self.left[user_id] = left - 1
                self.raised += 1
                raise self.error(statement)

    @contextmanager
    def installed(self) -> Iterator[Outage]:
        engine = self.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self.hook)
        try:
            yield self
        finally:
            event.remove(engine, "before_cursor_execute", self.hook)


def _values(row: Any) -> tuple[Any, ...]:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)
