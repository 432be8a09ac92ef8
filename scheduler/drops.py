"""Scheduled red-packet drops firing (F6): `red_packet.drop`.

A firing makes, in one transaction, the shop-funded packet the drop describes — exactly
what `/redpacket <total> <shares> …` from the admin who scheduled it makes: the packet,
its shares, its expiry task, and (a pond's own admin) the points counted against their
daily give cap — and records the outcome in the drop's task; then it posts the packet
(🧧 button, `#<id>`) through the outbox.

Which occurrence a run fires is worked out from the clock, not from the task's time
(a retry or a run taken over after a crash runs later than its time): a one-off's own
time, a recurring drop's latest time at or before now. The packet's `source_key` names
the drop and that occurrence, so a run repeated for any reason finds its packet made and
does nothing: a packet is never made twice. Only the run that made the packet posts it; a
post lost with its process is posted when the bot starts again (handlers/startup.py).

The task is a deadline (`catch_up=True`): the run itself decides lateness. More than the
pond's `promo_grace_minutes` late, the occurrence is recorded `missed`; a day outside the
drop's campaign phase is skipped without a record (`/promo list` tells from the
campaigns when it fires next, or that it never will); over the admin's daily give cap
`over_cap` (global operators have none); a packet the pond's limits no longer allow
`invalid`. Drops are no marketing posts: the frequency cap does not apply.

A drop `to=<segment>` (F10) makes a packet only that segment's members may grab (every
one of them, linked DM or not, as classified when it fires: scheduler/segments.py
`plan`, in the same transaction); its post says whom it is for, and the linked ones are
told by DM.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from games.campaign import Phase, local_day
from games.parsing import ParseError
from games.promo import grace, within_grace
from games.red_packet import DropArgs, drop_fires_on, packet_limits, parse_packet, split
from scheduler import segments as segment_jobs
from scheduler.core import Scheduler, TaskRun, firing_time
from scheduler.deps import JobDeps
from services.outbox import OutboxClosedError
from services.red_packets import RedPackets
from storage import drops, red_packets, repo
from storage import promo as store
from storage.db import Database
from storage.models import Job, PromoPost, PromoState
from storage.red_packets import PacketCard

log = logging.getLogger(__name__)


def setup(scheduler: Scheduler, deps: JobDeps, rng: random.Random | None = None) -> None:
    packets = RedPackets(rng)

    async def fire(run: TaskRun) -> None:
        await fire_drop(scheduler, deps, packets, run)

    scheduler.register(Job.red_packet_drop, fire)


@dataclass(frozen=True, slots=True)
class NewDrop:
    """A drop as `/redpacket at|every` asked for it."""

    chat_id: int
    author_id: int  # the admin (an anonymous admin: the group), whose give cap counts
    name: str  # how the packets name who sent them
    at: datetime  # the first time
    timezone: str
    drop: DropArgs
    capped: bool  # a pond's own admin: each firing counts against their daily give cap
    source_key: str  # the command message
    segment: str | None = None  # `to=<segment>`: its members are told by DM (F10)


async def create_drop(
    scheduler: Scheduler, db: Database, new: NewDrop, now: datetime
) -> int | None:
    """Record a drop (a `promo_post` of kind `drop`) and its schedule, once per command
    message: its id, or None for a command delivered again."""
    post = PromoPost(
        chat_id=new.chat_id,
        author_id=new.author_id,
        preview_chat_id=new.chat_id,
        kind=store.DROP_KIND,
        run_at=new.at,
        cron=new.drop.when.cron,
        timezone=new.timezone,
        text=new.drop.packet,
        state=PromoState.scheduled,
        source_key=new.source_key,
        segment=new.segment,
        created_at=now,
        confirmed_at=now,
    )
    phase = str(new.drop.phase) if new.drop.phase else None
    payload = {"phase": phase, "capped": new.capped, "name": new.name[:128]}
    async with db.transaction() as session:
        post.id, created = await store.create_draft(session, post)
        if created:
            await _schedule(scheduler, session, post, new.at, payload)
    return post.id if created else None


async def _schedule(
    scheduler: Scheduler, session: AsyncSession, post: PromoPost, at: datetime,
    payload: Mapping[str, object],
) -> None:
    """A new drop's schedule, in the caller's transaction."""
    assert post.id is not None
    await scheduler.schedule(
        at,
        Job.red_packet_drop,
        drops.drop_key(post.id),
        {"post_id": post.id, **payload},
        session=session,
        chat_id=post.chat_id,
        catch_up=True,  # the run decides lateness (see the module docstring)
        cron=post.cron,
        timezone=post.timezone if post.cron else None,
    )


async def fire_drop(scheduler: Scheduler, deps: JobDeps, packets: RedPackets, run: TaskRun) -> None:
    post_id = int(run.payload["post_id"])
    async with deps.db.transaction(readonly=True) as session:
        post = await store.get_post(session, post_id)
        if post is None or post.state != PromoState.scheduled or post.chat_id is None:
            return  # cancelled meanwhile
        chat_id = await store.current_chat(session, post.chat_id)
        pond = (await store.ponds(session, [chat_id])).get(chat_id)
        campaigns = (await store.campaigns_by_scope(session, [chat_id])).get(chat_id, [])
    if pond is None:
        return
    occurrence = firing_time(post.run_at, post.cron, post.timezone, run)
    phase = run.payload.get("phase")
    capped = bool(run.payload.get("capped", True))
    author = post.author_id
    card: PacketCard | None = None
    what: str | None = None
    if post.cron and run.due < occurrence - timedelta(seconds=1):
        # The bot was down across earlier times: the first of them is on record.
        async with deps.db.transaction() as session:
            await drops.record(session, run.key, run.due, "missed")
    try:
        async with deps.db.transaction() as session:
            if not await drops.is_scheduled(session, post_id):
                return
            key = drops.packet_key(post_id, occurrence)
            card = await drops.packet_of(session, key)
            settings = await repo.pond_settings(session, chat_id)
            if card is not None:
                # Made by an earlier run of this firing, which posted it; if that run's
                # process died first, its start posted it (handlers/startup.py, lost posts).
                pass
            elif not within_grace(occurrence, run.now, grace(settings)):
                what = "missed"
            elif not drop_fires_on(
                campaigns, None if phase is None else Phase(phase),
                local_day(occurrence, pond.timezone),
            ):
                what = "off_phase"
            else:
                try:
                    args = parse_packet(post.text, packet_limits(settings))
                except ParseError as exc:
                    await drops.record(session, run.key, occurrence, "invalid", code=exc.code)
                    return
                created = await red_packets.create(
                    session,
                    chat_id=chat_id,
                    funder=repo.UserInfo(author) if author > 0 else None,
                    funder_name=str(run.payload.get("name", "")),
                    shop_funded=True,
                    args=args,
                    amounts=split(args.total, args.shares, args.mode, packets.rng),
                    source_key=key,
                    now=run.now,
                    segment=post.segment,  # theirs alone: `plan` below says who they are
                )
                card = created.card
                if capped:
                    await repo.spend_operator_allowance(
                        session, chat_id, author, args.total, timezone=pond.timezone, now=run.now
                    )
                await scheduler.schedule(
                    card.expires_at,
                    Job.red_packet_expire,
                    red_packets.expiry_task_key(card.id),
                    {"packet_id": card.id},
                    session=session,
                    chat_id=chat_id,
                )
                if post.segment is not None:  # its segment's to grab; the linked told by DM
                    await segment_jobs.plan(
                        scheduler, session, post, chat_id, occurrence, run.now, packet_id=card.id
                    )
                what = "sent"
            if what is not None and what != "off_phase":  # (outside its phase: no news)
                extra = {"packet": card.id} if card is not None else {}
                await drops.record(session, run.key, occurrence, what, **extra)
            if post.cron is None and card is not None:
                await store.move_post(
                    session, post_id, PromoState.sent, from_states=[PromoState.scheduled]
                )
    except repo.OverAllowance as over:
        async with deps.db.transaction() as session:
            await drops.record(session, run.key, occurrence, "over_cap", cap=over.cap)
        log.info("drop %s at %s: over the give cap of %s", post_id, occurrence, author)
        return
    log.info("drop %s at %s: %s", post_id, occurrence, what or "made before")
    if what != "sent" or card is None:
        return
    try:
        with deps.language(pond.language):
            packets.post(deps.db, deps.outbox, card, pond.timezone)
    except OutboxClosedError:
        pass  # stopping: the next start posts the packets whose post never went out
