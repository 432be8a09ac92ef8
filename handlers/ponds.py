"""Which groups are ponds (SPEC F1, trust boundary): `/ponds`, `/ponds approve <chat_id>`,
`/ponds revoke <chat_id>` — global operators (`OPERATOR_IDS`), in a private chat.

Approving a group makes it a pond (and greets it); revoking stops serving it, and
nothing is deleted: its members, points and history stay, and an approval brings it
back. The decision itself lives in services/trust.py.
"""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from games.parsing import fold
from services import texts as common_texts
from services.messaging import refuse_non_operator, reply, say
from services.middlewares import TrackingMiddleware
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.texts import ponds as texts
from services.trust import PondGate
from storage import repo
from storage.db import Database
from storage.models import PondStatus

MAX_CHAT_ID = 10**15  # Bot API chat ids fit in 52 bits


def setup() -> Router:
    router = Router(name="ponds")
    router.message.register(ponds, Command("ponds"))
    router.startup.register(check_unchecked)
    router.shutdown.register(stop_checking)
    return router


def _gate(router: Router) -> PondGate:
    root = router
    while root.parent_router is not None:
        root = root.parent_router
    gate: PondGate = root["gate"]  # type: ignore[index]
    return gate


async def check_unchecked(router: Router, bot: Bot) -> None:
    """At start: groups never checked (ponds from before the trust boundary) are checked
    in the background, so quiet ponds keep getting the shop's posts."""
    _gate(router).start_sweep(bot)


async def stop_checking(router: Router) -> None:
    await _gate(router).aclose()


def parse_chat_id(raw: str) -> int | None:
    """A group's chat id: a negative whole number ("−" and full-width digits accepted)."""
    text = fold(raw).replace("−", "-").strip()
    digits = text[1:]
    if not text.startswith("-") or not (digits.isascii() and digits.isdigit()) or len(text) > 17:
        return None
    value = int(text)
    return value if -MAX_CHAT_ID < value < 0 else None


async def ponds(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    operators: OperatorPolicy,
    gate: PondGate,
    tracking: TrackingMiddleware,
) -> None:
    if not operators.is_global(message.from_user, message.sender_chat):
        await refuse_non_operator(message, outbox)
        return
    if message.chat.type != "private":
        reply(outbox, message, texts.in_private_only())
        return
    assert message.from_user is not None
    args = (command.args or "").split()
    if not args:
        async with db.transaction(readonly=True) as session:
            groups = await repo.list_ponds(session)
        for text in texts.ponds_list(groups):
            reply(outbox, message, text)
        return
    action = args[0].lower()
    if action not in ("approve", "revoke") or len(args) != 2:
        reply(outbox, message, texts.usage())
        return
    chat_id = parse_chat_id(args[1])
    if chat_id is None:
        reply(outbox, message, texts.bad_chat_id())
        return
    async with db.transaction(readonly=True) as session:
        record = await repo.pond_record(session, chat_id)
        if record is not None and record.migrated_to is not None:
            record = await repo.pond_record(session, record.migrated_to)  # now a supergroup
    if record is None:
        reply(outbox, message, texts.unknown_group(chat_id))
        return
    actor = message.from_user.id
    if action == "approve":
        changed = await gate.approve(record.chat_id, actor)
        tracking.forget_pond(record.chat_id)
        if changed and not record.served and record.status == PondStatus.active:
            say(outbox, record.chat_id, common_texts.welcome_pond(record.title))
        done = texts.approved(record) if changed else texts.already_approved(record)
        reply(outbox, message, done)
    else:
        changed = await gate.revoke(record.chat_id, actor)
        tracking.forget_pond(record.chat_id)
        done = texts.revoked(record) if changed else texts.already_revoked(record)
        reply(outbox, message, done)
