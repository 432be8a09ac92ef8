"""Guess the price (猜价格): `/guessprice` (operators), `/guess <price>` and number
replies to the round's post (members).

The price is secret until the round closes: no reply, board, log line or callback
carries it — it is said only by the reveal post (scheduler/games.py), after the round
was closed in the database. Guesses are never echoed back either.

Busy ponds: a `closest` guess is acknowledged by the round post's participant count,
edited in place through the outbox's coalescing `board` (many guesses in a burst become
one edit), plus a DM to members who linked theirs; a reply in the group only while the
pond is quiet (fewer than `guess_quiet_below` messages to it in the last minute). The
same goes for refusals (out of attempts, closed …), so a crowd hammering /guess cannot
queue up hours of group replies. A `hit` attempt must be answered (higher / lower):
privately by DM when the member linked it, else — or if the DM fails, e.g. 403 blocked —
by a short reply in the group. Malformed prices always get their short error.

Idempotency: the member's message (chat and message id) names the attempt; a replay
finds it recorded and stays silent. The operator's command names the round likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiogram import Bot, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.filters import Command, CommandObject, Filter
from aiogram.methods import EditMessageCaption, EditMessageText, SendMessage, SendPhoto
from aiogram.types import Message
from sqlalchemy.exc import IntegrityError

from games.guess import LOOKS_LIKE_PRICE, Mode, parse_price, parse_round
from games.parsing import ParseError
from handlers.startup import active_ponds, log_restored, startup_deps
from scheduler.core import Scheduler
from scheduler.games import ANNOUNCE_WITHIN, reveal_round
from services import texts as common_texts
from services.filters import IsOperator
from services.messaging import actor_of, refuse_non_operator, reply
from services.middlewares import PondInfo
from services.outbox import Outbox, OutboxClosedError
from services.texts import games as texts
from storage import guess as store
from storage import repo
from storage.db import Database
from storage.models import Job

log = logging.getLogger(__name__)



def close_key(round_id: int) -> str:
    return f"{Job.guess_close}:{round_id}"


class PriceReplyToBot(Filter):
    """A short number-looking text replying to one of the bot's messages (no database
    touched: this runs for every reply in the pond)."""

    async def __call__(self, message: Message, bot: Bot) -> bool:
        target = message.reply_to_message
        text = message.text
        return (
            target is not None
            and target.from_user is not None
            and target.from_user.id == bot.id
            and text is not None
            and len(text) <= 32
            and LOOKS_LIKE_PRICE.fullmatch(text) is not None
        )


def setup() -> Router:
    router = Router(name="guess")
    router.message.register(open_round, Command("guessprice"), IsOperator())
    router.message.register(refuse_non_operator, Command("guessprice"))
    router.message.register(guess_command, Command("guess"))
    router.message.register(guess_reply, PriceReplyToBot())
    router.startup.register(restore_posts)
    return router



def _photo_of(message: Message) -> str | None:
    for m in (message, message.reply_to_message):
        if m is not None and m.photo:
            return m.photo[-1].file_id
    return None


def _round_method(view: store.RoundView, text: str) -> SendMessage | SendPhoto:
    if view.photo_file_id:
        return SendPhoto(chat_id=view.chat_id, photo=view.photo_file_id, caption=text)
    return SendMessage(chat_id=view.chat_id, text=text)


def _board_edit(view: store.RoundView, text: str) -> EditMessageText | EditMessageCaption:
    assert view.message_id is not None
    if view.photo_file_id:
        return EditMessageCaption(chat_id=view.chat_id, message_id=view.message_id, caption=text)
    return EditMessageText(chat_id=view.chat_id, message_id=view.message_id, text=text)


async def open_round(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
) -> None:
    if pond is None:
        reply(outbox, message, texts.groups_only())
        return
    try:
        args = parse_round(command.args)
    except ParseError as exc:
        reply(outbox, message, texts.round_error(exc.code))
        return
    actor = actor_of(message)
    now = scheduler.clock()
    try:
        async with db.transaction() as session:
            settings = await repo.pond_settings(session, pond.chat_id)
            opened = await store.open_round(
                session,
                chat_id=pond.chat_id,
                source_key=f"{message.chat.id}:{message.message_id}",
                args=args,
                settings=settings,
                opened_by=actor,
                photo_file_id=_photo_of(message),
                now=now,
            )
            if opened.kind == "opened":
                assert opened.round is not None
                await scheduler.schedule(
                    opened.round.closes_at,
                    Job.guess_close,
                    close_key(opened.round.id),
                    {"round_id": opened.round.id},
                    session=session,
                    chat_id=pond.chat_id,
                )
    except IntegrityError:  # another round opened concurrently (PostgreSQL)
        reply(outbox, message, texts.round_busy())
        return
    if opened.kind == "busy":
        reply(outbox, message, texts.round_busy())
        return
    view = opened.round
    if view is None:
        return
    lost = view.message_id is None and view.state == "open"
    if opened.kind != "opened" and not lost:
        return  # a replay of a command already carried out
    # New, or a replay of one whose post was lost (a crash before it went out): post.
    post_round(db, outbox, view, pond.timezone)


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
                _refresh_post(outbox, now, timezone)

    queued = outbox.post(
        _round_method(view, texts.round_post(view, timezone)),
        key=f"guess:{view.id}",
        record=record,
    )
    return queued is not None


async def restore_posts(router: Router) -> None:
    """At start: post the open rounds whose post never went out (handlers/startup.py, "lost
    posts"); without it such a round would hold the pond's only slot unseen. Reveals of
    rounds closed lately that were never recorded as sent go out too."""
    deps = startup_deps(router)
    now = deps.scheduler.clock()
    async with deps.db.transaction() as session:
        lost = await store.unposted(session)
        reveals = [
            reveal
            for round_id in await store.unrevealed(session, now - ANNOUNCE_WITHIN)
            if (reveal := await store.close_round(session, round_id, now)) is not None
        ]
        chats = [r.chat_id for r in lost] + [r.chat_id for r in reveals]
        ponds = await active_ponds(session, chats)
    posted = revealed = 0
    for view in lost:
        pond = ponds.get(view.chat_id)
        if pond is not None:
            with deps.speaking(pond.language):
                posted += post_round(deps.db, deps.outbox, view, pond.timezone)
    for reveal in reveals:
        pond = ponds.get(reveal.chat_id)
        if pond is not None:
            with deps.speaking(pond.language):
                revealed += reveal_round(deps.db, deps.outbox, reveal, now)
    log_restored("guess round", posted)
    log_restored("guess reveal", revealed)


async def guess_command(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
) -> None:
    if person is None:
        reply(outbox, message, common_texts.cannot_target_bot())
        return
    if not (command.args or "").strip():
        reply(outbox, message, texts.usage_guess())
        return
    await _guess(message, command.args or "", db, outbox, scheduler, pond, person, None)


async def guess_reply(
    message: Message,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
) -> None:
    assert message.reply_to_message is not None and message.text is not None
    if pond is None or person is None:
        raise SkipHandler
    target = message.reply_to_message.message_id
    await _guess(message, message.text, db, outbox, scheduler, pond, person, target)


async def _guess(
    message: Message,
    text: str,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
    person: repo.UserInfo,
    round_message_id: int | None,
) -> None:
    if pond is None:
        reply(outbox, message, texts.no_round())
        return
    try:
        cents = parse_price(text)
    except ParseError as exc:
        reply(outbox, message, texts.price_error(exc.code))
        return
    now = scheduler.clock()
    async with db.transaction() as session:
        out = await store.record_guess(
            session,
            chat_id=pond.chat_id,
            user_id=person.id,
            cents=cents,
            source_key=f"{message.chat.id}:{message.message_id}",
            now=now,
            round_message_id=round_message_id,
        )
        quiet_below = (await repo.pond_settings(session, pond.chat_id)).guess_quiet_below
        if out.filled and out.round is not None:
            # The last winner slot is taken: close now instead of at the deadline.
            await scheduler.cancel(close_key(out.round.id), session=session)
            await scheduler.schedule(
                now,
                Job.guess_close,
                close_key(out.round.id) + ":early",
                {"round_id": out.round.id},
                session=session,
                chat_id=pond.chat_id,
            )
    kind = out.kind
    if kind in ("no_round", "not_this_post"):
        if round_message_id is not None:
            raise SkipHandler  # a number replying to some other message: not ours
        reply(outbox, message, texts.no_round())
        return
    if kind == "replay":
        return
    assert out.round is not None
    name = _name(person)
    # A hit-mode verdict is the answer the member waits for: it always goes out. The
    # rest (acknowledgements, refusals) reaches the group only while the pond is quiet.
    quiet = outbox.load(pond.chat_id) < quiet_below
    answer: str | None = None
    if kind == "closed":
        answer = texts.round_closed()
    elif kind == "out_of_attempts":
        answer = texts.out_of_attempts(out.round.mode, out.allowed)
    elif kind == "already_won":
        answer = texts.already_won()
    elif kind == "winners_full":
        answer = texts.winners_full()
    elif kind == "accepted":
        answer = texts.guess_received(name)
    if kind == "judged":
        assert out.verdict is not None
        verdict = texts.verdict(out.verdict, out.attempts_left, out.won)
        _tell(outbox, message, person.id, name, verdict, dm=out.dm_linked, group=True)
    elif answer is not None:
        _tell(outbox, message, person.id, name, answer, dm=out.dm_linked, group=quiet)
    if out.first_guess and out.round.message_id is not None:
        _refresh_post(outbox, out.round, pond.timezone)


def _name(person: repo.UserInfo) -> str:
    full = f"{person.first_name} {person.last_name}".strip()
    return full or (f"@{person.username}" if person.username else str(person.id))


def _refresh_post(outbox: Outbox, view: store.RoundView, timezone: str) -> None:
    """The round post's participant count, edited in place; bursts are coalesced."""
    outbox.board(f"guess:{view.id}", _board_edit(view, texts.round_post(view, timezone)))


def _tell(
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


__all__ = ["Mode", "close_key", "setup"]
