"""Guess the price (猜价格): `/guessprice` (operators), `/guess <price>` and number
replies to the round's post (members).

The price is secret until the round closes: no reply, board, log line or callback
carries it — it is said only by the reveal post (services/guess.py, queued by the close
job in scheduler/games.py), after the round was closed in the database. Guesses are
never echoed back either.

Busy ponds: a `closest` guess is acknowledged by the round post's participant count
(one coalesced edit for a burst), plus a DM to members who linked theirs; a reply in the
group only while the pond is quiet (fewer than `guess_quiet_below` messages to it in the
last minute). The same goes for refusals, while a `hit` attempt is always answered
(higher / lower) — how, is services/guess.py. Malformed prices always get their error.

Idempotency: the member's message (chat and message id) names the attempt; a replay
finds it recorded and stays silent. The operator's command names the round likewise.
"""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import Message
from sqlalchemy.exc import IntegrityError

from games.checkin import local_day
from games.guess import LOOKS_LIKE_PRICE, parse_price, parse_round
from games.parsing import ParseError
from handlers.startup import active_ponds, repost, startup_deps
from handlers.undo import GUESS_CANCEL, guess_cancel
from scheduler import games as jobs
from scheduler.core import Scheduler
from services import texts as common_texts
from services.filters import IsOperator
from services.guess import answer_guess, post_round, reveal_round
from services.messaging import actor_of, refuse_non_operator, reply
from services.middlewares import PondInfo
from services.outbox import Outbox
from services.tasks import DailyTasks
from services.texts import games as texts
from storage import guess as store
from storage import repo
from storage.db import Database

# Outcomes after which the member has a guess in the round (the daily task is done).
GUESSED = frozenset({"accepted", "judged", "replay", "already_won", "out_of_attempts"})


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
    router.message.register(guess_cancel, GUESS_CANCEL, IsOperator())  # handlers/undo.py
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
    try:
        async with db.transaction() as session:
            opened = await store.open_round(
                session,
                chat_id=pond.chat_id,
                source_key=f"{message.chat.id}:{message.message_id}",
                args=args,
                settings=await repo.pond_settings(session, pond.chat_id),
                opened_by=actor_of(message),
                photo_file_id=_photo_of(message),
                now=scheduler.clock(),
            )
            if opened.kind == "opened":
                assert opened.round is not None
                await jobs.schedule_close(scheduler, session, opened.round, pond.chat_id)
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
            for round_id in await store.unrevealed(session, now - jobs.ANNOUNCE_WITHIN)
            if (reveal := await store.close_round(session, round_id, now)) is not None
        ]
        chats = [r.chat_id for r in lost] + [r.chat_id for r in reveals]
        ponds = await active_ponds(session, chats)
    repost(
        deps,
        "guess round",
        lost,
        ponds,
        lambda view: view.chat_id,
        lambda view, pond: post_round(deps.db, deps.outbox, view, pond.timezone),
    )
    repost(
        deps,
        "guess reveal",
        reveals,
        ponds,
        lambda reveal: reveal.chat_id,
        lambda reveal, _pond: reveal_round(deps.db, deps.outbox, reveal, now),
    )


async def guess_command(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
    daily_tasks: DailyTasks,
) -> None:
    if person is None:
        reply(outbox, message, common_texts.cannot_target_bot())
        return
    if not (command.args or "").strip():
        reply(outbox, message, texts.usage_guess())
        return
    await _guess(message, command.args or "", db, outbox, scheduler, pond, person, None,
                 daily_tasks)


async def guess_reply(
    message: Message,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
    daily_tasks: DailyTasks,
) -> None:
    assert message.reply_to_message is not None and message.text is not None
    if pond is None or person is None:
        raise SkipHandler
    target = message.reply_to_message.message_id
    await _guess(message, message.text, db, outbox, scheduler, pond, person, target,
                 daily_tasks)


async def _guess(
    message: Message,
    text: str,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
    person: repo.UserInfo,
    round_message_id: int | None,
    daily_tasks: DailyTasks,
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
            await jobs.close_now(scheduler, session, out.round, pond.chat_id, now)
    if out.kind in ("no_round", "not_this_post"):
        if round_message_id is not None:
            raise SkipHandler  # a number replying to some other message: not ours
        reply(outbox, message, texts.no_round())
    elif out.kind != "replay":
        quiet = outbox.load(pond.chat_id) < quiet_below
        answer_guess(outbox, message, person, out, quiet=quiet, timezone=pond.timezone)
    if out.kind in GUESSED:  # the member has a guess in the round: a task done
        await daily_tasks.after(pond, person.id, local_day(now, pond.timezone), now)


__all__ = ["setup"]
