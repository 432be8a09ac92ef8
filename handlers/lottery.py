"""The lottery (抽奖, SPEC F8): the board's 🎰 button and `/draw`; `/prize add|list|off`
and `/lottery` for operators.

A draw is one request to the batched writer (`storage.lottery.DRAW_OP`: a crowd's draws
share a unit of work, each decided as `storage.lottery.draw` would), keyed by what asked
for it — a press (`services.lottery_board.Presses`: a double press is one draw) or a
typed `/draw` message — so a replayed update draws once. Its day is the pond's local
day of the press (of a typed `/draw`: of the message's own date). Nothing talks to
Telegram before the commit; an item won is delivered to the winner's DM afterwards
(`services.shop_delivery.deliver`), never shown anywhere else.

Feedback respects the group's 20 messages a minute: a press gets a toast and refreshes
the board in place (paced, coalesced: `LotteryBoard`); a typed `/draw` is answered by DM
when the member's DM is linked, and in the group only while the pond is quiet (fewer
messages went to it in the last minute, or are queued, than `lottery_quiet_below`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.methods import AnswerCallbackQuery, SendMessage
from aiogram.types import CallbackQuery, Message

from games.checkin import DEFAULT_TIMEZONE, checkin_moment, local_day
from games.lottery import RandomSource, parse_prize
from games.parsing import ParseError, fold, parse_points
from services import shop_delivery
from services.fast_lane import HOT, ParsedOnce
from services.filters import IsOperator
from services.guess import tell
from services.lottery_board import SYSTEM_RANDOM, LotteryBoard, LotteryButton
from services.messaging import actor_of, refuse_non_operator, reply
from services.middlewares import BATCHED, PondInfo
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.tasks import DailyTasks
from services.texts import checkin as checkin_texts
from services.texts import lottery as texts
from services.texts import ponds as pond_texts
from storage import lottery as store
from storage import repo
from storage.batch import BatchWriter
from storage.db import Database

Clock = Callable[[], datetime]


def setup() -> Router:
    router = Router(name="lottery")
    # BATCHED: a first-seen member's record is written in the draw's own batch.
    batched = {BATCHED: True}
    router.callback_query.register(  # HOT: a draw stampede skips the routers' walk
        draw_button, ParsedOnce(LotteryButton), flags={**batched, HOT: True}
    )
    router.message.register(draw_command, Command("draw"), flags=batched)
    router.message.register(prize, Command("prize"), IsOperator())
    router.message.register(refuse_non_operator, Command("prize"))
    router.message.register(post_board, Command("lottery"), IsOperator())
    router.message.register(refuse_non_operator, Command("lottery"))
    return router


async def _draw(
    writer: BatchWriter, db: Database, outbox: Outbox, pond: PondInfo | None, user_id: int,
    source_key: str, at: datetime, now: datetime, rng: RandomSource, daily_tasks: DailyTasks,
    *, in_dm: bool = False,
) -> store.DrawOutcome:
    """One draw, committed (a crowd's draws share a unit of work); an item won is then
    queued for the winner's DM (`in_dm`: drawn there, so it is open)."""
    timezone = pond.timezone if pond is not None else DEFAULT_TIMEZONE
    request = store.DrawRequest(
        user_id, pond.chat_id if pond is not None else None, local_day(at, timezone),
        source_key, now, rng, timezone,
    )
    try:
        drawn = await writer.submit(store.DRAW_OP, request)
    except store.DrawRefused as exc:  # rolled back: not a draw
        async with db.transaction(readonly=True) as session:
            return await store.refused_outcome(session, request, exc)
    if drawn.result is not None and drawn.result.redemption is not None:
        shop_delivery.deliver(outbox, db, [drawn.result.redemption], force=in_dm)
    if drawn.result is not None and pond is not None:  # a draw in the pond: a task done
        await daily_tasks.after(pond, user_id, request.day, now)
    return drawn


async def draw_button(
    query: CallbackQuery,
    callback_data: LotteryButton,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
    db: Database,
    writer: BatchWriter,
    lottery_board: LotteryBoard,
    outbox: Outbox,
    clock: Clock,
    daily_tasks: DailyTasks,
    lottery_rng: RandomSource = SYSTEM_RANDOM,
) -> None:
    message = query.message
    if message is None or pond is None or message.chat.id != callback_data.chat_id:
        await outbox.answer(AnswerCallbackQuery(
            callback_query_id=query.id, text=checkin_texts.button_not_here(), show_alert=True
        ))
        return
    if person is None:
        await outbox.answer(AnswerCallbackQuery(
            callback_query_id=query.id, text=texts.members_only()
        ))
        return
    now = clock()
    key = lottery_board.presses.key(pond.chat_id, message.message_id, person.id, query.id)
    drawn = await _draw(writer, db, outbox, pond, person.id, key, now, now, lottery_rng,
                        daily_tasks)
    if drawn.result is None:
        assert drawn.refused is not None
        await outbox.answer(AnswerCallbackQuery(
            callback_query_id=query.id, text=texts.refused(drawn.refused), show_alert=True
        ))
        return
    await outbox.answer(AnswerCallbackQuery(
        callback_query_id=query.id, text=texts.toast(drawn.result, dm_linked=drawn.dm_linked),
        show_alert=drawn.result.won,
    ))
    if drawn.result.applied:
        lottery_board.pressed(pond, local_day(now, pond.timezone), message.message_id)


async def draw_command(
    message: Message,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
    db: Database,
    writer: BatchWriter,
    lottery_board: LotteryBoard,
    outbox: Outbox,
    clock: Clock,
    daily_tasks: DailyTasks,
    lottery_rng: RandomSource = SYSTEM_RANDOM,
) -> None:
    private = message.chat.type == "private"
    if person is None or (pond is None and not private):
        return  # anonymous admins hold no points; a group that is no pond draws nothing
    now = clock()
    at = checkin_moment(message.date, now)
    key = f"msg:{message.chat.id}:{message.message_id}"
    drawn = await _draw(writer, db, outbox, pond, person.id, key, at, now, lottery_rng,
                        daily_tasks, in_dm=private)
    if drawn.result is not None and not drawn.result.applied:
        return  # a replay of a draw already answered
    if drawn.result is None:
        assert drawn.refused is not None
        text = texts.refused(drawn.refused)
    else:
        text = texts.result(drawn.result, dm_linked=drawn.dm_linked or private)
    if private:
        outbox.send(SendMessage(chat_id=message.chat.id, text=text))
        return
    assert pond is not None
    # An item won by a member without a private chat is worth a group reply: it tells
    # them where the code waits. The rest reaches the group only while it is quiet.
    must = drawn.result is not None and drawn.result.kind == "item" and not drawn.dm_linked
    quiet = outbox.load(pond.chat_id) < drawn.quiet_below
    tell(outbox, message, person.id, person.display_name, text, dm=drawn.dm_linked,
         group=quiet or must)
    if drawn.result is not None and lottery_board.message_of(pond.chat_id) is not None:
        lottery_board.touch(pond, local_day(at, pond.timezone))


async def prize(
    message: Message, command: CommandObject, db: Database, outbox: Outbox, clock: Clock,
    operators: OperatorPolicy,
) -> None:
    """`/prize add <weight> <stock|-> <points=N|item=ID|none> <name…>`, `/prize list`,
    `/prize off <id>`: the shop-wide prize table, changed only by global operators (a
    pond admin's prize of many points would mint them past the daily give cap)."""
    sub, _, rest = fold(command.args or "").partition(" ")
    sub = sub.lower()
    if sub in ("add", "off") and not operators.is_global(message.from_user, message.sender_chat):
        reply(outbox, message, pond_texts.shop_wide_only())
        return
    try:
        if sub == "add":
            spec = parse_prize(rest)
            async with db.transaction() as session:
                prize_id, added = await store.add_prize(
                    session, spec, source_key=f"prize:{message.chat.id}:{message.message_id}",
                    created_by=actor_of(message), now=clock(),
                )
                lines = await store.prizes(session)
            if not added:
                return  # a replayed command: added the first time, answered then
            text = texts.prize_added(prize_id, lines)
        elif sub == "list" and not rest.strip():
            async with db.transaction(readonly=True) as session:
                text = texts.prize_list(await store.prizes(session))
        elif sub == "off":
            prize_id = parse_points(rest, maximum=10**15)
            async with db.transaction() as session:
                name = await store.prize_off(session, prize_id)
            text = texts.prize_off(prize_id, name)
        else:
            text = texts.prize_error("usage")
    except ParseError as exc:
        text = texts.prize_error(exc.code)
    except store.PrizeRefused as exc:
        text = texts.prize_error(exc.code)
    reply(outbox, message, text)


async def post_board(
    message: Message, pond: PondInfo | None, lottery_board: LotteryBoard, outbox: Outbox,
    clock: Clock,
) -> None:
    if pond is None:
        reply(outbox, message, texts.groups_only())
        return
    actor = actor_of(message)
    lottery_board.post(pond, local_day(clock(), pond.timezone), by=actor or 0)
