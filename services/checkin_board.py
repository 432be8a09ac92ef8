"""The pond's check-in board: one message, edited in place, paced.

A busy morning brings hundreds of check-ins a minute, and Telegram allows a group 20
messages a minute — edits included. So check-ins never answer one message each: they
`touch` the pond's board, and the keeper refreshes it at most once per `interval`
seconds (the first touch after a quiet spell refreshes at once). The board's content is
read from the database at refresh time, so however many check-ins a refresh absorbs,
it shows the latest count and names. The outbox coalesces whatever is still queued.

When a pond has no board from today, the first check-in makes the keeper post one (once
per pond and day: the post is claimed in the database first). An operator's `/board`
always posts a fresh board, which replaces the stored one, and pins it if the bot may.

A pond that refuses the board — the bot may not post or edit there (a 400 or a 403), a
post that cannot be made even after the outbox's retries — is left alone until something
changes: a new check-in day, an operator's `/board`, the pond itself (the bot re-added or
promoted: a fresh `PondInfo` from the tracking middleware, or the outbox sending there
again after a 403 — until then a new day changes nothing for a pond that removed the
bot). Until then its check-ins cost the keeper nothing: no database read, no request.
Trouble that may pass (5xx, timeouts after every retry) is tried again on the first
check-in after `RETRY_TROUBLE` seconds. A claimed post that never got its
message id (its process died) is taken over after `POST_WAIT` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass, field
from datetime import date

from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import EditMessageText, PinChatMessage, SendMessage
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import I18n

from services.clock import Clock, SystemClock
from services.i18n import speaking
from services.middlewares import PondInfo
from services.outbox import Outbox
from services.texts import checkin as texts
from storage import checkin as store
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 6.0  # seconds between two edits of one board: ≤ 10 of the 20/min
RETRY_TROUBLE = 300.0  # seconds before a board that failed on passing trouble is retried
POST_WAIT = 120.0  # seconds a claimed post may go without a message id before it is redone


class CheckinButton(CallbackData, prefix="ci"):
    """The board's 签到 button; carries the pond's chat id (checked against the chat the
    button's message is in) and nothing else."""

    chat_id: int


def board_markup(chat_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(
            text=texts.button(), callback_data=CheckinButton(chat_id=chat_id).pack()
        )]]
    )


@dataclass(frozen=True, slots=True)
class _Refusal:
    """Why a pond's board is left alone, and what counts as a change."""

    day: date  # the check-in day it happened on: a later one is a change
    pond: PondInfo  # the pond as known then: a fresh one is a change
    forbidden: bool  # a 403: a change is the outbox sending there again
    until: float | None  # passing trouble: retried from then on (monotonic)
    reason: str


@dataclass(eq=False)
class _Pond:
    pond: PondInfo
    today: date
    dirty: bool = False
    last: float = -math.inf
    task: asyncio.Task[None] | None = None
    posts: set[asyncio.Task[None]] = field(default_factory=set)
    refused: _Refusal | None = None
    waiting_since: float | None = None  # since when a claimed post shows no message id


class BoardKeeper:
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
        self._ponds: dict[int, _Pond] = {}
        self.refreshes = 0  # boards rendered (for tests and benchmarks)

    def _state(self, pond: PondInfo, today: date) -> _Pond:
        st = self._ponds.get(pond.chat_id)
        if st is None:
            st = self._ponds[pond.chat_id] = _Pond(pond, today)
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

    def post(self, pond: PondInfo, today: date, *, by: int) -> None:
        """An operator asked for a fresh board (posted in the background)."""
        st = self._state(pond, today)
        st.refused = None  # the operator wants it tried again
        task = asyncio.create_task(self._post(st, by=by), name=f"board-post-{pond.chat_id}")
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

    # -- internals ---------------------------------------------------------------------

    def _changed(self, refusal: _Refusal, pond: PondInfo, today: date) -> bool:
        if pond is not refusal.pond:
            return True
        if refusal.forbidden:  # kicked: a new day changes nothing, being re-added does
            return not self.outbox.is_forbidden(pond.chat_id)
        if today > refusal.day:
            return True
        return refusal.until is not None and self.clock.monotonic() >= refusal.until

    def _refuse(self, st: _Pond, reason: str, *, passing: bool = False) -> None:
        forbidden = self.outbox.is_forbidden(st.pond.chat_id)
        until = self.clock.monotonic() + RETRY_TROUBLE if passing and not forbidden else None
        st.refused = _Refusal(st.today, st.pond, forbidden, until, reason)
        st.dirty = False
        log.warning(
            "the check-in board of %s was refused (%s); left alone until %s", st.pond.chat_id,
            reason, "a while has passed" if until is not None else "something changes",
        )

    async def _run(self, st: _Pond) -> None:
        try:
            while st.dirty and st.refused is None:
                wait = st.last + self.interval - self.clock.monotonic()
                if wait > 0:
                    await self.clock.sleep(wait)
                st.dirty = False
                st.last = self.clock.monotonic()
                try:
                    await self._refresh(st)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("refreshing the check-in board of %s failed", st.pond.chat_id)
        finally:
            st.task = None

    async def _refresh(self, st: _Pond) -> None:
        chat_id, today = st.pond.chat_id, st.today
        async with self.db.transaction(readonly=True) as session:
            view = await store.board_view(session, chat_id, today)
        if view is None or view.day < today:
            await self._post(st, by=None)
            return
        if view.message_id is None:
            if st.posts:  # an operator's post of ours is on its way: let it finish
                st.dirty = True
                await asyncio.wait(set(st.posts))
                return
            now = self.clock.monotonic()
            if st.waiting_since is None:
                st.waiting_since = now
            if now - st.waiting_since < POST_WAIT:
                # Another process's post is on its way; look again shortly so the board
                # ends up showing the latest.
                st.dirty = True
                await self.clock.sleep(0.1)
                return
            log.info("the check-in board of %s was claimed but never posted; posting it",
                     chat_id)
            st.waiting_since = None
            await self._post(st, by=None, replace_gone=True)
            return
        st.waiting_since = None
        self.refreshes += 1
        edit = EditMessageText(
            chat_id=chat_id,
            message_id=view.message_id,
            text=self._render(st.pond, view),
            reply_markup=self._markup(st.pond),
        )
        try:
            done = await self.outbox.board(f"checkin-board:{chat_id}", edit)
        except TelegramBadRequest as exc:
            if "not found" in exc.message.lower():
                log.info("the check-in board of %s is gone; posting a new one", chat_id)
                await self._post(st, by=None, replace_gone=True)
            else:
                self._refuse(st, exc.message)
            return
        except TelegramAPIError as exc:
            self._refuse(st, exc.message, passing=True)
            return
        if done is None and self.outbox.is_forbidden(chat_id):
            self._refuse(st, "the chat refused the bot's messages")

    def _render(self, pond: PondInfo, view: store.BoardView) -> str:
        with speaking(self.i18n, pond.language):
            return texts.board(view)

    def _markup(self, pond: PondInfo) -> InlineKeyboardMarkup:
        with speaking(self.i18n, pond.language):
            return board_markup(pond.chat_id)

    async def _post(self, st: _Pond, *, by: int | None, replace_gone: bool = False) -> None:
        chat_id, today = st.pond.chat_id, st.today
        now = utcnow()
        async with self.db.transaction() as session:
            claimed = await store.claim_board(
                session, chat_id, today, posted_by=by, now=now, force=replace_gone
            )
            view = await store.board_view(session, chat_id, today) if claimed else None
        if view is None:
            return
        self.refreshes += 1
        try:
            sent = await self.outbox.send(
                SendMessage(chat_id=chat_id, text=self._render(st.pond, view),
                            reply_markup=self._markup(st.pond))
            )
        except TelegramBadRequest as exc:  # e.g. no right to send messages there
            self._refuse(st, exc.message)
            return
        except TelegramAPIError as exc:  # the outbox retried it already
            self._refuse(st, exc.message, passing=True)
            return
        if not isinstance(sent, Message):
            # The chat refused us (403: the outbox retires it), or the post was dropped.
            self._refuse(st, "the post was not delivered", passing=True)
            return
        async with self.db.transaction() as session:
            await store.board_posted(session, chat_id, sent.message_id)
        st.last = self.clock.monotonic()
        if by is not None:
            # Pinning is a courtesy: without the right it fails, and that is fine.
            pin = self.outbox.send(PinChatMessage(
                chat_id=chat_id, message_id=sent.message_id, disable_notification=True
            ))
            with contextlib.suppress(Exception):
                await pin
        st.refused = None  # posted: whatever was refused before is past
        if st.dirty and st.task is None:
            st.task = asyncio.create_task(self._run(st), name=f"board-{chat_id}")
