"""Ponds and members (F1): the bot added or removed, members joining and leaving,
group → supergroup migration — and the moments a group's trust is decided: the bot is
added (by a global operator: trusted at once; else the admin list decides), a global
operator is promoted or demoted there (see services/trust.py)."""

from __future__ import annotations

import logging

from aiogram import Bot, Router
from aiogram.filters import Filter
from aiogram.types import ChatMemberUpdated, Message

from games.people import is_present
from services import texts
from services.messaging import say
from services.middlewares import TrackingMiddleware, person_of
from services.operators import AdminCache, OperatorPolicy
from services.outbox import Outbox
from services.trust import CHECKABLE, PondGate
from storage import repo
from storage.db import Database
from storage.models import SERVED_TRUST, PondStatus, PondTrust

log = logging.getLogger(__name__)

ADMIN = frozenset({"creator", "administrator"})


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
    bot: Bot,
    db: Database,
    outbox: Outbox,
    tracking: TrackingMiddleware,
    admins: AdminCache,
    operators: OperatorPolicy,
    gate: PondGate,
) -> None:
    chat = event.chat
    new, old = event.new_chat_member, event.old_chat_member
    now_in = is_present(new.status, getattr(new, "is_member", None))
    was_in = is_present(old.status, getattr(old, "is_member", None))
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
    log.info("pond %s is now %s", chat.id, "active" if now_in else "inactive")
    if not now_in:
        return
    if not was_in:
        outbox.reactivate(chat.id)
    if not was_in and operators.is_global(event.from_user):
        await gate.approve(chat.id, event.from_user.id)  # the shop's staff brought it
    async with db.transaction(readonly=True) as session:
        row = await repo.get_pond(session, chat.id)
        assert row is not None
        trust, language = PondTrust(row.trust), row.language
    if trust in CHECKABLE:
        trust = await gate.decide(bot, chat.id) or trust  # outside the transaction
    tracking.forget_pond(chat.id)
    if trust in SERVED_TRUST:
        if not was_in:
            say(outbox, chat.id, texts.welcome_pond(chat.title or ""))
    elif trust != PondTrust.unchecked:
        await gate.say_not_a_pond(chat.id, language)


async def member_changed(
    event: ChatMemberUpdated,
    bot: Bot,
    db: Database,
    admins: AdminCache,
    operators: OperatorPolicy,
    gate: PondGate,
    tracking: TrackingMiddleware,
) -> None:
    chat = event.chat
    new, old = event.new_chat_member, event.old_chat_member
    admin_changed = (new.status in ADMIN) != (old.status in ADMIN)
    if admin_changed:
        admins.invalidate(chat.id)
    person = person_of(new.user, None)
    if person is None or chat.type not in ("group", "supergroup"):
        return
    present = is_present(new.status, getattr(new, "is_member", None))
    status = new.status if present else ("kicked" if new.status == "kicked" else "left")
    if status == "restricted":
        status = "member"
    async with db.transaction() as session:
        await repo.upsert_member(session, person)
        await repo.touch_membership(session, chat.id, person.id, status=status)
    if status in repo.GONE:
        tracking.forget_seat(chat.id, person.id)
    if admin_changed and operators.is_global(new.user):
        await _global_operator_moved(event, bot, db, gate, tracking)


async def _global_operator_moved(
    event: ChatMemberUpdated, bot: Bot, db: Database, gate: PondGate, tracking: TrackingMiddleware
) -> None:
    """A global operator became an admin of the group (it is a pond from now on), or
    stopped being one (it stays a pond only if another global operator is admin)."""
    chat_id = event.chat.id
    if event.new_chat_member.status in ADMIN:
        async with db.transaction() as session:
            await repo.set_trust(session, chat_id, PondTrust.operator, only_from=CHECKABLE)
    else:
        await gate.decide(bot, chat_id, fresh=True)  # outside the transaction
    tracking.forget_pond(chat_id)


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


async def member_left(message: Message, db: Database, tracking: TrackingMiddleware) -> None:
    p = person_of(message.left_chat_member, None)
    if p is None:
        return
    async with db.transaction() as session:
        await repo.touch_membership(session, message.chat.id, p.id, status="left")
    tracking.forget_seat(message.chat.id, p.id)
