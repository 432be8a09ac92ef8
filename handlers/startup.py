"""Lost posts: what the game features' start-up steps share.

A game (a red packet, a guess round, a vote) is committed first and posted after, so a
crash between the two, or a post that failed for good, leaves a game nobody can see.
Such a game is posted when its command is delivered again (the command's key finds it
without a stored post) and, at start, by each feature's start-up step (these helpers).

The trade-off: a crash after Telegram answered the post but before its message id was
stored means the game is posted a second time. A second post is better than an
invisible game (a guess round would hold the pond's only slot), and the answer is
recorded the moment it arrives (`Outbox.post`), so that window is one short write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from aiogram import Dispatcher, Router
from aiogram.utils.i18n import I18n, I18nMiddleware
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from scheduler.core import Scheduler
from services.i18n import make_i18n, speaking
from services.outbox import Outbox
from storage.db import Database
from storage.models import Pond, PondStatus

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class StartupDeps:
    """What a start-up step needs, taken from the dispatcher it serves."""

    db: Database
    outbox: Outbox
    scheduler: Scheduler
    i18n: I18n

    @contextmanager
    def speaking(self, language: str) -> Iterator[None]:
        """Texts inside the block speak `language` (a pond's)."""
        with speaking(self.i18n, language):
            yield


def startup_deps(router: Router) -> StartupDeps:
    """The dispatcher's services, for a step registered on `router.startup` (the polling
    runner emits start-up with the bot only; the dispatcher holds the rest)."""
    root = router
    while root.parent_router is not None:
        root = root.parent_router
    if not isinstance(root, Dispatcher):
        raise RuntimeError("start-up step on a router outside a dispatcher")
    i18n = next(
        (m.i18n for m in root.update.outer_middleware if isinstance(m, I18nMiddleware)),
        None,
    ) or make_i18n()
    return StartupDeps(root["db"], root["outbox"], root["scheduler"], i18n)


async def active_ponds(session: AsyncSession, chat_ids: Iterable[int]) -> dict[int, Pond]:
    """The ponds among `chat_ids` that are served and still take our messages (a group
    revoked or left since its game was made gets no post)."""
    wanted = sorted(set(chat_ids))
    if not wanted:
        return {}
    rows = await session.execute(
        select(Pond).where(col(Pond.chat_id).in_(wanted), col(Pond.status) == PondStatus.active)
    )
    return {p.chat_id: p for p in rows.scalars().all() if p.served}


def repost(
    deps: StartupDeps,
    what: str,
    items: Iterable[T],
    ponds: Mapping[int, Pond],
    chat_of: Callable[[T], int],
    post: Callable[[T, Pond], bool],
) -> int:
    """`post` each of `items` whose pond is in `ponds`, speaking the pond's language;
    logs and returns how many were queued."""
    posted = 0
    for item in items:
        pond = ponds.get(chat_of(item))
        if pond is not None:
            with deps.speaking(pond.language):
                posted += post(item, pond)
    log_restored(what, posted)
    return posted


def log_restored(what: str, posted: int) -> None:
    if posted:
        log.warning("%d %s post(s) had not gone out: posted again at start", posted, what)
