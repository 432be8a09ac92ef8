"""Surveys (问卷, F10): `/survey <duration> <key> <question> | <option 1> | …` (operators)
and the survey's buttons (members).

A survey is a vote whose answers go to the members' profiles (handlers/votes.py has the
reasons for buttons over a native poll): one answer per member and survey, changeable
while it is open, the latest stored in the profile under the survey's key; the points
once per member and survey. Every press gets a toast — no group message — and the post's
live counts are an in-place board edit the outbox coalesces, so a pond of thousands
answering stays within the group's 20 messages a minute. The button carries ids only
(`sv:<survey>:<option>`); chat, post, state and points come from the database.
"""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from pydantic import Field

from games.parsing import ParseError
from games.surveys import parse_survey
from games.votes import MAX_OPTIONS
from handlers.polls import restore, should_post
from scheduler.core import Scheduler
from scheduler.surveys import announce_survey, close_key
from services import polls
from services.filters import IsOperator
from services.messaging import actor_of, carries_button, refuse_non_operator, reply
from services.middlewares import PondInfo
from services.outbox import Outbox
from services.texts import games as game_texts
from services.texts import surveys as texts
from storage import repo
from storage import surveys as store
from storage.db import Database
from storage.models import Job

MAX_ID = 2**63 - 1


class SurveyButton(CallbackData, prefix="sv"):
    """A survey's button: ids only, bounded before they reach SQL."""

    survey_id: int = Field(ge=1, le=MAX_ID)
    option: int = Field(ge=0, lt=MAX_OPTIONS)


def markup(view: store.SurveyView) -> InlineKeyboardMarkup:
    return polls.markup(view.options, lambda i: SurveyButton(survey_id=view.id, option=i).pack())


def setup() -> Router:
    router = Router(name="surveys")
    router.message.register(open_survey, Command("survey"), IsOperator())
    router.message.register(refuse_non_operator, Command("survey"))
    router.callback_query.register(press, SurveyButton.filter())
    router.startup.register(restore_posts)
    return router


def post_survey(db: Database, outbox: Outbox, view: store.SurveyView, timezone: str) -> bool:
    """Queue the survey's post; its message id is stored when Telegram answers (a press
    before that is "not ready")."""

    async def record(sent: Message) -> None:
        async with db.transaction() as session:
            await store.set_message(session, view.id, sent.message_id)

    text = texts.survey_post(view, [0] * len(view.options), timezone)
    return polls.post(outbox, f"survey:{view.id}", view.chat_id, text, markup(view), record)


async def restore_posts(router: Router) -> None:
    """At start: post the open surveys whose post never went out, and the results of
    surveys closed lately that were never recorded as sent."""
    await restore(
        router,
        "survey",
        unposted=store.unposted,
        unannounced=store.unannounced,
        close=store.close_survey,
        post=lambda deps, s, tz: post_survey(deps.db, deps.outbox, s, tz),
        announce=lambda deps, r, tz, now: announce_survey(deps.db, deps.outbox, r, tz, now),
    )


async def open_survey(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
) -> None:
    if pond is None:
        reply(outbox, message, game_texts.groups_only())
        return
    try:
        args = parse_survey(command.args)
    except ParseError as exc:
        reply(outbox, message, texts.survey_error(exc.code))
        return
    now = scheduler.clock()
    async with db.transaction() as session:
        points = (await repo.pond_settings(session, pond.chat_id)).survey_points
        opened = await store.open_survey(
            session,
            chat_id=pond.chat_id,
            source_key=f"{message.chat.id}:{message.message_id}",
            args=args,
            points=points,
            opened_by=actor_of(message),
            now=now,
        )
        if opened.kind == "opened":
            await scheduler.schedule(
                opened.survey.closes_at,
                Job.survey_close,
                close_key(opened.survey.id),
                {"survey_id": opened.survey.id},
                session=session,
                chat_id=pond.chat_id,
            )
    if should_post(opened.kind, opened.survey, now):
        post_survey(db, outbox, opened.survey, pond.timezone)


async def press(
    query: CallbackQuery,
    callback_data: SurveyButton,
    bot: Bot,
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
                text=texts.bots_cannot_answer() if person is None
                else game_texts.button_not_valid(),
            )
        )
        return
    now = scheduler.clock()
    async with db.transaction() as session:
        answer = await store.answer(
            session,
            survey_id=callback_data.survey_id,
            chat_id=msg.chat.id,
            message_id=msg.message_id,
            user_id=person.id,
            option=callback_data.option,
            now=now,
            genuine=carries_button(msg, query, bot),
        )
    if answer.kind == "not_ready":
        toast = texts.survey_not_ready_toast()
    elif answer.kind in ("not_found", "bad_option") or answer.survey is None:
        toast = game_texts.button_not_valid()
    elif answer.kind == "closed":
        toast = texts.survey_closed_toast()
    else:
        toast = texts.survey_toast(answer.kind, answer.survey.options[answer.option], answer.paid)
    await outbox.answer(AnswerCallbackQuery(callback_query_id=query.id, text=toast))
    if answer.kind in ("answered", "changed") and answer.survey is not None:
        view = answer.survey
        assert view.message_id is not None
        text = texts.survey_post(view, answer.counts, pond.timezone)
        polls.refresh(
            outbox, f"survey:{view.id}", view.chat_id, view.message_id, text, markup(view)
        )
