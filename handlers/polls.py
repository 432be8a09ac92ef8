"""What the handlers of a button poll — a vote (handlers/votes.py) or a survey
(handlers/survey.py) — share: whether an opening command posts the poll, and the
start-up step that posts what never went out (handlers/startup.py, "lost posts")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from aiogram import Router
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.startup import StartupDeps, active_ponds, repost, startup_deps
from scheduler.games import ANNOUNCE_WITHIN


class InChat(Protocol):
    @property
    def chat_id(self) -> int: ...


class Posted(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def message_id(self) -> int | None: ...
    @property
    def closes_at(self) -> datetime: ...


V = TypeVar("V", bound=InChat)
R = TypeVar("R", bound=InChat)


def should_post(kind: str, view: Posted, now: datetime) -> bool:
    """Whether the poll an operator's command opened (`kind`: opened | replay) is posted
    now: a new one, or a replay of one whose post was lost (a crash before it went out)
    while it is still open — not a replay of a command already carried out."""
    lost = view.message_id is None and view.state == "open" and now < view.closes_at
    return kind == "opened" or lost


async def restore(
    router: Router,
    what: str,
    *,
    unposted: Callable[[AsyncSession, datetime], Awaitable[Sequence[V]]],
    unannounced: Callable[[AsyncSession, datetime], Awaitable[list[int]]],
    close: Callable[[AsyncSession, int, datetime], Awaitable[R | None]],
    post: Callable[[StartupDeps, V, str], bool],
    announce: Callable[[StartupDeps, R, str, datetime], bool],
) -> None:
    """At start: `post` the open polls whose post never went out, and `announce` the
    results of polls closed lately that were never recorded as sent (each in its
    pond's time zone and language)."""
    deps = startup_deps(router)
    now = deps.scheduler.clock()
    async with deps.db.transaction() as session:
        lost = await unposted(session, now)
        results = [
            result
            for poll_id in await unannounced(session, now - ANNOUNCE_WITHIN)
            if (result := await close(session, poll_id, now)) is not None
        ]
        chats = [p.chat_id for p in lost] + [r.chat_id for r in results]
        ponds = await active_ponds(session, chats)
    repost(deps, what, lost, ponds, lambda p: p.chat_id,
           lambda p, pond: post(deps, p, pond.timezone))
    repost(deps, f"{what} result", results, ponds, lambda r: r.chat_id,
           lambda r, pond: announce(deps, r, pond.timezone, now))
