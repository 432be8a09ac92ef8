"""Votes (投票): `/vote <duration> <question> | <option 1> | …` (operators) and the
vote's buttons (members). `/vote close` and `/vote cancel` are handlers/undo.py.

Inline buttons rather than a native poll: a `poll_answer` update carries no chat, so a
native poll's answers would have to be mapped back to a pond through the poll id, and
the bot could neither show a live tally its own way nor refuse a forged click. With
buttons the ballots live in our database (one row per member and vote: the tally is
exact, whoever changes their mind), every click gets a toast (no group message), and
the post's live counts are an in-place, coalesced board edit. The button carries ids
only (`vt:<vote>:<option>`); the vote's chat, its post, its state and its points come
from the database.
"""

from __future__ import annotations

import contextlib
import logging

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import AnswerCallbackQuery, EditMessageText
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from pydantic import Field

from games.checkin import local_day
from games.parsing import ParseError
from games.votes import MAX_OPTIONS, parse_vote
from handlers.polls import restore, should_post
from handlers.undo import VOTE_UNDO, vote_undo
from scheduler.core import Scheduler
from scheduler.games import announce_vote
from services import polls
from services.filters import IsOperator
from services.messaging import actor_of, carries_button, refuse_non_operator, reply
from services.middlewares import PondInfo
from services.outbox import Outbox, OutboxClosedError
from services.tasks import DailyTasks
from services.texts import games as texts
from storage import repo
from storage import votes as store
from storage.db import Database
from storage.models import Job

log = logging.getLogger(__name__)

MAX_ID = 2**63 - 1


class VoteButton(CallbackData, prefix="vt"):
    """A vote's button: ids only, bounded before they reach SQL (a forged
    `vt:99999999999999999999999:0` fails to parse and gets the "not valid" toast)."""

    vote_id: int = Field(ge=1, le=MAX_ID)
    option: int = Field(ge=0, lt=MAX_OPTIONS)


def close_key(vote_id: int) -> str:
    return f"{Job.vote_close}:{vote_id}"


def markup(view: store.VoteView) -> InlineKeyboardMarkup:
    return polls.markup(view.options, lambda i: VoteButton(vote_id=view.id, option=i).pack())


def setup() -> Router:
    router = Router(name="votes")
    router.message.register(vote_undo, VOTE_UNDO, IsOperator())  # /vote close|cancel
    router.message.register(open_vote, Command("vote"), IsOperator())
    router.message.register(refuse_non_operator, Command("vote"))
    router.callback_query.register(click, VoteButton.filter())
    router.startup.register(restore_posts)
    return router


def post_vote(db: Database, outbox: Outbox, view: store.VoteView, timezone: str) -> bool:
    """Queue the vote's post; nobody waits for it (the pond's queue may be long). Its
    message id is stored when Telegram answers — the only source of that id — and the
    tally shown then, if ballots came in meanwhile (they cannot before: a click on a
    post whose id is not stored is "not ready")."""

    async def record(sent: Message) -> None:
        async with db.transaction() as session:
            await store.set_vote_message(session, view.id, sent.message_id)
            now = await store.get_vote(session, view.id)
        if now is not None and now.state == store.CANCELLED:  # before its post went out
            with contextlib.suppress(OutboxClosedError):
                outbox.board(
                    f"vote:{view.id}",
                    EditMessageText(
                        chat_id=view.chat_id,
                        message_id=sent.message_id,
                        text=texts.vote_cancelled_post(view),
                    ),
                )

    text = texts.vote_post(view, [0] * len(view.options), timezone)
    return polls.post(outbox, f"vote:{view.id}", view.chat_id, text, markup(view), record)


async def restore_posts(router: Router) -> None:
    """At start: post the open votes whose post never went out (handlers/startup.py, "lost
    posts"), and the results of votes closed lately that were never recorded as sent."""
    await restore(
        router,
        "vote",
        unposted=store.unposted,
        unannounced=store.unannounced,
        close=store.close_vote,
        post=lambda deps, v, tz: post_vote(deps.db, deps.outbox, v, tz),
        announce=lambda deps, r, tz, now: announce_vote(deps.db, deps.outbox, r, tz, now),
    )


async def open_vote(
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
        args = parse_vote(command.args)
    except ParseError as exc:
        reply(outbox, message, texts.vote_error(exc.code))
        return
    actor = actor_of(message)
    now = scheduler.clock()
    async with db.transaction() as session:
        points = (await repo.pond_settings(session, pond.chat_id)).vote_points
        opened = await store.open_vote(
            session,
            chat_id=pond.chat_id,
            source_key=f"{message.chat.id}:{message.message_id}",
            args=args,
            points=points,
            opened_by=actor,
            now=now,
        )
        if opened.kind == "opened":
            await scheduler.schedule(
                opened.vote.closes_at,
                Job.vote_close,
                close_key(opened.vote.id),
                {"vote_id": opened.vote.id},
                session=session,
                chat_id=pond.chat_id,
            )
    if should_post(opened.kind, opened.vote, now):
        post_vote(db, outbox, opened.vote, pond.timezone)


async def click(
    query: CallbackQuery,
    callback_data: VoteButton,
    bot: Bot,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
    daily_tasks: DailyTasks,
) -> None:
    msg = query.message
    if person is None or msg is None or pond is None:
        await outbox.answer(
            AnswerCallbackQuery(
                callback_query_id=query.id,
                text=texts.bots_cannot_vote() if person is None else texts.button_not_valid(),
            )
        )
        return
    now = scheduler.clock()
    async with db.transaction() as session:
        cast = await store.cast(
            session,
            vote_id=callback_data.vote_id,
            chat_id=msg.chat.id,
            message_id=msg.message_id,
            user_id=person.id,
            option=callback_data.option,
            now=now,
            genuine=carries_button(msg, query, bot),
        )
    if cast.kind == "not_ready":
        toast = texts.vote_not_ready_toast()
    elif cast.kind in ("not_found", "bad_option") or cast.vote is None:
        toast = texts.button_not_valid()
    elif cast.kind == "closed":
        toast = texts.vote_closed_toast()
    else:
        toast = texts.vote_toast(cast.kind, cast.vote.options[cast.option], cast.paid)
    await outbox.answer(AnswerCallbackQuery(callback_query_id=query.id, text=toast))
    if cast.kind in ("cast", "changed") and cast.vote is not None:
        view = cast.vote
        assert view.message_id is not None
        text = texts.vote_post(view, cast.counts, pond.timezone)
        polls.refresh(outbox, f"vote:{view.id}", view.chat_id, view.message_id, text, markup(view))
    if cast.kind in ("cast", "changed", "same"):  # the member has a ballot: a task done
        await daily_tasks.after(pond, person.id, local_day(now, pond.timezone), now)
