"""Operators' commands: /give and /take.

`/give <@username|user_id> <points> [reason]`, or as a reply to a member's message
without the user. The command message itself is the domain event: its chat and message
id make the idempotency key, so a redelivered update never pays twice and gets no
second answer.

A pond's own admins are its operators, but points are shop-wide: what such an operator
(not a global one from `OPERATOR_IDS`) gives in a pond is bounded per local day by the
pond's `operator_give_daily_cap`. The day's total is counted in the transaction of the
award itself, so an award over the cap is rolled back whole.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from games.parsing import ParseError, parse_adjust
from services import texts
from services.filters import IsOperator
from services.messaging import actor_of, refuse_non_operator, replied_message, reply
from services.middlewares import PondInfo, person_of
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.texts import ponds as pond_texts
from storage import ledger, repo
from storage.db import Database
from storage.models import LedgerKind

Clock = Callable[[], datetime]


def setup() -> Router:
    router = Router(name="operator")
    router.message.register(adjust, Command("give", "take"), IsOperator())
    # Everyone else who tries is told so, and nothing changes.
    router.message.register(refuse_non_operator, Command("give", "take"))
    return router



async def adjust(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    operators: OperatorPolicy,
    pond: PondInfo | None,
    clock: Clock,
) -> None:
    name = command.command.lower()
    target_msg = replied_message(message)
    replying = target_msg is not None
    try:
        args = parse_adjust(command.args, replying=replying)
    except ParseError as exc:
        reply(outbox, message, texts.parse_error(exc.code, name))
        return

    replied_person = None
    if replying and args.username is None and args.user_id is None:
        assert target_msg is not None
        replied_person = person_of(target_msg.from_user, target_msg.sender_chat)
        if replied_person is None:
            reply(outbox, message, texts.cannot_target_bot())
            return

    actor = actor_of(message)
    key = f"{name}:{message.chat.id}:{message.message_id}"
    pond_id = message.chat.id if message.chat.type in ("group", "supergroup") else None
    # Global operators give without limit; a pond's own admins within the daily cap.
    capped = (
        name == "give"
        and pond is not None
        and actor is not None
        and not operators.is_global(message.from_user, message.sender_chat)
    )
    outcome: str
    try:
        async with db.transaction() as session:
            member = await repo.named_member(
                session, replied=replied_person, username=args.username, user_id=args.user_id
            )
            if member is None:
                outcome = texts.member_not_found(
                    f"@{args.username}" if args.username else str(args.user_id)
                )
            else:
                mover = ledger.award if name == "give" else ledger.spend
                try:
                    move = await mover(
                        session,
                        user_id=member.user_id,
                        amount=args.points,
                        kind=LedgerKind.admin_adjust,
                        key=key,
                        chat_id=pond_id,
                        actor_id=actor,
                        ref=args.reason,
                    )
                except ledger.InsufficientPoints:
                    outcome = texts.insufficient(member, args.points)
                else:
                    if not move.applied:
                        return  # a replay of a command already carried out: stay silent
                    if capped:
                        assert pond is not None and actor is not None
                        await repo.spend_operator_allowance(
                            session, pond.chat_id, actor, args.points,
                            timezone=pond.timezone, now=clock(),
                        )
                    fresh = await repo.get_member(session, member.user_id)
                    assert fresh is not None
                    outcome = texts.adjusted(fresh, move.delta, args.reason)
    except repo.OverAllowance as over:
        outcome = pond_texts.give_cap_reached(over.left, over.cap)
    reply(outbox, message, outcome)

