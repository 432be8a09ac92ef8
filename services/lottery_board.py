"""The pond's lottery board (🎰): one message with a button, edited in place, paced.

An operator's `/lottery` posts it (and pins it if the bot may). A press is answered by a
toast (the handler's), and the board — draws today, the latest winners, the prizes left
— is refreshed in place at most once per `interval` seconds however many members press
at once (`services.board.PacedBoards`: pacing, refusals); the outbox coalesces what is
still queued. So a pond of thousands drawing at once costs the group a handful of edits
a minute, well inside its 20.

The board's message is not stored: the one to edit is the last one posted or pressed
(a press carries its message), so after a restart the first press finds it again. A
board found deleted in the group is not edited again (an operator posts a new one).

`Presses` makes a double press one draw: presses of one member on one board within
`DOUBLE_PRESS` seconds of each other share the first press's key, so the second gets the
first's result (a replayed update has the same query id, hence the same key, anyway).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from datetime import date
from typing import Any

from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import EditMessageText, PinChatMessage, SendMessage
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message

from games.lottery import RandomSource
from services.board import BoardState, PacedBoards
from services.clock import Clock, SystemClock
from services.i18n import speaking
from services.lru import LRU
from services.middlewares import PondInfo
from services.texts import lottery as texts
from storage import lottery as store
from storage import repo

log = logging.getLogger(__name__)

DOUBLE_PRESS = 1.5  # seconds: a member's second press of a board within this is the first
SYSTEM_RANDOM: RandomSource = secrets.SystemRandom()


class LotteryButton(CallbackData, prefix="lot"):
    """The board's 🎰 button; carries the pond's chat id (checked against the chat the
    button's message is in) and nothing else."""

    chat_id: int


def board_markup(chat_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(
            text=texts.button(), callback_data=LotteryButton(chat_id=chat_id).pack()
        )]]
    )


class Presses:
    """The draw key of a press: a member's presses of one board in quick succession
    (a double press) share the first one's key."""

    def __init__(self, clock: Clock | None = None, size: int = 50_000) -> None:
        self.clock: Clock = clock or SystemClock()
        self._last: LRU[tuple[int, int, int], tuple[float, str]] = LRU(size)

    def key(self, chat_id: int, message_id: int, user_id: int, query_id: str) -> str:
        now = self.clock.monotonic()
        slot = (chat_id, message_id, user_id)
        last = self._last.get(slot)
        if last is not None and now - last[0] < DOUBLE_PRESS:
            return last[1]
        key = f"press:{chat_id}:{query_id}"
        self._last.put(slot, (now, key))
        return key


class LotteryBoard(PacedBoards):
    """The lottery boards of every pond."""

    what = "lottery board"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.presses = Presses(self.clock)
        self._gone = LRU[int, int](10_000)  # per pond: the board message found deleted

    def post(self, pond: PondInfo, today: date, *, by: int) -> None:
        """An operator's `/lottery`: post a fresh board (in the background)."""
        st = self._state(pond, today)
        st.refused = None  # the operator wants it tried again
        self._spawn_post(st, self._post(st))

    def pressed(self, pond: PondInfo, today: date, message_id: int) -> None:
        """A draw on the board `message_id`: refresh it soon (the refresh starts once
        this returns, so it edits that message). A board found deleted is not edited
        again: its presses (from clients that still show it) change nothing here."""
        if self._gone.get(pond.chat_id) == message_id:
            return
        self.touch(pond, today)
        st = self._ponds.get(pond.chat_id)
        if st is not None and st.refused is None:
            st.message_id = message_id

    def message_of(self, chat_id: int) -> int | None:
        st = self._ponds.get(chat_id)
        return st.message_id if st is not None else None

    async def _render(self, pond: PondInfo, today: date) -> tuple[str, InlineKeyboardMarkup]:
        async with self.db.transaction(readonly=True) as session:
            view = await store.board_view(session, pond.chat_id, today)
            settings = await repo.pond_settings(session, pond.chat_id)
        with speaking(self.i18n, pond.language):
            text = texts.board(view, settings.lottery_free_per_day, settings.lottery_cost)
            return text, board_markup(pond.chat_id)

    async def _refresh(self, st: BoardState) -> None:
        chat_id, message_id = st.pond.chat_id, st.message_id
        if message_id is None:
            return  # no board known here (yet): nothing to edit
        text, markup = await self._render(st.pond, st.today)
        self.refreshes += 1
        edit = EditMessageText(chat_id=chat_id, message_id=message_id, text=text,
                               reply_markup=markup)
        self._handing_over(st)
        try:
            done = await self.outbox.board(f"lottery-board:{chat_id}", edit)
        except TelegramBadRequest as exc:
            if "not found" in exc.message.lower():
                log.info("the lottery board of %s is gone", chat_id)
                self._gone.put(chat_id, message_id)
                if st.message_id == message_id:
                    st.message_id = None
            else:
                self._refuse(st, exc.message)
            return
        except TelegramAPIError as exc:
            self._refuse(st, exc.message, passing=True)
            return
        if done is None and self.outbox.is_forbidden(chat_id):
            self._refuse(st, "the chat refused the bot's messages")

    async def _post(self, st: BoardState) -> None:
        chat_id = st.pond.chat_id
        text, markup = await self._render(st.pond, st.today)
        self.refreshes += 1
        try:
            sent = await self.outbox.send(
                SendMessage(chat_id=chat_id, text=text, reply_markup=markup)
            )
        except TelegramBadRequest as exc:  # e.g. no right to send messages there
            self._refuse(st, exc.message)
            return
        except TelegramAPIError as exc:  # the outbox retried it already
            self._refuse(st, exc.message, passing=True)
            return
        if not isinstance(sent, Message):
            self._refuse(st, "the post was not delivered", passing=True)
            return
        st.message_id = sent.message_id
        self._gone.pop(chat_id, None)
        st.last = self.clock.monotonic()
        with contextlib.suppress(Exception):  # pinning is a courtesy
            await self.outbox.send(PinChatMessage(
                chat_id=chat_id, message_id=sent.message_id, disable_notification=True
            ))
        self._keep_fresh(st)
