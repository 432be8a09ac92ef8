"""Ponds and members (F1): the bot added or removed, members joining and leaving,
group → supergroup migration."""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.filters import Filter
from aiogram.types import ChatMemberUpdated, Message

from bot import texts
from bot.messaging import say
from bot.middlewares import TrackingMiddleware, person_of
from bot.operators import AdminCache
from bot.outbox import Outbox
from storage import repo
from storage.db import Database
from storage.models import PondStatus

log = logging.getLogger(__name__)

PRESENT = frozenset({"creator", "administrator", "member", "restricted"})
ADMIN = frozenset({"creator", "administrator"})


def _present(status: str, is_member: bool | None) -> bool:
    return status in PRESENT and (status != "restricted" or bool(is_member))


class _Service(Filter):
    def __init__(self, field: str) -> None:
        self.field = field

    async def __call__(self, message: Message) -> bool:
        return getattr(message, self.field, None) is not None


def setup() -> Router:
    router = Router(name="membership")
    router.my_chat_member.register(bot_membership)
    router.chat_member.register(member_changed)
    router.message.register(migrated_to, _Service("migrate_to_chat_id"))
    router.message.register(migrated_from, _Service("migrate_from_chat_id"))
    router.message.register(members_joined, _Service("new_chat_members"))
    router.message.register(member_left, _Service("left_chat_member"))
    return router


async def bot_membership(
    event: ChatMemberUpdated,
    db: Database,
    outbox: Outbox,
    tracking: TrackingMiddleware,
    admins: AdminCache,
) -> None:
    chat = event.chat
    new, old = event.new_chat_member, event.old_chat_member
    now_in = _present(new.status, getattr(new, "is_member", None))
    was_in = _present(old.status, getattr(old, "is_member", None))
    if chat.type == "private":
        # The user blocked or unblocked the bot.
        async with db.transaction() as session:
            await repo.link_dm(session, chat.id, linked=now_in)
        if now_in:
            outbox.reactivate(chat.id)
        return
    if chat.type not in ("group", "supergroup"):
        return
    admins.invalidate(chat.id)
    tracking.forget_pond(chat.id)
    async with db.transaction() as session:
        await repo.upsert_pond(
            session,
            chat.id,
            title=chat.title or "",
            chat_type=chat.type,
            status=PondStatus.active if now_in else PondStatus.inactive,
            default_timezone=tracking.default_timezone,
            default_language=tracking.default_language,
        )
    if now_in and not was_in:
        outbox.reactivate(chat.id)
        say(outbox, chat.id, texts.welcome_pond(chat.title or ""))
    log.info("pond %s is now %s", chat.id, "active" if now_in else "inactive")


async def member_changed(event: ChatMemberUpdated, db: Database, admins: AdminCache) -> None:
    chat = event.chat
    new, old = event.new_chat_member, event.old_chat_member
    if (new.status in ADMIN) != (old.status in ADMIN):
        admins.invalidate(chat.id)
    person = person_of(new.user, None)
    if person is None or chat.type not in ("group", "supergroup"):
        return
    present = _present(new.status, getattr(new, "is_member", None))
    status = new.status if present else ("kicked" if new.status == "kicked" else "left")
    if status == "restricted":
        status = "member"
    async with db.transaction() as session:
        await repo.upsert_member(session, person)
        await repo.touch_membership(session, chat.id, person.id, status=status)


async def migrated_to(message: Message, db: Database, tracking: TrackingMiddleware) -> None:
    assert message.migrate_to_chat_id is not None
    await _migrate(db, tracking, message.chat.id, message.migrate_to_chat_id)


async def migrated_from(message: Message, db: Database, tracking: TrackingMiddleware) -> None:
    assert message.migrate_from_chat_id is not None
    await _migrate(db, tracking, message.migrate_from_chat_id, message.chat.id)


async def _migrate(db: Database, tracking: TrackingMiddleware, old: int, new: int) -> None:
    async with db.transaction() as session:
        await repo.migrate_pond(session, old, new)
    tracking.forget_pond(old)
    tracking.forget_pond(new)
    log.info("pond %s migrated to %s", old, new)


async def members_joined(message: Message, db: Database) -> None:
    """Fallback when the bot is no admin and gets no `chat_member` updates."""
    people = [p for u in message.new_chat_members or [] if (p := person_of(u, None))]
    if not people:
        return
    async with db.transaction() as session:
        for p in people:
            await repo.upsert_member(session, p)
            await repo.touch_membership(session, message.chat.id, p.id, status="member")


async def member_left(message: Message, db: Database) -> None:
    p = person_of(message.left_chat_member, None)
    if p is None:
        return
    async with db.transaction() as session:
        await repo.touch_membership(session, message.chat.id, p.id, status="left")
