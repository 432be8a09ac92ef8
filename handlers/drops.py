"""Scheduled red-packet drops (F6): `/redpacket at …`, `/redpacket every …` (operators).

    /redpacket at <YYYY-MM-DD HH:MM|+duration> <total> <shares> [random|equal] [pwd=…] [for=…]
    /redpacket every <cron> <total> <shares> … [phase=<phase>]

Checked like a `/redpacket` (the pond's packet limits) and like a `/promo` time (the
pond's time zone; past times and bad crontabs refused), then scheduled at once, paid by
the shop: a drop has no preview. A pond's own admin cannot schedule a drop larger than
their daily give cap (it could never go out); each firing counts against it. The command
message is the drop's idempotency key: a redelivered command schedules nothing more.

Drops are listed and cancelled with the posts (`/promo list`, `/promo cancel <id>`):
`listing` is the part of `/promo list` they take. The firing is scheduler/drops.py.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import partial

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from games.campaign import MAX_WALK, Campaign, Phase, local_day
from games.parsing import ParseError
from games.promo import draft_author
from games.red_packet import (
    DropError,
    PacketArgs,
    drop_fires_on,
    packet_limits,
    parse_drop,
    parse_packet,
)
from games.segments import split_target
from games.settings import PondSettings
from scheduler.core import Scheduler, next_cron_time
from scheduler.drops import NewDrop, create_drop
from services.filters import IsOperator
from services.messaging import refuse_non_operator, reply
from services.middlewares import PondInfo
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.promo import Where, first_time
from services.texts import drops as texts
from services.texts import promo as promo_texts
from services.texts import red_packet as packet_texts
from services.texts import surveys as segment_texts
from storage import drops, repo
from storage import promo as store
from storage.db import Database
from storage.drops import DropView

GROUPS = ("group", "supergroup")
LISTING_LIMIT = 4000  # characters of one `/promo list` message (Telegram's 4096, and room)
DROP = Command("redpacket", magic=F.args.regexp(r"(?i)^\s*(at|every)\b"))


def setup() -> Router:
    router = Router(name="drops")
    router.message.register(schedule, DROP, IsOperator())
    router.message.register(refuse_non_operator, DROP)
    return router


async def schedule(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    operators: OperatorPolicy,
    person: repo.UserInfo | None,
    pond: PondInfo | None,
) -> None:
    chat = message.chat
    if chat.type not in GROUPS or pond is None:
        reply(outbox, message, packet_texts.groups_only())
        return
    sender = message.sender_chat.id if message.sender_chat else None
    author = draft_author(person.id if person else None, sender, chat.id)
    if author is None:
        return  # a channel speaking in the group
    now = scheduler.clock()
    async with db.transaction(readonly=True) as session:
        settings = await repo.pond_settings(session, chat.id)
    limits = packet_limits(settings)
    args, segment, bad = split_target(command.args)  # `to=<segment>`: DMs (F10)
    if bad is not None:
        reply(outbox, message, segment_texts.bad_target(bad))
        return
    try:
        drop = parse_drop(args, limits)
        at = first_time(drop.when, now, pond.timezone, next_cron_time)
    except DropError as exc:
        reply(outbox, message, texts.error(exc.part, exc.code, limits))
        return
    except ParseError as exc:
        reply(outbox, message, texts.error("time", exc.code, limits))
        return
    capped = not operators.is_global(message.from_user, message.sender_chat)
    cap = settings.operator_give_daily_cap
    if capped and drop.args.total > cap:
        reply(outbox, message, texts.over_cap(drop.args.total, cap))
        return
    name = person.display_name if person else chat.title or ""
    source_key = f"drop:{chat.id}:{message.message_id}"
    new = NewDrop(chat.id, author, name, at, pond.timezone, drop, capped, source_key, segment)
    drop_id = await create_drop(scheduler, db, new, now)
    if drop_id is None:
        return  # the same command delivered again: scheduled the first time
    cron = drop.when.cron
    when = promo_texts.when("every" if cron else "at", at, cron, pond.timezone)
    text = texts.scheduled(drop_id, when, drop.args, drop.phase)
    if segment is not None:
        text += "\n" + segment_texts.drop_scheduled(segment)
    reply(outbox, message, text)


# -- /promo list ---------------------------------------------------------------------------


def next_firing(
    view: DropView, phase: Phase | None, campaigns: list[Campaign], now: datetime
) -> datetime | None:
    """When the drop fires next: its task's time, for a phase drop the first of its times
    on a day of that phase (None: none within `MAX_WALK` times, or it is over)."""
    at = view.next_at if view.task_state == "pending" else None
    if at is None or view.cron is None or phase is None:
        return at
    step = partial(next_cron_time, view.cron, view.timezone)
    for _ in range(MAX_WALK):
        if drop_fires_on(campaigns, phase, local_day(at, view.timezone)):
            return at
        if (at := step(at)) is None:
            return None
    return None


def _phase_ahead(campaigns: list[Campaign], phase: Phase, today: date) -> bool:
    return any(c.phase_range(phase).last >= today for c in campaigns)


async def listing(db: Database, where: Where, now: datetime) -> str | None:
    """The drops seen from `where` (a pond's; in an operator's DM every pond's), with
    their next firing and their last outcomes; None when there are none."""
    async with db.transaction(readonly=True) as session:
        views = await drops.scheduled(session, where.chat_id)
        chats = sorted({v.chat_id for v in views})
        campaigns = await store.campaigns_by_scope(session, chats) if views else {}
        ponds = await store.ponds(session, chats) if views else {}
    lines = []
    for v in views:
        phase = Phase(v.payload["phase"]) if v.payload.get("phase") else None
        mine = campaigns.get(v.chat_id, [])
        at = next_firing(v, phase, mine, now)
        pond = ponds.get(v.chat_id)
        try:
            args: PacketArgs | None = parse_packet(
                v.packet, packet_limits(pond.settings if pond else PondSettings())
            )
        except ParseError:
            args = None
        if at is not None:
            when = promo_texts.when("every" if v.cron else "at", at, v.cron, v.timezone)
        else:
            when = "—"
        if v.chat_id == where.chat_id:
            place = promo_texts.where(v.chat_id, 1)
        else:
            place = promo_texts.pond_title(pond.title if pond else str(v.chat_id))
        never = phase is not None and not _phase_ahead(mine, phase, local_day(now, v.timezone))
        outcomes = list(v.payload.get("outcomes", []))
        lines.append(
            texts.drop_line(v.id, when, args, phase, place, outcomes, v.timezone, never=never)
        )
    return texts.listing(lines) if lines else None


async def with_drops(db: Database, where: Where, now: datetime, posts: str) -> list[str]:
    """`/promo list`: the posts' listing `posts` followed by the drops', in one message
    when it fits."""
    dropped = await listing(db, where, now)
    if dropped is None:
        return [posts]
    if len(posts) + len(dropped) < LISTING_LIMIT:
        return [f"{posts}\n\n{dropped}"]
    return [posts, dropped]
