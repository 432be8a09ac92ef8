"""Guess the price (F4) as Telegram sees it: the round's post and its participant count,
the answers to a guess, and the reveal. Everything goes through the outbox; nothing here
waits for Telegram.

* The round's post is queued with `Outbox.post` (its message id is recorded when Telegram
  answers, the only source of that id); the participant count is an in-place edit
  through the outbox's coalescing `board`, so a burst of guesses becomes one edit.
* An answer to a guess goes privately when the member linked their DM; otherwise — or
  when the DM fails (403: blocked) — as a short reply in the group. A hit-mode verdict
  always reaches the member; acknowledgements and refusals reach the group only while
  the pond is quiet, so a crowd hammering /guess cannot queue up hours of replies.
* The reveal is queued under the round's close key and recorded once Telegram answered.
  A cancelled round has none: its post is edited to say it was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from aiogram.methods import EditMessageCaption, EditMessageText, SendMessage, SendPhoto
from aiogram.types import Message, ReplyParameters

from games.people import display_name
from services.messaging import reply
from services.outbox import Outbox, OutboxClosedError
from services.texts import games as texts
from storage import guess as store
from storage import repo
from storage.db import Database


def round_method(view: store.RoundView, text: str) -> SendMessage | SendPhoto:
    if view.photo_file_id:
        return SendPhoto(chat_id=view.chat_id, photo=view.photo_file_id, caption=text)
    return SendMessage(chat_id=view.chat_id, text=text)


def board_edit(view: store.RoundView, text: str) -> EditMessageText | EditMessageCaption:
    assert view.message_id is not None
    if view.photo_file_id:
        return EditMessageCaption(chat_id=view.chat_id, message_id=view.message_id, caption=text)
    return EditMessageText(chat_id=view.chat_id, message_id=view.message_id, text=text)


def post_round(db: Database, outbox: Outbox, view: store.RoundView, timezone: str) -> bool:
    """Queue the round's post; nobody waits for it (the pond's queue may be long). Its
    message id is stored when Telegram answers — the only source of that id — and the
    participant count brought up to date if `/guess` came in meanwhile. False when the
    post is already on its way."""

    async def record(sent: Message) -> None:
        async with db.transaction() as session:
            now = await store.set_round_message(session, view.id, sent.message_id)
        if now is not None and now.state == "open" and now.guessers:
            with contextlib.suppress(OutboxClosedError):  # stopping: the next guess shows it
                refresh_post(outbox, now, timezone)
        elif now is not None and now.state == store.CANCELLED:
            with contextlib.suppress(OutboxClosedError):  # cancelled before the post went out
                show_cancelled(outbox, now)

    queued = outbox.post(
        round_method(view, texts.round_post(view, timezone)),
        key=f"guess:{view.id}",
        record=record,
    )
    return queued is not None


def refresh_post(outbox: Outbox, view: store.RoundView, timezone: str) -> None:
    """The round post's participant count, edited in place; bursts are coalesced."""
    outbox.board(f"guess:{view.id}", board_edit(view, texts.round_post(view, timezone)))


def show_cancelled(outbox: Outbox, view: store.RoundView) -> None:
    """Edit a cancelled round's post to say so (no price: it stays secret). Under the
    post's board key, so it replaces a count edit still waiting."""
    if view.message_id is not None:
        outbox.board(f"guess:{view.id}", board_edit(view, texts.round_cancelled_post(view)))


def reveal_round(db: Database, outbox: Outbox, reveal: store.Reveal, now: datetime) -> bool:
    """Queue a closed round's reveal post (texts in the caller's language); it is
    recorded as revealed once Telegram answered it. False: already on its way."""

    async def record(_: Message) -> None:
        async with db.transaction() as session:
            await store.mark_revealed(session, reveal.round_id, now)

    replying = (
        None
        if reveal.message_id is None
        else ReplyParameters(message_id=reveal.message_id, allow_sending_without_reply=True)
    )
    queued = outbox.post(
        SendMessage(chat_id=reveal.chat_id, text=texts.reveal(reveal), reply_parameters=replying),
        key=store.close_key(reveal.round_id),
        record=record,
    )
    return queued is not None


# -- answering a guess ---------------------------------------------------------------------


def _answer(out: store.GuessOutcome, name: str) -> str | None:
    """What a guess that was not judged is told (None: nothing)."""
    assert out.round is not None
    if out.kind == "closed":
        return texts.round_closed()
    if out.kind == "out_of_attempts":
        return texts.out_of_attempts(out.round.mode, out.allowed)
    if out.kind == "already_won":
        return texts.already_won()
    if out.kind == "winners_full":
        return texts.winners_full()
    if out.kind == "accepted":
        return texts.guess_received(name)
    return None


def answer_guess(
    outbox: Outbox,
    message: Message,
    person: repo.UserInfo,
    out: store.GuessOutcome,
    *,
    quiet: bool,
    timezone: str,
) -> None:
    """Answer a recorded guess (not a replay) and bring the round's count up to date;
    `quiet`: the pond is quiet enough for replies that are not a verdict."""
    assert out.round is not None
    name = display_name(person.first_name, person.last_name, person.username, str(person.id))
    # A hit-mode verdict is the answer the member waits for: it always goes out. The
    # rest (acknowledgements, refusals) reaches the group only while the pond is quiet.
    if out.kind == "judged":
        assert out.verdict is not None
        verdict = texts.verdict(out.verdict, out.attempts_left, out.won)
        tell(outbox, message, person.id, name, verdict, dm=out.dm_linked, group=True)
    elif (answer := _answer(out, name)) is not None:
        tell(outbox, message, person.id, name, answer, dm=out.dm_linked, group=quiet)
    if out.first_guess and out.round.message_id is not None:
        refresh_post(outbox, out.round, timezone)


def tell(
    outbox: Outbox,
    message: Message,
    user_id: int,
    name: str,
    text: str,
    *,
    dm: bool,
    group: bool,
) -> None:
    """Say `text` to the member privately when they linked their DM; else — or when the
    DM fails (blocked: 403) — as a short reply in the group, if `group`."""
    in_group = texts.verdict_in_group(name, text)
    if not dm:
        if group:
            reply(outbox, message, in_group)
        return
    sent = outbox.send(SendMessage(chat_id=user_id, text=text))
    if not group:
        return

    def after(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        if fut.exception() is None and fut.result() is not None:
            return
        with contextlib.suppress(OutboxClosedError):
            reply(outbox, message, in_group)

    sent.add_done_callback(after)
