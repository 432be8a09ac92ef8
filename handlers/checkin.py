"""Daily check-in (签到): `/checkin`, the text 签到, the board's button; `/makeup`;
`/board` (operators); `/top streak`.

A check-in is one request to the batched writer (`storage.checkin.CheckinOp`): the day
is the pond's calendar day of the message's own `date` (a button press: of the moment it
is handled; see `games.checkin.checkin_moment`), so a 签到 typed before midnight and
delivered after it counts for the day it was typed. The member and the day make the
idempotency keys, so a replayed update — however late —, a double click or twenty racing
deliveries pay once.

Feedback respects the group's 20 messages a minute: a button press gets a callback
toast; a typed check-in shows on the board (refreshed in place, paced, by the
`BoardKeeper`) and gets its own reply only while the pond is quiet: fewer messages went
to it in the last minute (or are queued for it) than its `checkin_quiet_below` setting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, Message

from games.checkin import DEFAULT_TIMEZONE, checkin_moment, local_day
from games.parsing import fold
from services.checkin_board import BoardKeeper, CheckinButton
from services.fast_lane import HOT, ParsedOnce
from services.filters import IsOperator
from services.messaging import refuse_non_operator, reply
from services.middlewares import BATCHED, PondInfo
from services.outbox import Outbox
from services.tasks import DailyTasks
from services.texts import checkin as texts
from storage import checkin as store
from storage import repo
from storage.batch import BatchWriter
from storage.db import Database

KEYWORD = "签到"
TOP_SIZE = 10

Clock = Callable[[], datetime]


class IsCheckinText(Filter):
    """The plain text 签到 (surrounding whitespace ignored)."""

    never_a_command = True  # NEVER_A_COMMAND: "/…" never folds to 签到 (services.fast_lane)

    async def __call__(self, message: Message) -> bool:
        text = message.text
        return text is not None and len(text) < 16 and fold(text) == KEYWORD


class TopStreak(Filter):
    async def __call__(self, message: Message, command: CommandObject) -> bool:
        return (command.args or "").strip().lower() == "streak"


def setup() -> Router:
    router = Router(name="checkin")
    # BATCHED: a first-seen member's record is written in the check-in's own batch.
    batched = {BATCHED: True}
    router.message.register(checkin_message, Command("checkin"), flags=batched)
    router.message.register(checkin_message, IsCheckinText(), flags=batched)
    router.callback_query.register(  # HOT: a press stampede skips the routers' walk
        checkin_button, ParsedOnce(CheckinButton), flags={**batched, HOT: True}
    )
    router.message.register(makeup, Command("makeup"))
    router.message.register(post_board, Command("board"), IsOperator())
    router.message.register(refuse_non_operator, Command("board"))
    router.message.register(top_streak, Command("top"), TopStreak())
    return router


def _today(pond: PondInfo, clock: Clock) -> tuple[datetime, date]:
    now = clock()
    return now, local_day(now, pond.timezone)


def _request(pond: PondInfo, user_id: int, now: datetime, sent: datetime | None
             ) -> store.CheckinRequest:
    """The check-in of `user_id` made at `sent` (a message's date; None: now)."""
    at = checkin_moment(sent, now)
    return store.CheckinRequest(user_id, pond.chat_id, local_day(at, pond.timezone), now, at)


async def checkin_message(
    message: Message,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
    writer: BatchWriter,
    boards: BoardKeeper,
    outbox: Outbox,
    clock: Clock,
    daily_tasks: DailyTasks,
) -> None:
    if pond is None:
        reply(outbox, message, texts.groups_only())
        return
    if person is None:
        return  # anonymous admins and channels hold no points
    now, today = _today(pond, clock)
    request = _request(pond, person.id, now, message.date)
    result = await writer.submit(store.CHECKIN_OP, request)
    await daily_tasks.after(pond, person.id, request.day, now)
    quiet = outbox.load(pond.chat_id) < result.quiet_below  # the pond's setting
    boards.touch(pond, today)
    if not quiet:
        return  # the board shows it
    name = person.display_name
    if result.reward is not None:
        late = request.day if request.day != today else None
        reply(outbox, message,
              texts.done(name, result.reward, result.rank, result.balance, late=late))
    else:
        reply(outbox, message, texts.already(name, result.streak))


async def checkin_button(
    query: CallbackQuery,
    callback_data: CheckinButton,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
    writer: BatchWriter,
    boards: BoardKeeper,
    outbox: Outbox,
    clock: Clock,
    daily_tasks: DailyTasks,
) -> None:
    chat = query.message.chat if query.message is not None else None
    if chat is None or pond is None or chat.id != callback_data.chat_id:
        await outbox.answer(AnswerCallbackQuery(
            callback_query_id=query.id, text=texts.button_not_here(), show_alert=True
        ))
        return
    if person is None:
        await outbox.answer(AnswerCallbackQuery(
            callback_query_id=query.id, text=texts.members_only()
        ))
        return
    now, today = _today(pond, clock)
    result = await writer.submit(store.CHECKIN_OP, _request(pond, person.id, now, None))
    text = (
        texts.toast(result.reward, result.rank)
        if result.reward is not None
        else texts.toast_already(result.streak)
    )
    await outbox.answer(AnswerCallbackQuery(callback_query_id=query.id, text=text))
    if result.reward is not None:
        boards.touch(pond, today)
    await daily_tasks.after(pond, person.id, today, now)


async def makeup(
    message: Message,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
    db: Database,
    outbox: Outbox,
    clock: Clock,
) -> None:
    if pond is None:
        reply(outbox, message, texts.groups_only())
        return
    if person is None:
        return
    now = clock()
    today = local_day(checkin_moment(message.date, now), pond.timezone)
    outcome: str
    async with db.transaction() as session:
        settings = await repo.pond_settings(session, pond.chat_id)
        try:
            done = await store.makeup(
                session,
                user_id=person.id,
                chat_id=pond.chat_id,
                today=today,
                timezone=pond.timezone,
                cost=settings.checkin_makeup_cost,
                window=settings.checkin_makeup_window_days,
                every_days=settings.checkin_makeup_every_days,
                now=now,
            )
        except store.MakeupError as exc:
            outcome = texts.makeup_refused(
                exc.code, cost=settings.checkin_makeup_cost, balance=exc.balance,
                every_days=settings.checkin_makeup_every_days, day=exc.day, streak=exc.streak,
            )
        else:
            name = person.display_name
            outcome = texts.makeup_done(name, done.day, done.cost, done.streak, done.balance)
    reply(outbox, message, outcome)


async def post_board(
    message: Message, pond: PondInfo | None, boards: BoardKeeper, outbox: Outbox, clock: Clock
) -> None:
    if pond is None:
        reply(outbox, message, texts.groups_only())
        return
    _, today = _today(pond, clock)
    actor = message.sender_chat or message.from_user
    boards.post(pond, today, by=actor.id if actor is not None else 0)


async def top_streak(
    message: Message, pond: PondInfo | None, db: Database, outbox: Outbox, clock: Clock
) -> None:
    """The longest streaks among the pond's members (in a DM: shop-wide)."""
    if pond is None and message.chat.type != "private":
        return  # a group that is no pond shows nobody's streaks
    now = clock()
    today = local_day(now, pond.timezone if pond is not None else DEFAULT_TIMEZONE)
    chat_id = pond.chat_id if pond is not None else None
    async with db.transaction(readonly=True) as session:
        rows = await store.top_streaks(session, today, TOP_SIZE, chat_id=chat_id)
    reply(outbox, message, texts.top_streaks(rows))
