"""Posts and red-packet drops `to=<segment>` (F10): `segment.deliver`.

When such a post fires (scheduler/promo.py) — or such a drop's packet is made
(scheduler/drops.py) — `plan` records, in the firing's own transaction, one
`segment_delivery` row per member of the pond in that segment (or at churn risk) whose
private chat is linked, classified at that moment, and schedules the delivery task; a
re-run of the firing inserts no new row. A drop's packet is the segment's: from the
same classification `plan` records every member of it, linked or not, as the only ones
who may grab it (storage/red_packets.py `allow`).

The delivery sends each member the post by DM (a drop: a DM telling them of their
packet in the group), a sliding window at a time, as the outbox's bulk requests: they
go with whatever of the overall ≈30/s the live ponds' replies and boards leave (those
go first), and a member parked by a 429 is retried as soon as its `retry_after` passes
while the other DMs keep going. Each row is claimed `queued` in a committed transaction
before its message is handed to the outbox, marked `sending` (committed) by the outbox
right before it issues the request, and finished with Telegram's answer; a row a dead
run left `queued` never went out and is sent, one it left `sending` becomes `unknown`
and is never sent again. So no member gets a copy twice, also across a restart, and a
stop hands nothing more over and leaves the rest `pending` for the next start
(`RunInterrupted`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiogram.methods import SendMessage, SendPhoto
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from games.campaign import Campaign, local_day
from games.segments import in_target
from scheduler import window
from scheduler.core import RunInterrupted, Scheduler, TaskRun
from scheduler.deps import JobDeps
from services.outbox import OutboxClosedError
from services.promo_post import post_method
from services.texts import surveys as texts
from storage import promo, red_packets
from storage import segments as store
from storage.models import DeliveryState, Job, PromoPost
from storage.promo import DROP_KIND
from storage.settings import shop_settings

log = logging.getLogger(__name__)


async def plan(
    scheduler: Scheduler,
    session: AsyncSession,
    post: PromoPost,
    chat_id: int,
    occurrence: datetime,
    now: datetime,
    *,
    packet_id: int | None = None,
) -> int:
    """In the firing's transaction: the DMs of `post`'s occurrence to the pond's linked
    members of its segment, and their delivery task; a drop's packet (`packet_id`) made
    grabbable by the segment's members only, linked DM or not. Returns how many members
    are reached by DM."""
    assert post.id is not None and post.segment is not None
    settings = await shop_settings(session)  # segments are shop-wide settings
    rows = await store.standings(session, store.thresholds(settings), now, chat_id=chat_id)
    members = list(store.targets(rows, post.segment))
    if packet_id is not None:
        everyone = [r.user_id for r in rows if in_target(r.standing, post.segment)]
        allowed = await red_packets.allow(session, packet_id, everyone)
        log.info("packet %s to=%s: %d member(s) may grab it", packet_id, post.segment, allowed)
    await store.create_deliveries(session, post.id, occurrence, chat_id, members, now)
    payload: dict[str, object] = {"post_id": post.id, "occurrence": occurrence.isoformat()}
    if packet_id is not None:
        payload["packet_id"] = packet_id
    await scheduler.schedule(
        now, Job.segment_deliver, store.deliver_key(post.id, occurrence), payload,
        session=session, chat_id=chat_id,
    )
    log.info("post %s to=%s: %d member(s) to reach", post.id, post.segment, len(members))
    return len(members)


def setup(scheduler: Scheduler, deps: JobDeps) -> None:
    async def deliver(run: TaskRun) -> None:
        await deliver_dms(deps, run, lambda: scheduler.stopping)

    scheduler.register(Job.segment_deliver, deliver)


async def deliver_dms(
    deps: JobDeps, run: TaskRun, stopping: Callable[[], bool] = lambda: False
) -> None:
    post_id = int(run.payload["post_id"])
    occurrence = datetime.fromisoformat(str(run.payload["occurrence"]))
    packet_id = int(str(run.payload.get("packet_id", 0)))
    async with deps.db.transaction() as session:
        post = await promo.get_post(session, post_id)
        back, orphans = await store.release_orphans(session, post_id, occurrence, run.now)
        pond = None
        campaigns: list[Campaign] = []
        if post is not None and post.chat_id is not None:
            chat_id = await promo.current_chat(session, post.chat_id)
            pond = (await promo.ponds(session, [chat_id])).get(chat_id)
            campaigns = (await promo.campaigns_by_scope(session, [chat_id])).get(chat_id, [])
    if back:
        log.info("post %s to a segment: %d DM(s) never issued, sent now", post_id, back)
    if orphans:
        log.warning("post %s to a segment: %d DM(s) of unknown fate, not resent", post_id, orphans)
    if post is None or pond is None or post.segment is None:
        return

    def method(user_id: int) -> SendMessage | SendPhoto:
        with deps.language(pond.language):
            if post.kind == DROP_KIND:
                text = texts.drop_dm(pond.title, packet_id, str(post.segment))
                return SendMessage(chat_id=user_id, text=text)
            return post_method(post, user_id, campaigns, local_day(run.now, pond.timezone))

    in_flight: dict[window.Answer, tuple[int, str]] = {}  # row, claim
    issued: set[int] = set()  # rows marked `sending`: their DMs went out

    async def hand_over(count: int) -> bool:
        async with deps.db.transaction() as session:
            claimed = await store.claim_deliveries(session, post_id, occurrence, count, run.now)
        unsent: list[tuple[int, DeliveryState]] = []
        for delivery_id, user_id, claim in claimed:
            hook = _on_the_wire(deps, delivery_id, claim, run.now, issued)
            try:
                fut = deps.outbox.send(method(user_id), before_issue=hook, bulk=True)
            except OutboxClosedError:
                unsent.append((delivery_id, DeliveryState.pending))
            else:
                in_flight[fut] = (delivery_id, claim)
        if unsent:  # never handed over: they go on the next run
            async with deps.db.transaction() as session:
                await store.finish_deliveries(session, unsent, run.now, claim=claimed[0][2])
            raise OutboxClosedError("outbox stopped during a targeted delivery")
        return bool(claimed)

    async def record(answered: list[tuple[window.Answer, tuple[int, str]]]) -> None:
        by_claim: dict[str, list[tuple[int, DeliveryState]]] = {}
        for fut, (delivery_id, claim) in answered:
            outcome = _outcome(fut, delivery_id in issued)
            by_claim.setdefault(claim, []).append((delivery_id, outcome))
        async with deps.db.transaction() as session:
            for claim, outcomes in by_claim.items():
                await store.finish_deliveries(session, outcomes, run.now, claim=claim)

    # When the bot stops, nothing more is handed over; the rest stays `pending`.
    if await window.drive(in_flight, hand_over, record, stopping):
        async with deps.db.transaction(readonly=True) as session:
            left = (await store.delivery_counts(session, post_id, occurrence)).get("pending", 0)
        if left:
            raise RunInterrupted(f"stopped with {left} member(s) still to send to")


def _on_the_wire(
    deps: JobDeps, delivery_id: int, claim: str, now: datetime, issued: set[int]
) -> Callable[[], Awaitable[bool]]:
    """The outbox's hook for one DM: mark its row `sending` (committed) right before the
    request is issued; False (withdrawn) when the row is no longer this run's."""

    async def before_issue() -> bool:
        async with deps.db.transaction() as session:
            mine = await store.mark_sending(session, delivery_id, claim, now)
        if mine:
            issued.add(delivery_id)
        return mine

    return before_issue


def _outcome(fut: asyncio.Future[Message | None], issued: bool) -> DeliveryState:
    if fut.cancelled():  # one never issued goes back: the next run sends it
        return DeliveryState.unknown if issued else DeliveryState.pending
    if fut.exception() is not None:
        return DeliveryState.failed
    return DeliveryState.sent if isinstance(fut.result(), Message) else DeliveryState.skipped
