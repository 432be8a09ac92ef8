"""What every board a pond keeps in place has in common: paced refreshes and refusals.

A board is one message the bot edits in place as things happen in the pond (check-ins,
draws). Telegram allows a group 20 messages a minute — edits included — so the things
that happen never answer one message each: they `touch` the pond's board, and the
keeper refreshes it at most once per `interval` seconds (the first touch after a quiet
spell refreshes at once). What a refresh shows is read at refresh time, so however many
touches it absorbs, it shows the latest.

A pond that refuses the board — the bot may not post or edit there (a 400 or a 403), a
request that fails even after the outbox's retries — is left alone until something
changes: a new day, an operator posting the board anew, the pond itself (the bot
re-added or promoted: a fresh `PondInfo` from the tracking middleware, or the outbox
sending there again after a 403 — until then a new day changes nothing for a pond that
removed the bot). Until then its touches cost nothing: no database read, no request.
Trouble that may pass (5xx, timeouts after every retry) is tried again on the first
touch after `RETRY_TROUBLE` seconds.

A kind of board subclasses `PacedBoards` and says how it is refreshed (`_refresh`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiogram.utils.i18n import I18n

from services.clock import Clock, SystemClock
from services.middlewares import PondInfo
from services.outbox import Outbox
from services.shared import BoardPacing
from storage.db import Database

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 6.0  # seconds between two edits of one board: ≤ 10 of the 20/min
RETRY_TROUBLE = 300.0  # seconds before a board that failed on passing trouble is retried


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a pond's board is left alone, and what counts as a change."""

    day: date  # the pond's day it happened on: a later one is a change
    pond: PondInfo  # the pond as known then: a fresh one is a change
    forbidden: bool  # a 403: a change is the outbox sending there again
    until: float | None  # passing trouble: retried from then on (monotonic)
    reason: str


@dataclass(eq=False)
class BoardState:
    """One pond's board, as its keeper knows it."""

    pond: PondInfo
    today: date
    dirty: bool = False
    last: float = -math.inf
    task: asyncio.Task[None] | None = None
    posts: set[asyncio.Task[None]] = field(default_factory=set)
    refused: Refusal | None = None
    waiting_since: float | None = None  # since when a claimed post shows no message id
    message_id: int | None = None  # the board's message, for boards not stored elsewhere


class PacedBoards:
    """Keeps one kind of board in every pond: touches coalesce into paced refreshes."""

    what = "board"  # for the logs: "the check-in board of -100…"

    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        i18n: I18n,
        *,
        clock: Clock | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.i18n = i18n
        self.clock: Clock = clock or SystemClock()
        self.interval = interval
        self._ponds: dict[int, BoardState] = {}
        self.refreshes = 0  # boards rendered (for tests and benchmarks)
        self.pacing: BoardPacing | None = None  # several instances: one refresh among them

    def _state(self, pond: PondInfo, today: date) -> BoardState:
        st = self._ponds.get(pond.chat_id)
        if st is None:
            st = self._ponds[pond.chat_id] = BoardState(pond, today)
        st.pond = pond
        st.today = max(st.today, today)
        return st

    def touch(self, pond: PondInfo, today: date) -> None:
        """Something changed in `pond` on `today`: refresh its board soon (unless the
        pond refused it and nothing changed since)."""
        st = self._ponds.get(pond.chat_id)
        if st is not None and st.refused is not None:
            if not self._changed(st.refused, pond, today):
                return
            st.refused = None
        st = self._state(pond, today)
        st.dirty = True
        if st.task is None:
            st.task = asyncio.create_task(self._run(st), name=f"board-{pond.chat_id}")

    def _spawn_post(self, st: BoardState, post: Coroutine[Any, Any, None]) -> None:
        """Run an operator's post of the board in the background, tracked for `idle`."""
        task = asyncio.create_task(post, name=f"board-post-{st.pond.chat_id}")
        st.posts.add(task)
        task.add_done_callback(st.posts.discard)

    async def idle(self) -> None:
        """Wait until no refresh or post is pending (tests, shutdown)."""
        while True:
            tasks = [t for st in self._ponds.values() for t in (st.task, *st.posts) if t]
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        for st in self._ponds.values():
            for task in (st.task, *st.posts):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def refused(self, chat_id: int) -> bool:
        """Whether the board of `chat_id` is left alone for now."""
        st = self._ponds.get(chat_id)
        return st is not None and st.refused is not None

    # -- for the kinds of board --------------------------------------------------------

    async def _refresh(self, st: BoardState) -> None:
        raise NotImplementedError

    def _changed(self, refusal: Refusal, pond: PondInfo, today: date) -> bool:
        if pond is not refusal.pond:
            return True
        if refusal.forbidden:  # kicked: a new day changes nothing, being re-added does
            return not self.outbox.is_forbidden(pond.chat_id)
        if today > refusal.day:
            return True
        return refusal.until is not None and self.clock.monotonic() >= refusal.until

    def _refuse(self, st: BoardState, reason: str, *, passing: bool = False) -> None:
        forbidden = self.outbox.is_forbidden(st.pond.chat_id)
        until = self.clock.monotonic() + RETRY_TROUBLE if passing and not forbidden else None
        st.refused = Refusal(st.today, st.pond, forbidden, until, reason)
        st.dirty = False
        log.warning(
            "the %s of %s was refused (%s); left alone until %s", self.what, st.pond.chat_id,
            reason, "a while has passed" if until is not None else "something changes",
        )

    def _handing_over(self, st: BoardState) -> None:
        """A refresh's edit goes to the outbox now: the next refresh waits `interval`
        from here, so edits leave at least `interval` apart whatever the database read
        before each took."""
        st.last = self.clock.monotonic()

    def _keep_fresh(self, st: BoardState) -> None:
        """After a post (`st.last` set when it was answered): touches that came
        meanwhile refresh it."""
        st.refused = None  # posted: whatever was refused before is past
        if st.dirty and st.task is None:
            st.task = asyncio.create_task(self._run(st), name=f"board-{st.pond.chat_id}")

    async def _run(self, st: BoardState) -> None:
        try:
            while st.dirty and st.refused is None:
                wait = st.last + self.interval - self.clock.monotonic()
                if wait > 0:
                    await self.clock.sleep(wait)
                if self.pacing is not None:
                    wait = await self.pacing.turn(self.what, st.pond.chat_id, self.interval)
                    if wait > 0:  # another instance refreshed it just now: after its turn
                        await self.clock.sleep(wait)
                        continue
                st.dirty = False
                st.last = self.clock.monotonic()
                try:
                    await self._refresh(st)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("refreshing the %s of %s failed", self.what, st.pond.chat_id)
        finally:
            st.task = None
