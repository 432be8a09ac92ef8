"""Promotion posts, sale campaigns and broadcast progress (F11), over the caller's session.

None of these functions commits. State changes are guarded (`UPDATE … WHERE state=…`),
so a replayed update, a double click or a retried job changes nothing twice.

Broadcast progress lives in `broadcast_delivery`, one row per (post occurrence, pond):
`pending` → `queued` (claimed with a token, committed before the message is handed to
the outbox) → `sending` (committed by the outbox's `before_issue` hook right before the
request is issued) → `sent` (only once Telegram answered with the message) / `failed` /
`skipped`. A row still `queued` when a delivery run starts was claimed by a run that
died before its request was issued: the pond certainly has no copy, and it goes back to
`pending`. A row still `sending` was on the wire when the process died: it may or may
not have reached the pond. It becomes `unknown` and is never sent again — at-most-once,
so no pond ever gets a second copy; the price is that such a pond may miss that one
post. A row taken back this way keeps no claim, so the dead run's hook (were its process
still alive) finds it gone and withdraws the request.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games.campaign import Campaign, DayRange, Phase
from games.checkin import zone
from games.promo import CapVerdict, Interval, check_cap
from games.settings import PondSettings
from storage import deliveries
from storage.dialect import insert_for
from storage.models import (
    SERVED_TRUST,
    BroadcastDelivery,
    DeliveryState,
    Job,
    Member,
    Pond,
    PondStatus,
    PromoPost,
    PromoState,
    SaleCampaign,
    ScheduledTask,
    TaskState,
    utcnow,
)

ALL_PONDS = 0  # the campaign scope of a shop-wide campaign
# The kind of a scheduled red-packet drop's row (storage/drops.py): listed and cancelled
# with the posts by id, but no post: left out of their list, timelines and cap here.
DROP_KIND = "drop"
# What counts towards the frequency cap: posts that went out, or may have.
COUNTED = (DeliveryState.sent, DeliveryState.sending, DeliveryState.unknown)


def post_key(post_id: int) -> str:
    return f"{Job.promo_post}:{post_id}"


def deliver_key(post_id: int, occurrence: datetime) -> str:
    return f"{Job.promo_deliver}:{post_id}:{int(occurrence.timestamp())}"


# -- posts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PostView:
    id: int
    chat_id: int | None
    kind: str
    cron: str | None
    timezone: str
    text: str
    state: str
    task_state: str | None  # the schedule's state (pending, done, missed …)
    next_at: datetime | None  # the next (or last) time of the schedule
    segment: str | None = None  # `to=<segment>`: sent by DM to that segment's members


async def create_draft(session: AsyncSession, post: PromoPost) -> tuple[int, bool]:
    """Insert a draft once per command message; returns (id, created)."""
    values = post.model_dump(exclude={"id"})
    stmt = insert_for(session, PromoPost.__table__).values(**values)  # type: ignore[attr-defined]
    result = await session.execute(stmt.on_conflict_do_nothing(index_elements=["source_key"]))
    post_id = await session.scalar(
        select(col(PromoPost.id)).where(col(PromoPost.source_key) == post.source_key)
    )
    assert post_id is not None
    return int(post_id), bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def get_post(session: AsyncSession, post_id: int) -> PromoPost | None:
    return await session.get(PromoPost, post_id)


async def move_post(
    session: AsyncSession,
    post_id: int,
    to: PromoState,
    *,
    from_states: Iterable[PromoState],
    now: datetime | None = None,
) -> bool:
    """Change a post's state if it is in one of `from_states`; False otherwise."""
    values: dict[str, Any] = {"state": str(to)}
    if to == PromoState.scheduled:
        values["confirmed_at"] = now or utcnow()
    result = await session.execute(
        update(PromoPost)
        .where(
            col(PromoPost.id) == post_id, col(PromoPost.state).in_([str(s) for s in from_states])
        )
        .values(**values)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def tasks_by_key(session: AsyncSession, keys: list[str]) -> dict[str, ScheduledTask]:
    """The scheduled tasks of these keys (a listing's posts or drops), by key."""
    rows = await session.execute(select(ScheduledTask).where(col(ScheduledTask.key).in_(keys)))
    return {t.key: t for t in rows.scalars().all()}


async def list_posts(
    session: AsyncSession, chat_id: int | None, *, everywhere: bool, limit: int = 20
) -> list[PostView]:
    """Scheduled posts seen from a pond (its own and the broadcasts), or, `everywhere`,
    every scheduled post; newest first."""
    query = select(PromoPost).where(
        col(PromoPost.state) == PromoState.scheduled, col(PromoPost.kind) != DROP_KIND
    )
    if not everywhere:
        query = query.where(
            or_(col(PromoPost.chat_id) == chat_id, col(PromoPost.chat_id).is_(None))
        )
    posts = (
        (await session.execute(query.order_by(col(PromoPost.id).desc()).limit(limit)))
        .scalars()
        .all()
    )
    tasks = await tasks_by_key(session, [post_key(p.id) for p in posts if p.id is not None])
    views = []
    for p in posts:
        assert p.id is not None
        task = tasks.get(post_key(p.id))
        views.append(
            PostView(
                p.id,
                p.chat_id,
                p.kind,
                p.cron,
                p.timezone,
                p.text,
                p.state,
                task.state if task else None,
                task.run_at if task else p.run_at,
                p.segment,
            )
        )
    return views


@dataclass(frozen=True, slots=True)
class TaskTrouble:
    """A scheduled task that needs an operator's eye (shown by `/promo list`)."""

    key: str
    job: str
    payload: dict[str, Any]
    chat_id: int | None
    trouble: str  # "stuck": running, owner silent · "retrying" · "failed"
    attempts: int
    at: datetime | None  # stuck: last heartbeat · retrying: next attempt · failed: when
    error: str


async def task_troubles(
    session: AsyncSession,
    chat_id: int | None,
    *,
    everywhere: bool,
    now: datetime,
    stale_after: timedelta,
    failed_within: timedelta = timedelta(days=7),
    limit: int = 10,
) -> list[TaskTrouble]:
    """Tasks of a pond (or, `everywhere`, of every pond and the broadcasts) that are
    stuck (running, their owner silent for `stale_after`), retrying after a failure, or
    failed for good within `failed_within`; the most pressing first."""
    task = ScheduledTask
    stuck = and_(
        col(task.state) == TaskState.running,
        or_(col(task.heartbeat_at).is_(None), col(task.heartbeat_at) < now - stale_after),
    )
    retrying = and_(
        col(task.state) == TaskState.pending, col(task.attempts) > 0, col(task.last_error) != ""
    )
    failed = and_(col(task.state) == TaskState.failed, col(task.finished_at) > now - failed_within)
    query = select(task).where(or_(stuck, retrying, failed))
    if not everywhere:
        query = query.where(col(task.chat_id) == chat_id)
    rows = (
        (await session.execute(query.order_by(col(task.run_at).desc()).limit(limit * 3)))
        .scalars()
        .all()
    )
    out = []
    for r in rows:
        if r.state == TaskState.running:
            trouble, at = "stuck", r.heartbeat_at or r.claimed_at
        elif r.state == TaskState.pending:
            trouble, at = "retrying", r.run_at
        else:
            trouble, at = "failed", r.finished_at
        out.append(
            TaskTrouble(
                r.key, r.job, dict(r.payload), r.chat_id, trouble, r.attempts, at, r.last_error
            )
        )
    order = {"stuck": 0, "failed": 1, "retrying": 2}
    out.sort(key=lambda x: order[x.trouble])
    return out[:limit]


async def scheduled_runs(
    session: AsyncSession, chat_ids: Sequence[int | None]
) -> list[tuple[PromoPost, datetime]]:
    """Scheduled posts of these ponds (None: the broadcasts) with their next time."""
    conds = [col(PromoPost.chat_id).is_(None)] if None in chat_ids else []
    real = [c for c in chat_ids if c is not None]
    if real:
        conds.append(col(PromoPost.chat_id).in_(real))
    if not conds:
        return []
    posts = (
        (
            await session.execute(
                select(PromoPost).where(
                    col(PromoPost.state) == PromoState.scheduled,
                    col(PromoPost.kind) != DROP_KIND,
                    or_(*conds),
                )
            )
        )
        .scalars()
        .all()
    )
    by_key = {post_key(p.id): p for p in posts if p.id is not None}
    if not by_key:
        return []
    rows = (
        await session.execute(
            select(col(ScheduledTask.key), col(ScheduledTask.run_at))
            .where(
                col(ScheduledTask.key).in_(list(by_key)),
                col(ScheduledTask.state) == TaskState.pending,
            )
            .order_by(col(ScheduledTask.run_at))
        )
    ).all()
    return [(by_key[key], at) for key, at in rows]


async def dm_linked(session: AsyncSession, user_id: int) -> bool:
    """Whether the member opened a private chat with the bot (previews go there)."""
    linked = await session.scalar(
        select(col(Member.dm_linked)).where(col(Member.user_id) == user_id)
    )
    return bool(linked)


# -- ponds -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PondView:
    chat_id: int
    title: str
    status: str
    timezone: str
    language: str
    settings: PondSettings
    served: bool = True  # a pond of this shop (SPEC F1): only those get posts


def _pond_view(p: Pond) -> PondView:
    return PondView(
        p.chat_id,
        p.title,
        p.status,
        p.timezone,
        p.language,
        PondSettings.from_stored(p.settings),
        p.served,
    )


async def active_ponds(session: AsyncSession) -> list[PondView]:
    """The ponds a shop-wide post goes to: active, and ponds of this shop."""
    rows = (
        (
            await session.execute(
                select(Pond)
                .where(
                    col(Pond.status) == PondStatus.active,
                    col(Pond.trust).in_([str(t) for t in SERVED_TRUST]),
                )
                .order_by(col(Pond.chat_id))
            )
        )
        .scalars()
        .all()
    )
    return [_pond_view(p) for p in rows]


async def current_chat(session: AsyncSession, chat_id: int) -> int:
    """The pond's chat id now: a group that became a supergroup moved to a new id."""
    for _ in range(5):
        pond = await session.get(Pond, chat_id)
        if pond is None or pond.status != PondStatus.migrated or pond.migrated_to is None:
            break
        chat_id = pond.migrated_to
    return chat_id


async def ponds(session: AsyncSession, chat_ids: Sequence[int]) -> dict[int, PondView]:
    rows = (
        (await session.execute(select(Pond).where(col(Pond.chat_id).in_(list(chat_ids)))))
        .scalars()
        .all()
    )
    return {p.chat_id: _pond_view(p) for p in rows}


# -- campaigns ---------------------------------------------------------------------------


def to_campaign(row: SaleCampaign) -> Campaign:
    overrides: dict[Phase, DayRange] = {}
    for name, pair in (row.phases or {}).items():
        try:
            overrides[Phase(name)] = DayRange(
                date.fromisoformat(pair[0]), date.fromisoformat(pair[1])
            )
        except (ValueError, TypeError, IndexError, KeyError):
            continue  # a damaged override falls back to the default range
    return Campaign(row.name, row.sale_day, overrides)


async def campaign_rows(session: AsyncSession, scopes: Sequence[int]) -> list[SaleCampaign]:
    query = select(SaleCampaign).order_by(col(SaleCampaign.sale_day), col(SaleCampaign.name))
    if scopes:
        query = query.where(col(SaleCampaign.scope).in_(list(scopes)))
    return list((await session.execute(query)).scalars().all())


async def campaigns_by_scope(
    session: AsyncSession, chat_ids: Sequence[int]
) -> dict[int, list[Campaign]]:
    """Each pond's campaigns: its own plus the shop-wide ones."""
    rows = await campaign_rows(session, [ALL_PONDS, *chat_ids])
    shared = [to_campaign(r) for r in rows if r.scope == ALL_PONDS]
    own: dict[int, list[Campaign]] = defaultdict(list)
    for r in rows:
        if r.scope != ALL_PONDS:
            own[r.scope].append(to_campaign(r))
    return {c: shared + own.get(c, []) for c in chat_ids} | {ALL_PONDS: shared}


async def save_campaign(
    session: AsyncSession,
    scope: int,
    name: str,
    sale_day: date,
    *,
    by: int | None,
    now: datetime | None = None,
) -> bool:
    """Create a campaign, or move an existing one to a new sale day (its phase changes are
    kept only when the day stays). Returns True if it was new."""
    now = now or utcnow()
    row = (
        await session.execute(
            select(SaleCampaign).where(
                col(SaleCampaign.scope) == scope, col(SaleCampaign.name) == name
            )
        )
    ).scalar_one_or_none()
    if row is None:
        values = {
            "scope": scope,
            "name": name,
            "sale_day": sale_day,
            "phases": {},
            "created_by": by,
            "created_at": now,
            "updated_at": now,
        }
        stmt = insert_for(session, SaleCampaign.__table__).values(**values)  # type: ignore[attr-defined]
        await session.execute(stmt.on_conflict_do_nothing(index_elements=["scope", "name"]))
        return True
    if row.sale_day != sale_day:
        row.sale_day, row.phases, row.updated_at = sale_day, {}, now
        session.add(row)
    return False


async def find_campaign(
    session: AsyncSession, scopes: Sequence[int], name: str
) -> SaleCampaign | None:
    """The named campaign, the pond's own before the shop-wide one."""
    rows = (
        (
            await session.execute(
                select(SaleCampaign).where(
                    col(SaleCampaign.scope).in_(list(scopes)), col(SaleCampaign.name) == name
                )
            )
        )
        .scalars()
        .all()
    )
    rows = sorted(rows, key=lambda r: r.scope == ALL_PONDS)
    return rows[0] if rows else None


async def set_phase(
    session: AsyncSession,
    row: SaleCampaign,
    phase: Phase,
    days: DayRange,
    now: datetime | None = None,
) -> None:
    phases = dict(row.phases or {})
    phases[str(phase)] = [days.first.isoformat(), days.last.isoformat()]
    await session.execute(
        update(SaleCampaign)
        .where(col(SaleCampaign.id) == row.id)
        .values(phases=phases, updated_at=now or utcnow())
    )


async def delete_campaign(session: AsyncSession, row: SaleCampaign) -> None:
    await session.execute(delete(SaleCampaign).where(col(SaleCampaign.id) == row.id))


# -- the frequency cap -------------------------------------------------------------------


def exempt_intervals(
    campaigns: Iterable[Campaign], phases: Iterable[str], timezone: str
) -> list[Interval]:
    """The exempt phases of the campaigns as UTC intervals (whole local days)."""
    tz = zone(timezone)
    wanted = {Phase(p) for p in phases}
    out: list[Interval] = []
    for c in campaigns:
        for phase, days in c.timeline():
            if phase in wanted:
                start = datetime.combine(days.first, time(), tz).astimezone(UTC)
                end = datetime.combine(days.last + timedelta(days=1), time(), tz).astimezone(UTC)
                out.append((start, end))
    return out


async def cap_verdicts(
    session: AsyncSession,
    targets: Sequence[PondView],
    at: datetime,
    *,
    exclude_post: int | None = None,
    scheduled_too: bool = True,
) -> dict[int, CapVerdict]:
    """The frequency cap for a post at `at` in each target pond.

    Counted: what went out to the pond (deliveries sent or possibly sent) and, with
    `scheduled_too`, the next time of every other scheduled post for the pond or for all
    ponds. Campaign phases exempt per each pond's settings."""
    if not targets:
        return {}
    ids = [p.chat_id for p in targets]
    widest = max(p.settings.promo_cap_days for p in targets)
    window = timedelta(days=widest)
    others: dict[int, list[datetime]] = defaultdict(list)
    if widest > 0:
        sent = (
            await session.execute(
                select(col(BroadcastDelivery.chat_id), col(BroadcastDelivery.occurrence)).where(
                    col(BroadcastDelivery.chat_id).in_(ids),
                    col(BroadcastDelivery.state).in_([str(s) for s in COUNTED]),
                    col(BroadcastDelivery.occurrence) > at - window,
                    col(BroadcastDelivery.occurrence) < at + window,
                    col(BroadcastDelivery.post_id) != (exclude_post or -1),
                )
            )
        ).all()
        for chat_id, occurrence in sent:
            others[chat_id].append(occurrence)
        if scheduled_too:
            for post, next_at in await scheduled_runs(session, [None, *ids]):
                if post.id == exclude_post or abs(next_at - at) >= window:
                    continue
                for chat_id in ids if post.chat_id is None else [post.chat_id]:
                    others[chat_id].append(next_at)
    campaigns = await campaigns_by_scope(session, ids)
    verdicts = {}
    for pond in targets:
        period = timedelta(days=pond.settings.promo_cap_days)
        exempt = exempt_intervals(
            campaigns.get(pond.chat_id, []), pond.settings.promo_cap_exempt_phases, pond.timezone
        )
        verdicts[pond.chat_id] = check_cap(at, others.get(pond.chat_id, []), exempt, period)
    return verdicts


# -- broadcast progress ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery_id: int
    pond: PondView
    claim: str  # the token of the run that claimed the row


async def create_deliveries(
    session: AsyncSession,
    post_id: int,
    occurrence: datetime,
    chat_ids: Sequence[int],
    *,
    capped: frozenset[int] = frozenset(),
    now: datetime | None = None,
) -> int:
    """One row per pond for this occurrence (existing rows are kept as they are)."""
    if not chat_ids:
        return 0
    now = now or utcnow()
    rows = [
        {
            "post_id": post_id,
            "occurrence": occurrence,
            "chat_id": c,
            "state": str(DeliveryState.capped if c in capped else DeliveryState.pending),
            "claim": None,
            "message_id": None,
            "updated_at": now,
        }
        for c in chat_ids
    ]
    stmt = insert_for(session, BroadcastDelivery.__table__)  # type: ignore[attr-defined]
    for start in range(0, len(rows), 500):
        await session.execute(
            stmt.values(rows[start : start + 500]).on_conflict_do_nothing(
                index_elements=["post_id", "occurrence", "chat_id"]
            )
        )
    return len(rows)


def _of_occurrence(post_id: int, occurrence: datetime) -> list[Any]:
    return deliveries.of_occurrence(BroadcastDelivery, post_id, occurrence)


async def release_orphans(
    session: AsyncSession, post_id: int, occurrence: datetime, now: datetime | None = None
) -> tuple[int, int]:
    """Rows a run that died left behind (storage/deliveries.py): (put back, unknown)."""
    return await deliveries.release_orphans(
        session, BroadcastDelivery, post_id, occurrence, now or utcnow()
    )


async def mark_sending(
    session: AsyncSession, delivery_id: int, claim: str, now: datetime | None = None
) -> bool:
    """Right before the row's request is issued: `queued` → `sending`. False when the
    row is no longer this claim's (a later run took it back): the request must not go."""
    return await deliveries.mark_sending(
        session, BroadcastDelivery, delivery_id, claim, now or utcnow()
    )


async def claim_deliveries(
    session: AsyncSession,
    post_id: int,
    occurrence: datetime,
    limit: int,
    now: datetime | None = None,
) -> list[Claimed]:
    """Mark up to `limit` pending rows `queued` and return them with their ponds; rows of
    ponds no longer active become `skipped` instead."""
    now = now or utcnow()
    rows = (
        await session.execute(
            select(col(BroadcastDelivery.id), col(BroadcastDelivery.chat_id))
            .where(*_of_occurrence(post_id, occurrence), col(BroadcastDelivery.state) == "pending")
            .order_by(col(BroadcastDelivery.id))
            .limit(limit)
        )
    ).all()
    if not rows:
        return []
    by_chat = await ponds(session, [c for _i, c in rows])
    gone = {i for i, c in rows if c not in by_chat or not by_chat[c].served}
    live = [i for i, _c in rows if i not in gone]
    if gone:
        await session.execute(
            update(BroadcastDelivery)
            .where(col(BroadcastDelivery.id).in_(gone), col(BroadcastDelivery.state) == "pending")
            .values(state=str(DeliveryState.skipped), updated_at=now)
        )
    if not live:
        return await claim_deliveries(session, post_id, occurrence, limit, now)
    token = await deliveries.queue(session, BroadcastDelivery, live, now)
    mine = (
        await session.execute(
            select(col(BroadcastDelivery.id), col(BroadcastDelivery.chat_id))
            .where(col(BroadcastDelivery.claim) == token)
            .order_by(col(BroadcastDelivery.id))
        )
    ).all()
    return [Claimed(i, by_chat[c], token) for i, c in mine if i is not None]


async def finish_deliveries(
    session: AsyncSession,
    outcomes: Sequence[tuple[int, DeliveryState, int | None]],
    now: datetime | None = None,
    *,
    claim: str | None = None,
) -> None:
    """Record what Telegram answered: (delivery id, state, message id). `pending` puts
    back a row whose request was never issued; with `claim`, only that claim's rows."""
    now = now or utcnow()
    for delivery_id, state, message_id in outcomes:
        await deliveries.finish(
            session, BroadcastDelivery, delivery_id, state, now, claim=claim, message_id=message_id
        )


async def delivery_counts(
    session: AsyncSession, post_id: int, occurrence: datetime | None = None
) -> dict[str, int]:
    query = select(col(BroadcastDelivery.state), func.count()).where(
        col(BroadcastDelivery.post_id) == post_id
    )
    if occurrence is not None:
        query = query.where(col(BroadcastDelivery.occurrence) == occurrence)
    rows = (await session.execute(query.group_by(col(BroadcastDelivery.state)))).all()
    return {str(s): int(n) for s, n in rows}
