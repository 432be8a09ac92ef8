"""Votes (投票): `/vote <duration> <question> | <option 1> | …` (operators) and the
vote's buttons (members).

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

import logging

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.filters import IsOperator
from bot.messaging import actor_of, refuse_non_operator, reply
from bot.middlewares import PondInfo
from bot.outbox import Outbox
from bot.texts import games as texts
from games.parsing import ParseError
from games.votes import parse_vote
from scheduler.core import Scheduler
from storage import repo
from storage import votes as store
from storage.db import Database

log = logging.getLogger(__name__)

CLOSE_JOB = "vote.close"


class VoteButton(CallbackData, prefix="vt"):
    vote_id: int
    option: int


def close_key(vote_id: int) -> str:
    return f"{CLOSE_JOB}:{vote_id}"


def markup(view: store.VoteView) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=o, callback_data=VoteButton(vote_id=view.id, option=i).pack()
                )
            ]
            for i, o in enumerate(view.options)
        ]
    )


def setup() -> Router:
    router = Router(name="votes")
    router.message.register(open_vote, Command("vote"), IsOperator())
    router.message.register(refuse_non_operator, Command("vote"))
    router.callback_query.register(click, VoteButton.filter())
    return router



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
                CLOSE_JOB,
                close_key(opened.vote.id),
                {"vote_id": opened.vote.id},
                session=session,
                chat_id=pond.chat_id,
            )
    if opened.kind != "opened":
        return  # a replay of a command already carried out
    view = opened.vote
    text = texts.vote_post(view, [0] * len(view.options), pond.timezone)
    try:
        sent = await outbox.send(
            SendMessage(chat_id=view.chat_id, text=text, reply_markup=markup(view))
        )
    except TelegramAPIError as exc:
        log.warning("vote %s: the post could not be sent: %s", view.id, type(exc).__name__)
        return
    if isinstance(sent, Message):
        async with db.transaction() as session:
            await store.set_vote_message(session, view.id, sent.message_id)


async def click(
    query: CallbackQuery,
    callback_data: VoteButton,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
) -> None:
    msg = query.message
    if person is None or msg is None or pond is None:
        await outbox.answer(
            AnswerCallbackQuery(
                callback_query_id=query.id,
                text=texts.bots_cannot_vote() if person is None else texts.vote_unknown_toast(),
            )
        )
        return
    async with db.transaction() as session:
        cast = await store.cast(
            session,
            vote_id=callback_data.vote_id,
            chat_id=msg.chat.id,
            message_id=msg.message_id,
            user_id=person.id,
            option=callback_data.option,
            now=scheduler.clock(),
        )
    if cast.kind in ("not_found", "bad_option") or cast.vote is None:
        toast = texts.vote_unknown_toast()
    elif cast.kind == "closed":
        toast = texts.vote_closed_toast()
    else:
        toast = texts.vote_toast(cast.kind, cast.vote.options[cast.option], cast.paid)
    await outbox.answer(AnswerCallbackQuery(callback_query_id=query.id, text=toast))
    if cast.kind in ("cast", "changed") and cast.vote is not None:
        view = cast.vote
        outbox.board(
            f"vote:{view.id}",
            EditMessageText(
                chat_id=msg.chat.id,
                message_id=msg.message_id,
                text=texts.vote_post(view, cast.counts, pond.timezone),
                reply_markup=markup(view),
            ),
        )
