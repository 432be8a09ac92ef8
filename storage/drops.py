"""Scheduled red-packet drops (F6) in the database, over the caller's session.

A drop is a `promo_post` row of kind `drop` (`storage.promo.DROP_KIND`): its id is the one
`/promo list` shows and `/promo cancel <id>` takes, its `text` the packet's arguments as
for `/redpacket` (parsed again, with the pond's limits of the day, by every firing), its
`cron` set for a recurring drop. Its schedule is the `scheduled_task` keyed
`red_packet.drop:<id>`; that task's payload holds, besides the drop's id, the phase it
is limited to, whether the scheduling admin's daily give cap applies, and the last few
outcomes (`record`), which `/promo list` shows.

Each firing's packet is an ordinary shop-funded red packet whose `source_key` names the
drop and the occurrence (`packet_key`): the unique key makes a firing run again — a retry,
a run taken over after a crash, two processes — find its packet instead of making one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage import red_packets
from storage.models import Job, PromoPost, PromoState, RedPacket, ScheduledTask
from storage.promo import DROP_KIND, tasks_by_key
from storage.red_packets import PacketCard

KEPT_OUTCOMES = 5


def drop_key(drop_id: int) -> str:
    """The drop's schedule (its `scheduled_task` key)."""
    return f"{Job.red_packet_drop}:{drop_id}"


def packet_key(drop_id: int, occurrence: datetime) -> str:
    """The `source_key` of the packet of one firing."""
    return f"drop:{drop_id}:{int(occurrence.timestamp())}"


@dataclass(frozen=True, slots=True)
class DropView:
    """A scheduled drop as `/promo list` shows it."""

    id: int
    chat_id: int
    cron: str | None
    timezone: str
    packet: str
    first_at: datetime
    task_state: str | None
    next_at: datetime | None
    payload: dict[str, Any]


async def packet_of(session: AsyncSession, source_key: str) -> PacketCard | None:
    """The packet a firing made, if it did."""
    packet_id = await session.scalar(
        select(col(RedPacket.id)).where(col(RedPacket.source_key) == source_key)
    )
    return None if packet_id is None else await red_packets.get_card(session, int(packet_id))


async def is_scheduled(session: AsyncSession, drop_id: int) -> bool:
    state = await session.scalar(
        select(col(PromoPost.state)).where(
            col(PromoPost.id) == drop_id, col(PromoPost.kind) == DROP_KIND
        )
    )
    return state == PromoState.scheduled


async def record(
    session: AsyncSession, key: str, occurrence: datetime, what: str, **details: Any
) -> None:
    """Keep a firing's outcome (`sent`, `missed`, `over_cap`, `invalid`) in
    its task's payload, the newest last, at most `KEPT_OUTCOMES`; an occurrence recorded
    before is replaced, so a firing run again keeps one line."""
    payload = await session.scalar(select(col(ScheduledTask.payload)).where(
        col(ScheduledTask.key) == key
    ))
    if payload is None:
        return
    at = occurrence.isoformat()
    outcomes = [o for o in payload.get("outcomes", []) if o.get("at") != at]
    outcomes.append({"at": at, "what": what, **details})
    new = {**payload, "outcomes": outcomes[-KEPT_OUTCOMES:]}
    await session.execute(
        update(ScheduledTask).where(col(ScheduledTask.key) == key).values(payload=new)
    )


async def scheduled(
    session: AsyncSession, chat_id: int | None, *, limit: int = 20
) -> list[DropView]:
    """The scheduled drops of a pond (None: of every pond), newest first."""
    query = select(PromoPost).where(
        col(PromoPost.state) == PromoState.scheduled, col(PromoPost.kind) == DROP_KIND
    )
    if chat_id is not None:
        query = query.where(col(PromoPost.chat_id) == chat_id)
    rows = (
        (await session.execute(query.order_by(col(PromoPost.id).desc()).limit(limit)))
        .scalars()
        .all()
    )
    tasks = await tasks_by_key(session, [drop_key(p.id) for p in rows if p.id is not None])
    views = []
    for p in rows:
        assert p.id is not None and p.chat_id is not None
        task = tasks.get(drop_key(p.id))
        views.append(
            DropView(
                p.id,
                p.chat_id,
                p.cron,
                p.timezone,
                p.text,
                p.run_at,
                task.state if task else None,
                task.run_at if task else None,
                dict(task.payload) if task else {},
            )
        )
    return views
