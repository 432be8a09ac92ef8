"""Promotion posts, campaigns and the planner (F11): /promo, /campaign, /plan.

`/promo at|every …` never schedules anything by itself: it records a draft and shows
its author a private preview (in their DM when it is linked, else in the group as a
reply) with confirm/discard buttons. Only the author's confirmation schedules the post —
after the frequency cap was checked again. In a pond a post is for that pond; an operator
from `OPERATOR_IDS` writing in their DM posts to every active pond (a broadcast). The
command message is the draft's idempotency key, so a redelivered command makes no second
draft and no second preview.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
)
from sqlalchemy.ext.asyncio import AsyncSession

from games.campaign import (
    Campaign,
    Phase,
    current_campaign,
    next_sale_day,
    parse_name,
    parse_phase,
    parse_range,
    uses_campaign,
    widest_render,
)
from games.parsing import ParseError, fold
from games.promo import CapVerdict, PostRequest, parse_plan, parse_promo, plan, resolve_at
from games.settings import PondSettings
from scheduler.core import Scheduler, next_cron_time
from services.filters import IsOperator
from services.messaging import refuse_non_operator, reply
from services.middlewares import PondInfo, TrackingMiddleware
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.promo_post import post_method
from services.texts import promo as t
from storage import promo as store
from storage import repo
from storage.db import Database
from storage.models import Job, PromoPost, PromoState

GROUPS = ("group", "supergroup")


class PromoCB(CallbackData, prefix="pp"):
    """A preview's buttons: `ok` schedules the post, `no` discards the draft."""

    action: str
    post_id: int


def setup() -> Router:
    router = Router(name="promo")
    router.message.register(promo, Command("promo"), IsOperator())
    router.message.register(campaign, Command("campaign"), IsOperator())
    router.message.register(plan_, Command("plan"), IsOperator())
    router.message.register(refuse_non_operator, Command("promo", "campaign", "plan"))
    router.callback_query.register(preview_button, PromoCB.filter())
    return router



@dataclass(frozen=True, slots=True)
class Where:
    """Where a command was typed: a pond, or an operator's DM (every pond)."""

    chat_id: int | None  # None: every active pond
    timezone: str

    @property
    def scope(self) -> int:
        return store.ALL_PONDS if self.chat_id is None else self.chat_id


def _where(message: Message, pond: PondInfo | None, tracking: TrackingMiddleware) -> Where | None:
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
    where = _where(message, pond, tracking)
    if where is None:
        return
    try:
        cmd = parse_promo(command.args)
    except ParseError as exc:
        reply(outbox, message, t.parse_error(exc.code))
        return
    if cmd.action == "list":
        await _list(message, db, outbox, scheduler, where)
    elif cmd.action == "cancel":
        assert cmd.post_id is not None
        await _cancel(message, db, outbox, scheduler, where, cmd.post_id)
    else:
        assert cmd.post is not None
        await _draft(message, db, outbox, scheduler, where, person, cmd.post)


def _first_time(request: PostRequest, now: datetime, timezone: str) -> datetime:
    if request.kind == "at":
        return resolve_at(request, now, timezone)
    assert request.cron is not None
    try:
        at = next_cron_time(request.cron, timezone, now)
    except ValueError:
        raise ParseError("bad_cron") from None
    if at is None:
        raise ParseError("bad_cron")
    return at


def _photo_of(message: Message) -> str | None:
    target = message.reply_to_message
    if target is None or not target.photo:
        return None
    return target.photo[-1].file_id


def _size_problem(text: str, photo: bool) -> str | None:
    longest = max(len(label) for label in t.phase_labels().values())
    size = t.utf16_len(widest_render(text, longest))
    if photo and size > t.CAPTION_LIMIT:
        return "caption_too_long"
    if size > t.TEXT_LIMIT:
        return "text_too_long"
    return None


async def _targets(session: AsyncSession, chat_id: int | None) -> list[store.PondView]:
    if chat_id is None:
        return await store.active_ponds(session)
    return list((await store.ponds(session, [chat_id])).values())


def _refusal(
    verdicts: dict[int, CapVerdict], targets: Sequence[store.PondView], timezone: str
) -> str | None:
    refused = [(p, verdicts[p.chat_id]) for p in targets if not verdicts[p.chat_id].allowed]
    if not refused:
        return None
    pond, first = refused[0]
    latest = max((v.next_allowed for _p, v in refused if v.next_allowed), default=None)
    return t.over_cap(pond.settings.promo_cap_days, first.conflict, latest, timezone, len(refused))


def _grace(targets: Sequence[store.PondView], chat_id: int | None) -> timedelta:
    settings = targets[0].settings if chat_id is not None and targets else PondSettings()
    return timedelta(minutes=settings.promo_grace_minutes)


def _keyboard(post_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=t.confirm_button(),
                    callback_data=PromoCB(action="ok", post_id=post_id).pack(),
                ),
                InlineKeyboardButton(
                    text=t.discard_button(),
                    callback_data=PromoCB(action="no", post_id=post_id).pack(),
                ),
            ]
        ]
    )


async def _draft(
    message: Message,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    where: Where,
    person: repo.UserInfo | None,
    request: PostRequest,
) -> None:
    now = scheduler.clock()
    try:
        at = _first_time(request, now, where.timezone)
    except ParseError as exc:
        reply(outbox, message, t.parse_error(exc.code))
        return
    photo = _photo_of(message)
    problem = _size_problem(request.text, photo is not None)
    if problem:
        reply(outbox, message, t.parse_error(problem))
        return
    if person is not None:
        author = person.id
    elif message.sender_chat is not None and message.sender_chat.id == message.chat.id:
        author = message.chat.id  # an anonymous admin: any operator of the pond confirms
    else:
        return
    refusal: str | None = None
    async with db.transaction() as session:
        targets = await _targets(session, where.chat_id)
        if not targets:
            refusal = t.no_ponds()
        else:
            verdicts = await store.cap_verdicts(session, targets, at)
            refusal = _refusal(verdicts, targets, where.timezone)
        if refusal is None:
            dm = person is not None and await store.dm_linked(session, author)
            post = PromoPost(
                chat_id=where.chat_id,
                author_id=author,
                preview_chat_id=author if dm else message.chat.id,
                kind=request.kind,
                run_at=at,
                cron=request.cron,
                timezone=where.timezone,
                text=request.text,
                photo_file_id=photo,
                button_text=request.button.text if request.button else None,
                button_url=request.button.url if request.button else None,
                pin=request.pin,
                state=PromoState.draft,
                source_key=f"promo:{message.chat.id}:{message.message_id}",
                created_at=now,
            )
            post.id, created = await store.create_draft(session, post)
            if not created:
                return  # a redelivered command: its preview is out already
            campaigns = (await store.campaigns_by_scope(session, [where.scope])).get(
                where.scope, []
            )
    if refusal is not None:
        reply(outbox, message, refusal)
        return
    assert post.id is not None
    reply_to = message.message_id if post.preview_chat_id == message.chat.id else None
    day = store.local_day(at, where.timezone)
    outbox.send(post_method(post, post.preview_chat_id, campaigns, day, reply_to=reply_to))
    control = t.preview(
        post.id,
        t.when(post.kind, at, post.cron, post.timezone),
        t.where(post.chat_id, len(targets)),
        pin=post.pin,
        recurring=post.kind == "every",
        needs_campaign=uses_campaign(post.text) and current_campaign(campaigns, day) is None,
    )
    outbox.send(
        SendMessage(
            chat_id=post.preview_chat_id,
            text=control,
            reply_markup=_keyboard(post.id),
            reply_parameters=ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
            if reply_to is not None
            else None,
        )
    )
    if post.preview_chat_id != message.chat.id:
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
        elif not await _may_confirm(post, query, message, bot, operators):
            toast = t.toast_not_author()
        elif post.state != PromoState.draft:
            toast = t.toast_done_already()
        elif callback_data.action != "ok":
            await store.move_post(
                session, post.id, PromoState.discarded, from_states=[PromoState.draft]
            )
            toast, edit = t.toast_discarded(), t.discarded(post.id)
        else:
            toast, edit = await _confirm(session, scheduler, post, now)
    await outbox.answer(AnswerCallbackQuery(callback_query_id=query.id, text=toast))
    if edit is not None:
        outbox.send(
            EditMessageText(chat_id=message.chat.id, message_id=message.message_id, text=edit)
        )


async def _may_confirm(
    post: PromoPost, query: CallbackQuery, message: Message, bot: Bot, operators: OperatorPolicy
) -> bool:
    if query.from_user.id == post.author_id:
        return True
    if post.author_id == message.chat.id:  # written by an anonymous admin of this group
        return await operators.is_operator(bot, message.chat, query.from_user)
    return False


async def _confirm(
    session: AsyncSession, scheduler: Scheduler, post: PromoPost, now: datetime
) -> tuple[str, str | None]:
    assert post.id is not None
    if post.kind == "every":
        assert post.cron is not None
        at = next_cron_time(post.cron, post.timezone, now)
    else:
        at = post.run_at
    if at is None or at <= now:
        return t.toast_too_late(), None
    targets = await _targets(session, post.chat_id)
    if not targets:
        return t.no_ponds(), None
    verdicts = await store.cap_verdicts(session, targets, at, exclude_post=post.id)
    refusal = _refusal(verdicts, targets, post.timezone)
    if refusal is not None:
        return t.toast_over_cap(), refusal
    if not await store.move_post(
        session, post.id, PromoState.scheduled, from_states=[PromoState.draft], now=now
    ):
        return t.toast_done_already(), None
    await scheduler.schedule(
        at,
        Job.promo_post,
        store.post_key(post.id),
        {"post_id": post.id},
        session=session,
        chat_id=post.chat_id,
        catch_up=False,
        grace=_grace(targets, post.chat_id),
        cron=post.cron,
        timezone=post.timezone if post.cron else None,
    )
    when = t.when(post.kind, at, post.cron, post.timezone)
    return t.toast_scheduled(), t.scheduled(post.id, when, t.where(post.chat_id, len(targets)))


async def _list(
    message: Message, db: Database, outbox: Outbox, scheduler: Scheduler, where: Where
) -> None:
    everywhere = where.chat_id is None
    async with db.transaction(readonly=True) as session:
        posts = await store.list_posts(session, where.chat_id, everywhere=everywhere)
        titles = await store.ponds(session, [p.chat_id for p in posts if p.chat_id is not None])
        count = (
            len(await store.active_ponds(session)) if any(p.chat_id is None for p in posts) else 0
        )
        troubles = await store.task_troubles(
            session,
            where.chat_id,
            everywhere=everywhere,
            now=scheduler.clock(),
            stale_after=scheduler.stale_after,
        )
    rows = []
    for p in posts:
        at = p.next_at
        when = t.when(p.kind, at, p.cron, p.timezone) if at else "—"
        if p.chat_id is None or p.chat_id == where.chat_id:
            place = t.where(p.chat_id, count)
        else:
            pond = titles.get(p.chat_id)
            place = t.pond_title(pond.title if pond else str(p.chat_id))
        rows.append((p.id, when, place, p.text, p.task_state))
    attention = [
        t.trouble(
            x.trouble,
            t.task_label(x.job, x.payload, x.key),
            x.attempts,
            x.at,
            x.error,
            where.timezone,
        )
        for x in troubles
    ]
    reply(outbox, message, t.listing(rows, attention))


async def _cancel(
    message: Message,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    where: Where,
    post_id: int,
) -> None:
    async with db.transaction() as session:
        post = await store.get_post(session, post_id)
        visible = post is not None and (where.chat_id is None or post.chat_id == where.chat_id)
        done = False
        if visible and post is not None:
            if post.state == PromoState.draft:
                done = await store.move_post(
                    session, post_id, PromoState.discarded, from_states=[PromoState.draft]
                )
            elif post.state == PromoState.scheduled:
                done = await store.move_post(
                    session, post_id, PromoState.cancelled, from_states=[PromoState.scheduled]
                )
                await scheduler.cancel(store.post_key(post_id), session=session)
    reply(outbox, message, t.cancelled(post_id) if done else t.not_found(post_id))


# -- /campaign ----------------------------------------------------------------------------


async def campaign(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    tracking: TrackingMiddleware,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
) -> None:
    where = _where(message, pond, tracking)
    if where is None:
        return
    now = scheduler.clock()
    today = store.local_day(now, where.timezone)
    parts = fold(command.args or "").split()
    try:
        if not parts:
            await _timelines(message, db, outbox, where, now)
            return
        name = parse_name(parts[0])
        rest = [p.lower() for p in parts[1:]]
        if len(rest) == 1 and rest[0] in ("delete", "删除"):
            text = await _delete_campaign(db, where, name)
        elif len(rest) == 1:
            sale_day = next_sale_day(rest[0], today)
            async with db.transaction() as session:
                await store.save_campaign(
                    session, where.scope, name, sale_day, by=person.id if person else None, now=now
                )
            await _timelines(message, db, outbox, where, now, only=name)
            return
        elif len(rest) == 3 and rest[0] in ("phase", "阶段"):
            phase = parse_phase(rest[1])
            problem = await _edit_phase(db, where, name, phase, rest[2], now)
            if problem is None:
                await _timelines(message, db, outbox, where, now, only=name)
                return
            text = problem
        else:
            raise ParseError("usage")
    except ParseError as exc:
        text = t.campaign_error(exc.code)
    reply(outbox, message, text)


async def _delete_campaign(db: Database, where: Where, name: str) -> str:
    async with db.transaction() as session:
        row = await store.find_campaign(session, [where.scope], name)
        if row is None:
            return t.campaign_missing(name)
        await store.delete_campaign(session, row)
    return t.campaign_deleted(name)


async def _edit_phase(
    db: Database, where: Where, name: str, phase: Phase, days_text: str, now: datetime
) -> str | None:
    async with db.transaction() as session:
        row = await store.find_campaign(session, [where.scope], name)
        if row is None:
            return t.campaign_missing(name)
        days = parse_range(days_text, row.sale_day)
        await store.set_phase(session, row, phase, days, now)
    return None


async def _timelines(
    message: Message,
    db: Database,
    outbox: Outbox,
    where: Where,
    now: datetime,
    *,
    only: str | None = None,
) -> None:
    today = store.local_day(now, where.timezone)
    scopes = [] if where.chat_id is None else [where.scope, store.ALL_PONDS]
    async with db.transaction(readonly=True) as session:
        rows = await store.campaign_rows(session, scopes)
        posts = await store.scheduled_runs(
            session, [None] if where.chat_id is None else [None, where.chat_id]
        )
    blocks = []
    for row in rows:
        if only is not None and row.name != only:
            continue
        c = store.to_campaign(row)
        if c.span.last < today and only is None:
            continue  # over: not shown in the overview
        mine = [
            p for p in posts if row.scope == store.ALL_PONDS or p[0].chat_id in (None, row.scope)
        ]
        blocks.append(
            t.timeline(
                c, today, _posts_by_phase(c, mine, where.timezone, now), shop_wide=row.scope == 0
            )
        )
    reply(outbox, message, t.campaigns(blocks) if blocks else t.no_campaigns())


def _posts_by_phase(
    c: Campaign, posts: Sequence[tuple[PromoPost, datetime]], timezone: str, now: datetime
) -> dict[Phase, list[str]]:
    """What is scheduled in each phase: one-off posts by their day, recurring ones by how
    many of their times fall in the phase."""
    out: dict[Phase, list[str]] = defaultdict(list)
    for post, next_at in posts:
        tz = post.timezone or timezone
        if post.kind != "every" or not post.cron:
            phase = c.phase_on(store.local_day(next_at, tz))
            if phase is not None:
                out[phase].append(f"#{post.id} {t.local(next_at, tz)[5:]}")
            continue
        counts: dict[Phase, int] = defaultdict(int)
        at: datetime | None = next_at
        for _ in range(400):
            if at is None or store.local_day(at, tz) > c.span.last:
                break
            phase = c.phase_on(store.local_day(at, tz))
            if phase is not None:
                counts[phase] += 1
            at = next_cron_time(post.cron, tz, at)
        for phase, n in counts.items():
            out[phase].append(f"#{post.id} ×{n}")
    return out


# -- /plan ---------------------------------------------------------------------------------


async def plan_(message: Message, command: CommandObject, outbox: Outbox) -> None:
    try:
        sales, per_buyer = parse_plan(command.args)
    except ParseError:
        reply(outbox, message, t.plan_usage())
        return
    reply(outbox, message, t.plan(plan(sales, per_buyer)))
