"""A button poll's close at its deadline — a vote's `vote.close` (scheduler/games.py) or a
survey's `survey.close` (scheduler/surveys.py): close it if open and, unless its result
was recorded as sent, freeze its post and post the result in the pond's language."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from scheduler.core import TaskRun
from scheduler.deps import JobDeps
from services.outbox import Outbox
from storage import repo
from storage.db import Database


class Closed(Protocol):
    @property
    def chat_id(self) -> int: ...
    @property
    def announced(self) -> bool: ...


R = TypeVar("R", bound=Closed)


def close_job(
    deps: JobDeps,
    field: str,
    close: Callable[[AsyncSession, int, datetime], Awaitable[R | None]],
    announce: Callable[[Database, Outbox, R, str, datetime], bool],
) -> Callable[[TaskRun], Awaitable[None]]:
    """The job body closing the poll whose id is the payload's `field`; idempotent (the
    close is `UPDATE … WHERE state = 'open'`, the result is posted until recorded)."""

    async def body(run: TaskRun) -> None:
        poll_id = int(run.payload[field])
        async with deps.db.transaction() as session:
            result = await close(session, poll_id, run.now)
            pond = None if result is None else await repo.get_pond(session, result.chat_id)
        if result is None or result.announced:
            return
        with deps.language(pond.language if pond else ""):
            announce(deps.db, deps.outbox, result, pond.timezone if pond else "", run.now)

    return body
