"""What `/promo` and `/campaign` do over the database (F11), with no Telegram update in
sight: drafts checked against the frequency cap, confirmations, the list of scheduled
posts and of the work that needs an operator, campaigns and their timelines.

The rules themselves are in `games.promo` and `games.campaign`; this module reads and
writes through `storage.promo` and turns the outcome into texts. Scheduling a confirmed
post is the caller's (the scheduler is a layer above): `confirm` checks and moves the
post in the caller's transaction and says how late its schedule may still send it.
Times of a crontab expression come in as `NextTime`, the scheduler's own calculation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from games.campaign import (
    Campaign,
    Phase,
    local_day,
    next_sale_day,
    parse_range,
    phase_at,
    phase_runs,
)
from games.parsing import ParseError
from games.promo import PostRequest, cap_refusal, grace, resolve_at
from services.texts import promo as t
from services.texts.surveys import segment_name
from storage import promo as store
from storage.db import Database
from storage.models import PromoPost, PromoState

# (crontab expression, timezone, after) -> the next time it fires (None: never again).
NextTime = Callable[[str, str, datetime], datetime | None]


@dataclass(frozen=True, slots=True)
class Where:
    """Where a command was typed: a pond, or an operator's DM (every pond)."""

    chat_id: int | None  # None: every active pond
    timezone: str

    @property
    def scope(self) -> int:
        return store.ALL_PONDS if self.chat_id is None else self.chat_id


async def targets(session: AsyncSession, chat_id: int | None) -> list[store.PondView]:
    """The ponds a post goes to: its pond, or (None) every active pond."""
    if chat_id is None:
        return await store.active_ponds(session)
    return list((await store.ponds(session, [chat_id])).values())


async def over_cap_text(
    session: AsyncSession,
    ponds: Sequence[store.PondView],
    at: datetime,
    timezone: str,
    *,
    exclude_post: int | None = None,
) -> str | None:
    """Why a post at `at` is refused in these ponds, or None when the cap allows it."""
    verdicts = await store.cap_verdicts(session, ponds, at, exclude_post=exclude_post)
    refusal = cap_refusal(verdicts, [p.chat_id for p in ponds])
    if refusal is None:
        return None
    days = next(p for p in ponds if p.chat_id == refusal.chat_id).settings.promo_cap_days
    return t.over_cap(days, refusal.conflict, refusal.next_allowed, timezone, refusal.ponds)


# -- drafts and confirmation -------------------------------------------------------------


def first_time(request: PostRequest, now: datetime, timezone: str, next_time: NextTime) -> datetime:
    """A new post's first time: a one-off's own, a recurring post's next; `ParseError`
    when it lies in the past, too far ahead, or the crontab never fires."""
    if request.kind == "at":
        return resolve_at(request, now, timezone)
    assert request.cron is not None
    try:
        at = next_time(request.cron, timezone, now)
    except ValueError:
        raise ParseError("bad_cron") from None
    if at is None:
        raise ParseError("bad_cron")
    return at


def new_draft(
    where: Where,
    request: PostRequest,
    at: datetime,
    author: int,
    preview_chat_id: int,
    photo: str | None,
    source_key: str,
    now: datetime,
) -> PromoPost:
    button = request.button
    return PromoPost(
        chat_id=where.chat_id,
        author_id=author,
        preview_chat_id=preview_chat_id,
        kind=request.kind,
        run_at=at,
        cron=request.cron,
        timezone=where.timezone,
        text=request.text,
        photo_file_id=photo,
        button_text=button.text if button else None,
        button_url=button.url if button else None,
        pin=request.pin,
        state=PromoState.draft,
        source_key=source_key,
        created_at=now,
    )


@dataclass(frozen=True, slots=True)
class Draft:
    post: PromoPost | None  # None: refused, or a replay whose preview is out already
    refusal: str | None = None
    campaigns: Sequence[Campaign] = ()
    ponds: int = 0


async def open_draft(db: Database, where: Where, post: PromoPost, *, dm_possible: bool) -> Draft:
    """Record `post` as a draft unless the cap refuses it. Its preview goes to the
    author's DM when `dm_possible` and they linked it (else where `post` says)."""
    async with db.transaction() as session:
        ponds = await targets(session, where.chat_id)
        if not ponds:
            return Draft(None, t.no_ponds())
        refusal = await over_cap_text(session, ponds, post.run_at, where.timezone)
        if refusal is not None:
            return Draft(None, refusal)
        if dm_possible and await store.dm_linked(session, post.author_id):
            post.preview_chat_id = post.author_id
        post.id, created = await store.create_draft(session, post)
        if not created:
            return Draft(None)  # a redelivered command: its preview is out already
        campaigns = (await store.campaigns_by_scope(session, [where.scope])).get(where.scope, [])
    return Draft(post, None, campaigns, len(ponds))


@dataclass(frozen=True, slots=True)
class Confirmation:
    toast: str
    edit: str | None = None  # the preview's control message, rewritten
    grace: timedelta | None = None  # set: confirmed; schedule it with this grace


async def confirm(
    session: AsyncSession, post: PromoPost, at: datetime | None, now: datetime
) -> Confirmation:
    """Check a draft's first time `at` against the clock and the cap again, and move it
    to scheduled (guarded: a second press finds it done)."""
    assert post.id is not None
    if at is None or at <= now:
        return Confirmation(t.toast_too_late())
    ponds = await targets(session, post.chat_id)
    if not ponds:
        return Confirmation(t.no_ponds())
    refusal = await over_cap_text(session, ponds, at, post.timezone, exclude_post=post.id)
    if refusal is not None:
        return Confirmation(t.toast_over_cap(), refusal)
    if not await store.move_post(
        session, post.id, PromoState.scheduled, from_states=[PromoState.draft], now=now
    ):
        return Confirmation(t.toast_done_already())
    when = t.when(post.kind, at, post.cron, post.timezone)
    edit = t.scheduled(post.id, when, t.where(post.chat_id, len(ponds)))
    own = ponds[0].settings if post.chat_id is not None else None
    return Confirmation(t.toast_scheduled(), edit, grace(own))


async def discard(session: AsyncSession, post_id: int) -> None:
    await store.move_post(session, post_id, PromoState.discarded, from_states=[PromoState.draft])


_CANCELLED = {PromoState.draft: PromoState.discarded, PromoState.scheduled: PromoState.cancelled}


async def cancel(session: AsyncSession, where: Where, post_id: int) -> tuple[bool, bool]:
    """Discard a draft or cancel a scheduled post seen from `where`: (done, whether its
    schedule is to be cancelled too — the caller's work, in the same transaction)."""
    post = await store.get_post(session, post_id)
    if post is None or (where.chat_id is not None and post.chat_id != where.chat_id):
        return False, False
    state = PromoState(post.state)
    if state not in _CANCELLED:
        return False, False
    done = await store.move_post(session, post_id, _CANCELLED[state], from_states=[state])
    return done, state == PromoState.scheduled


# -- /promo list ---------------------------------------------------------------------------


async def listing(db: Database, where: Where, now: datetime, stale_after: timedelta) -> str:
    """The scheduled posts seen from `where`, then the scheduled work needing attention."""
    everywhere = where.chat_id is None
    async with db.transaction(readonly=True) as session:
        posts = await store.list_posts(session, where.chat_id, everywhere=everywhere)
        titles = await store.ponds(session, [p.chat_id for p in posts if p.chat_id is not None])
        count = (
            len(await store.active_ponds(session)) if any(p.chat_id is None for p in posts) else 0
        )
        troubles = await store.task_troubles(
            session, where.chat_id, everywhere=everywhere, now=now, stale_after=stale_after
        )
    rows = []
    for p in posts:
        when = t.when(p.kind, p.next_at, p.cron, p.timezone) if p.next_at else "—"
        if p.chat_id is None or p.chat_id == where.chat_id:
            place = t.where(p.chat_id, count)
        else:
            pond = titles.get(p.chat_id)
            place = t.pond_title(pond.title if pond else str(p.chat_id))
        if p.segment is not None:
            place = t.by_dm_to(place, segment_name(p.segment))
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
    return t.listing(rows, attention)


# -- /campaign -----------------------------------------------------------------------------


async def save_campaign(
    db: Database, where: Where, name: str, sale_day_text: str, by: int | None, now: datetime
) -> None:
    sale_day = next_sale_day(sale_day_text, local_day(now, where.timezone))
    async with db.transaction() as session:
        await store.save_campaign(session, where.scope, name, sale_day, by=by, now=now)


async def delete_campaign(db: Database, where: Where, name: str) -> str:
    async with db.transaction() as session:
        row = await store.find_campaign(session, [where.scope], name)
        if row is None:
            return t.campaign_missing(name)
        await store.delete_campaign(session, row)
    return t.campaign_deleted(name)


async def edit_phase(
    db: Database, where: Where, name: str, phase: Phase, days_text: str, now: datetime
) -> str | None:
    """Change one phase's days; a text when the campaign is missing, else None."""
    async with db.transaction() as session:
        row = await store.find_campaign(session, [where.scope], name)
        if row is None:
            return t.campaign_missing(name)
        await store.set_phase(session, row, phase, parse_range(days_text, row.sale_day), now)
    return None


async def timelines(
    db: Database, where: Where, now: datetime, next_time: NextTime, *, only: str | None = None
) -> str:
    """The campaigns seen from `where` (those not over yet, or just `only`) with their
    phases and what is scheduled in each."""
    today = local_day(now, where.timezone)
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
        by_phase = posts_by_phase(c, mine, where.timezone, next_time)
        blocks.append(t.timeline(c, today, by_phase, shop_wide=row.scope == store.ALL_PONDS))
    return t.campaigns(blocks) if blocks else t.no_campaigns()


def posts_by_phase(
    c: Campaign,
    posts: Sequence[tuple[PromoPost, datetime]],
    timezone: str,
    next_time: NextTime,
) -> dict[Phase, list[str]]:
    """What is scheduled in each phase: one-off posts by their day, recurring ones by how
    many of their times fall in the phase."""
    out: dict[Phase, list[str]] = defaultdict(list)
    for post, next_at in posts:
        tz = post.timezone or timezone
        if post.kind != "every" or not post.cron:
            phase = phase_at(c, next_at, tz)
            if phase is not None:
                out[phase].append(f"#{post.id} {t.local(next_at, tz)[5:]}")
            continue
        runs = phase_runs(c, next_at, partial(next_time, post.cron, tz), tz)
        for phase, n in runs.counts.items():
            out[phase].append(f"#{post.id} ×{n}{'' if runs.complete else '+'}")
    return out
