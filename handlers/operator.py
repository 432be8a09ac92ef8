"""Operators' commands: /give and /take.

`/give <@username|user_id> <points> [reason]`, or as a reply to a member's message
without the user. The command message itself is the domain event: its chat and message
id make the idempotency key, so a redelivered update never pays twice and gets no
second answer.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot import texts
from bot.filters import IsOperator
from bot.messaging import actor_of, refuse_non_operator, reply
from bot.middlewares import person_of
from bot.outbox import Outbox
from games.parsing import ParseError, parse_adjust
from storage import ledger, repo
from storage.db import Database
from storage.models import LedgerKind


def setup() -> Router:
    router = Router(name="operator")
    router.message.register(adjust, Command("give", "take"), IsOperator())
    # Everyone else who tries is told so, and nothing changes.
    router.message.register(refuse_non_operator, Command("give", "take"))
    return router



async def adjust(message: Message, command: CommandObject, db: Database, outbox: Outbox) -> None:
    name = command.command.lower()
    target_msg = message.reply_to_message
    replying = target_msg is not None and not (
        target_msg.forum_topic_created is not None
        or target_msg.message_id == message.message_thread_id
    )
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
    outcome: str
    async with db.transaction() as session:
        if replied_person is not None:
            await repo.upsert_member(session, replied_person)
            member = await repo.get_member(session, replied_person.id)
        elif args.username is not None:
            member = await repo.find_member_by_username(session, args.username)
        else:
            assert args.user_id is not None
            member = await repo.get_member(session, args.user_id)
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
                fresh = await repo.get_member(session, member.user_id)
                assert fresh is not None
                outcome = texts.adjusted(fresh, move.delta, args.reason)
    reply(outbox, message, outcome)
