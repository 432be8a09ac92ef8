"""Promotion posts firing (F11): two jobs.

* `promo.post` — the post's own schedule (`catch_up=False`: sent late only within the
  grace window, else recorded as missed by the scheduler). It sends nothing itself: in one
  transaction it records the occurrence — one `broadcast_delivery` row per target pond
  (`capped` for a recurring post over a pond's frequency cap) — and schedules the
  delivery task. Its commit is the last thing it does, so a retry never finds half a
  firing, and a re-run of the same occurrence inserts nothing new. Which occurrence a
  run fires is worked out from the clock (`firing_time`: a one-off's own time, a
  recurring post's latest time at or before now), not from the task's time: a run
  taken over after a crash, or handed back at a stop, after its commit runs again with
  its task's time reset, and finds its occurrence's rows made.
* `promo.deliver` — a deadline (`catch_up=True`): it claims the pending rows `queued`
  and hands their messages to the outbox, a sliding window at a time, and records each
  answer. The copies are the outbox's bulk requests: it issues them with whatever of the
  overall ≈30/s the live ponds' replies and boards leave (those go first), so a
  broadcast has no pace of its own, and a pond parked by a 429 is retried as soon as its
  `retry_after` passes while the other copies keep going. The outbox marks a row
  `sending` (committed) right before it issues the row's request, so of a run that died
  in the middle, the rows still `queued` certainly never went out — the next run sends
  them — and only those `sending` (on the wire at the crash) become `unknown` and are
  never sent again (at-most-once: no pond gets a second copy; see storage/promo.py).
  A crashed delivery run is taken over by the scheduler as the bot starts again; when
  the bot stops, the run hands nothing more over, records what is on the wire and
  leaves the rest `pending` (`RunInterrupted`), so a stop loses no pond.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from aiogram.methods import PinChatMessage, SendMessage, SendPhoto
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from games.campaign import Campaign, local_day
from games.promo import over_cap
from scheduler import segments as segment_jobs
from scheduler import window
from scheduler.core import RunInterrupted, Scheduler, TaskRun, firing_time, next_cron_time
from scheduler.deps import JobDeps
from services.outbox import OutboxClosedError
from services.promo_post import post_method
from services.texts import promo as t
from storage import promo as store
from storage.models import DeliveryState, Job, PromoPost, PromoState

log = logging.getLogger(__name__)


def setup(scheduler: Scheduler, deps: JobDeps) -> None:
    async def fire(run: TaskRun) -> None:
        await fire_post(scheduler, deps, run)

    async def deliver(run: TaskRun) -> None:
        await deliver_post(deps, run, lambda: scheduler.stopping)

    scheduler.register(Job.promo_post, fire)
    scheduler.register(Job.promo_deliver, deliver)


def next_run(post: PromoPost, now: datetime) -> datetime | None:
    """When a post being confirmed first fires: a recurring post's next time, a one-off's
    own (None: the crontab never fires again)."""
    if post.kind == "every" and post.cron:
        return next_cron_time(post.cron, post.timezone, now)
    return post.run_at


async def schedule_post(
    scheduler: Scheduler, session: AsyncSession, post: PromoPost, at: datetime, grace: timedelta
) -> None:
    """A confirmed post's schedule, in the caller's transaction: `catch_up=False`, so a
    time the bot was down for is sent late within `grace`, else recorded as missed."""
    assert post.id is not None
    await scheduler.schedule(
        at,
        Job.promo_post,
        store.post_key(post.id),
        {"post_id": post.id},
        session=session,
        chat_id=post.chat_id,
        catch_up=False,
        grace=grace,
        cron=post.cron,
        timezone=post.timezone if post.cron else None,
    )


async def fire_post(scheduler: Scheduler, deps: JobDeps, run: TaskRun) -> None:
    post_id = int(run.payload["post_id"])
    async with deps.db.transaction() as session:
        post = await store.get_post(session, post_id)
        if post is None or post.state != PromoState.scheduled:
            return  # cancelled meanwhile
        occurrence = firing_time(post.run_at, post.cron, post.timezone, run)
        if post.segment is not None and post.chat_id is not None:  # `to=<segment>`: DMs
            chat_id = await store.current_chat(session, post.chat_id)
            await segment_jobs.plan(scheduler, session, post, chat_id, occurrence, run.now)
            if post.kind == "at":
                await store.move_post(
                    session, post_id, PromoState.sent, from_states=[PromoState.scheduled]
                )
            return
        if post.chat_id is None:
            targets = await store.active_ponds(session)
        else:
            chat_id = await store.current_chat(session, post.chat_id)
            targets = list((await store.ponds(session, [chat_id])).values())
        capped: frozenset[int] = frozenset()
        if post.kind == "every":
            capped = over_cap(
                await store.cap_verdicts(session, targets, occurrence, scheduled_too=False)
            )
        await store.create_deliveries(
            session, post_id, occurrence, [p.chat_id for p in targets], capped=capped, now=run.now
        )
        if post.kind == "at":
            await store.move_post(
                session, post_id, PromoState.sent, from_states=[PromoState.scheduled]
            )
        await scheduler.schedule(
            run.now,
            Job.promo_deliver,
            store.deliver_key(post_id, occurrence),
            {"post_id": post_id, "occurrence": occurrence.isoformat()},
            session=session,
            chat_id=post.chat_id,
        )
    log.info(
        "promo post %s fired for %d pond(s) (%d over the cap)", post_id, len(targets), len(capped)
    )


async def deliver_post(
    deps: JobDeps, run: TaskRun, stopping: Callable[[], bool] = lambda: False
) -> None:
    post_id = int(run.payload["post_id"])
    occurrence = datetime.fromisoformat(str(run.payload["occurrence"]))
    async with deps.db.transaction() as session:
        post = await store.get_post(session, post_id)
        back, orphans = await store.release_orphans(session, post_id, occurrence, run.now)
    if post is None:
        return
    if back:
        log.info("promo post %s: %d delivery(ies) never issued, sent now", post_id, back)
    if orphans:
        log.warning("promo post %s: %d delivery(ies) of unknown fate, not resent", post_id, orphans)

    in_flight: dict[window.Answer, store.Claimed] = {}
    issued: set[int] = set()  # deliveries marked `sending`: their requests went out

    async def hand_over(count: int) -> bool:
        return bool(await _hand_over(deps, post, occurrence, count, run, in_flight, issued))

    async def record(answered: list[tuple[window.Answer, store.Claimed]]) -> None:
        by_claim: dict[str, list[tuple[int, DeliveryState, int | None]]] = {}
        for fut, claimed_row in answered:
            outcome = _outcome(deps, post.pin, fut, claimed_row, issued)
            by_claim.setdefault(claimed_row.claim, []).append(outcome)
        async with deps.db.transaction() as session:
            for claim, outcomes in by_claim.items():
                await store.finish_deliveries(session, outcomes, claim=claim)

    # When the bot stops, nothing more is handed over; the rest stays `pending`.
    if await window.drive(in_flight, hand_over, record, stopping):
        async with deps.db.transaction(readonly=True) as session:
            left = (await store.delivery_counts(session, post_id, occurrence)).get("pending", 0)
        if left:
            raise RunInterrupted(f"stopped with {left} pond(s) still to send to")
    await _report(deps, post, occurrence)


async def _hand_over(
    deps: JobDeps,
    post: PromoPost,
    occurrence: datetime,
    count: int,
    run: TaskRun,
    in_flight: dict[asyncio.Future[Message | None], store.Claimed],
    issued: set[int],
) -> list[store.Claimed]:
    """Mark up to `count` pending rows `queued` (committed), then queue their messages
    (bulk: after the live ponds' requests); each is marked `sending` right before its
    request is issued."""
    assert post.id is not None
    async with deps.db.transaction() as session:
        claimed = await store.claim_deliveries(session, post.id, occurrence, count, run.now)
        chats = [c.pond.chat_id for c in claimed]
        campaigns = await store.campaigns_by_scope(session, chats) if claimed else {}
    unsent: list[int] = []
    for c in claimed:
        method = _method(deps, post, c.pond, campaigns.get(c.pond.chat_id, []), run)
        try:
            hook = _on_the_wire(deps, c, issued)
            in_flight[deps.outbox.send(method, before_issue=hook, bulk=True)] = c
        except OutboxClosedError:
            unsent.append(c.delivery_id)
    if unsent:  # never handed over: they may go on the next run
        async with deps.db.transaction() as session:
            await store.finish_deliveries(
                session, [(i, DeliveryState.pending, None) for i in unsent], claim=claimed[0].claim
            )
        raise OutboxClosedError("outbox stopped during a broadcast")
    return claimed


def _on_the_wire(
    deps: JobDeps, claimed: store.Claimed, issued: set[int]
) -> Callable[[], Awaitable[bool]]:
    """The outbox's hook for one delivery: mark it `sending` (committed) right before
    its request is issued; False (the request is withdrawn) when the row is no longer
    this run's."""

    async def before_issue() -> bool:
        async with deps.db.transaction() as session:
            mine = await store.mark_sending(session, claimed.delivery_id, claimed.claim)
        if mine:
            issued.add(claimed.delivery_id)
        return mine

    return before_issue


def _method(
    deps: JobDeps, post: PromoPost, pond: store.PondView, campaigns: list[Campaign], run: TaskRun
) -> SendMessage | SendPhoto:
    with deps.language(pond.language):
        return post_method(post, pond.chat_id, campaigns, local_day(run.now, pond.timezone))


def _outcome(
    deps: JobDeps,
    pin: bool,
    fut: asyncio.Future[Message | None],
    claimed: store.Claimed,
    issued: set[int],
) -> tuple[int, DeliveryState, int | None]:
    if fut.cancelled():
        if claimed.delivery_id not in issued:  # never went out: the next run sends it
            return claimed.delivery_id, DeliveryState.pending, None
        return claimed.delivery_id, DeliveryState.unknown, None
    exc = fut.exception()
    if exc is not None:
        log.warning("promo delivery to %s failed: %s", claimed.pond.chat_id, type(exc).__name__)
        return claimed.delivery_id, DeliveryState.failed, None
    result = fut.result()
    if not isinstance(result, Message):
        return claimed.delivery_id, DeliveryState.skipped, None  # 403: the pond is retired
    if pin:
        # A pin that fails (no right to pin) is ignored: the post is out all the same.
        deps.outbox.send(
            PinChatMessage(
                chat_id=result.chat.id, message_id=result.message_id, disable_notification=True
            )
        )
    return claimed.delivery_id, DeliveryState.sent, result.message_id


async def _report(deps: JobDeps, post: PromoPost, occurrence: datetime) -> None:
    """Tell the author of a broadcast, in private, how it went."""
    if post.chat_id is not None or post.preview_chat_id <= 0 or post.id is None:
        return
    async with deps.db.transaction(readonly=True) as session:
        counts = await store.delivery_counts(session, post.id, occurrence)
    with deps.language(deps.i18n.default_locale):
        text = t.broadcast_report(post.id, counts)
    deps.outbox.send(SendMessage(chat_id=post.preview_chat_id, text=text))
