"""Promotion posts (F11): /promo (campaigns and the planner: handlers/campaign.py).

`/promo at|every …` never schedules anything by itself: it records a draft and shows
its author a private preview (in their DM when it is linked, else in the group as a
reply) with confirm/discard buttons. Only the author's confirmation schedules the post —
after the frequency cap was checked again. In a pond a post is for that pond; an operator
from `OPERATOR_IDS` writing in their DM posts to every active pond (a broadcast). The
command message is the draft's idempotency key, so a redelivered command makes no second
draft and no second preview.
"""

from __future__ import annotations

from datetime import datetime

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import CallbackQuery, Chat, Message
from sqlalchemy.ext.asyncio import AsyncSession

from games import promo as rules
from games.campaign import local_day
from games.parsing import ParseError
from games.segments import split_target
from handlers import drops
from scheduler import promo as promo_jobs
from scheduler.core import Scheduler, next_cron_time
from services import promo as service
from services.filters import IsOperator
from services.messaging import refuse_non_operator, reply
from services.middlewares import PondInfo, TrackingMiddleware
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.promo import Where
from services.promo_post import PromoCB, post_method, preview_control, size_problem
from services.texts import drops as drop_texts
from services.texts import promo as t
from services.texts import surveys as segment_texts
from storage import promo as store
from storage import repo
from storage.db import Database
from storage.drops import drop_key
from storage.models import PromoPost, PromoState

GROUPS = ("group", "supergroup")


def setup() -> Router:
    router = Router(name="promo")
    router.message.register(promo, Command("promo"), IsOperator())
    router.message.register(refuse_non_operator, Command("promo"))
    router.callback_query.register(preview_button, PromoCB.filter())
    return router


def where_of(message: Message, pond: PondInfo | None, tracking: TrackingMiddleware) -> Where | None:
    if message.chat.type in GROUPS and pond is not None:
        return Where(message.chat.id, pond.timezone)
    if message.chat.type == "private":
        return Where(None, tracking.default_timezone)
    return None


# -- /promo -------------------------------------------------------------------------------


async def promo(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    tracking: TrackingMiddleware,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
) -> None:
    where = where_of(message, pond, tracking)
    if where is None:
        return
    args, segment, bad = split_target(command.args)  # `to=<segment>`: DMs (F10)
    if bad is not None:
        reply(outbox, message, segment_texts.bad_target(bad))
        return
    if segment is not None and where.chat_id is None:  # a broadcast has no pond's members
        reply(outbox, message, segment_texts.segment_in_pond_only())
        return
    try:
        cmd = rules.parse_promo(args)
    except ParseError as exc:
        reply(outbox, message, t.parse_error(exc.code))
        return
    if cmd.action == "list":
        text = await service.listing(db, where, scheduler.clock(), scheduler.stale_after)
        *first, text = await drops.with_drops(db, where, scheduler.clock(), text)
        for part in first:  # the red-packet drops did not fit in one message
            reply(outbox, message, part)
    elif cmd.action == "cancel":
        assert cmd.post_id is not None
        async with db.transaction() as session:
            done, unschedule = await service.cancel(session, where, cmd.post_id)
            dropped = unschedule and await scheduler.cancel(drop_key(cmd.post_id), session=session)
            if unschedule:
                await scheduler.cancel(store.post_key(cmd.post_id), session=session)
        text = t.cancelled(cmd.post_id) if done else t.not_found(cmd.post_id)
        text = drop_texts.cancelled(cmd.post_id) if dropped else text  # a red-packet drop
    else:
        assert cmd.post is not None
        await _draft(message, db, outbox, scheduler.clock(), where, person, cmd.post, segment)
        return
    reply(outbox, message, text)


def _photo_of(message: Message) -> str | None:
    target = message.reply_to_message
    return target.photo[-1].file_id if target is not None and target.photo else None


async def _draft(
    message: Message,
    db: Database,
    outbox: Outbox,
    now: datetime,
    where: Where,
    person: repo.UserInfo | None,
    request: rules.PostRequest,
    segment: str | None = None,
) -> None:
    photo = _photo_of(message)
    try:
        at = service.first_time(request, now, where.timezone, next_cron_time)
        problem = size_problem(request.text, photo is not None)
        if problem:
            raise ParseError(problem)
    except ParseError as exc:
        reply(outbox, message, t.parse_error(exc.code))
        return
    sender = message.sender_chat.id if message.sender_chat else None
    author = rules.draft_author(person.id if person else None, sender, message.chat.id)
    if author is None:
        return
    key = f"promo:{message.chat.id}:{message.message_id}"
    post = service.new_draft(where, request, at, author, message.chat.id, photo, key, now)
    post.segment = segment
    draft = await service.open_draft(db, where, post, dm_possible=person is not None)
    if draft.refusal is not None:
        reply(outbox, message, draft.refusal)
    if draft.post is None or draft.post.id is None:
        return
    here = post.preview_chat_id == message.chat.id
    reply_to = message.message_id if here else None
    day = local_day(at, where.timezone)
    outbox.send(post_method(post, post.preview_chat_id, draft.campaigns, day, reply_to=reply_to))
    outbox.send(preview_control(post, draft.ponds, draft.campaigns, day, reply_to=reply_to))
    if segment is not None:
        who = segment_texts.segment_scheduled(segment)
        outbox.send(SendMessage(chat_id=post.preview_chat_id, text=who))
    if not here:
        reply(outbox, message, t.preview_elsewhere())


async def preview_button(
    query: CallbackQuery,
    callback_data: PromoCB,
    bot: Bot,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    operators: OperatorPolicy,
) -> None:
    message = query.message
    if not isinstance(message, Message):
        await outbox.answer(AnswerCallbackQuery(callback_query_id=query.id))
        return
    now = scheduler.clock()
    toast: str
    edit: str | None = None
    async with db.transaction() as session:
        post = await store.get_post(session, callback_data.post_id)
        if post is None or post.id is None or post.preview_chat_id != message.chat.id:
            toast = t.toast_done_already()  # a forged button, or one from another chat
        elif not await _may_confirm(post, query, message.chat, bot, operators):
            toast = t.toast_not_author()
        elif post.state != PromoState.draft:
            toast = t.toast_done_already()
        elif callback_data.action != "ok":
            await service.discard(session, post.id)
            toast, edit = t.toast_discarded(), t.discarded(post.id)
        else:
            toast, edit = await _confirm(session, scheduler, post, now)
    await outbox.answer(AnswerCallbackQuery(callback_query_id=query.id, text=toast))
    if edit is not None:
        outbox.send(
            EditMessageText(chat_id=message.chat.id, message_id=message.message_id, text=edit)
        )


async def _may_confirm(
    post: PromoPost, query: CallbackQuery, chat: Chat, bot: Bot, operators: OperatorPolicy
) -> bool:
    right = rules.confirm_right(post.author_id, post.preview_chat_id, query.from_user.id)
    if right == rules.ConfirmRight.if_operator:
        return await operators.is_operator(bot, chat, query.from_user)
    return right == rules.ConfirmRight.yes


async def _confirm(
    session: AsyncSession, scheduler: Scheduler, post: PromoPost, now: datetime
) -> tuple[str, str | None]:
    at = promo_jobs.next_run(post, now)
    done = await service.confirm(session, post, at, now)
    if done.grace is not None and at is not None:
        await promo_jobs.schedule_post(scheduler, session, post, at, done.grace)
    return done.toast, done.edit
