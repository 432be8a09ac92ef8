"""The pond's check-in board: one message, edited in place, paced.

A busy morning brings hundreds of check-ins a minute, and Telegram allows a group 20
messages a minute — edits included. So check-ins never answer one message each: they
`touch` the pond's board, and the keeper refreshes it at most once per `interval`
seconds (pacing and refusals: `services.board.PacedBoards`). The board's content is
read from the database at refresh time, so however many check-ins a refresh absorbs,
it shows the latest count and names. The outbox coalesces whatever is still queued.

When a pond has no board from today, the first check-in makes the keeper post one (once
per pond and day: the post is claimed in the database first). An operator's `/board`
always posts a fresh board, which replaces the stored one, and pins it if the bot may.

A pond that refuses the board is left alone until something changes (see
`services.board`): a new check-in day, an operator's `/board`, the pond itself. A
claimed post that never got its message id (its process died) is taken over after
`POST_WAIT` seconds.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import date

from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import EditMessageText, PinChatMessage, SendMessage
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message

from services.board import DEFAULT_INTERVAL, RETRY_TROUBLE, BoardState, PacedBoards
from services.i18n import speaking
from services.middlewares import PondInfo
from services.texts import checkin as texts
from storage import checkin as store
from storage.models import utcnow

log = logging.getLogger(__name__)

POST_WAIT = 120.0  # seconds a claimed post may go without a message id before it is redone

__all__ = ["DEFAULT_INTERVAL", "POST_WAIT", "RETRY_TROUBLE", "BoardKeeper", "CheckinButton",
           "board_markup"]


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


class BoardKeeper(PacedBoards):
    """The check-in boards of every pond."""

    what = "check-in board"

    def post(self, pond: PondInfo, today: date, *, by: int) -> None:
        """An operator asked for a fresh board (posted in the background)."""
        st = self._state(pond, today)
        st.refused = None  # the operator wants it tried again
        self._spawn_post(st, self._post(st, by=by))

    async def _refresh(self, st: BoardState) -> None:
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
        self._handing_over(st)
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

    async def _post(self, st: BoardState, *, by: int | None, replace_gone: bool = False) -> None:
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
        self._keep_fresh(st)
