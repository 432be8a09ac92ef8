"""Undo (撤销): operators take a game back.

    /vote close [id]         close the pond's open vote now, with its result post
    /vote cancel [id]        close it without a result (ballots kept, points paid stay paid)
    /guessprice cancel       cancel the open round: nobody wins, no prize, the price secret
    /redpacket recall <id>   take a packet back; a member's unclaimed points go back to them

`/vote close` and `/vote cancel` take the pond's most recent open vote, or the one whose
id is given (a pond may run several). Every command answers with what it did; bad
arguments get the usage line and change nothing; members are refused (a member may
recall their own packet).

Each command is recorded, in the transaction that closes the game, as a run of the
game's own job due at once, named by the command message
(`scheduler.games.command_key`): a redelivered command finds the key taken and stays
silent. The run — and the scheduled close at the deadline, or the packet's expiry — then
finds the game closed and does nothing more: no second result, no reveal, no second
refund (the refund's ledger key is the expiry's).
"""

from __future__ import annotations

from aiogram import Bot, F
from aiogram.filters import Command, CommandObject
from aiogram.methods import EditMessageText
from aiogram.types import Message

from games.parsing import fold
from scheduler import games as jobs
from scheduler.core import Scheduler
from services.guess import show_cancelled
from services.messaging import reply
from services.middlewares import PondInfo
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.red_packets import GROUPS, MAX_ID, RedPackets
from services.texts import games as texts
from services.texts import red_packet as packet_texts
from storage import guess, repo, votes
from storage.db import Database
from storage.models import Job

VOTE_UNDO = Command("vote", magic=F.args.regexp(r"(?i)^\s*(close|cancel)\b"))
GUESS_CANCEL = Command("guessprice", magic=F.args.regexp(r"(?i)^\s*cancel\b"))
RECALL = Command("redpacket", magic=F.args.regexp(r"(?i)^\s*recall\b"))


def parse_id(text: str) -> int | None:
    """A game's id as operators type it: `12` or `#12` (full-width digits too)."""
    digits = fold(text).removeprefix("#")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        return None
    number = int(digits)
    return number if 0 < number <= MAX_ID else None


def _words(command: CommandObject) -> list[str]:
    return fold(command.args or "").split()


async def _replayed(scheduler: Scheduler, key: str) -> bool:
    """Whether the command message `key` names was carried out before."""
    return await scheduler.state_of(key) is not None


async def vote_undo(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
) -> None:
    """`/vote close [id]`, `/vote cancel [id]`."""
    if pond is None:
        reply(outbox, message, texts.groups_only())
        return
    words = _words(command)
    action = words[0].lower() if words else ""
    vote_id = parse_id(words[1]) if len(words) == 2 else None
    if action not in ("close", "cancel") or len(words) > 2 or (len(words) == 2 and not vote_id):
        reply(outbox, message, texts.usage_vote_undo())
        return
    key = jobs.command_key(Job.vote_close, message.chat.id, message.message_id)
    if await _replayed(scheduler, key):
        return
    now = scheduler.clock()
    result: votes.Result | None = None
    async with db.transaction() as session:
        view = await votes.open_vote_of(session, pond.chat_id, vote_id)
        if view is not None:
            payload = {"vote_id": view.id}
            if not await scheduler.schedule(
                now, Job.vote_close, key, payload, session=session, chat_id=pond.chat_id
            ):
                return  # the same command, delivered twice at once
            if action == "close":
                result = await votes.close_vote(session, view.id, now)
            else:
                result = await votes.cancel_vote(session, view.id, now)
    if result is None or not result.closed_now:
        reply(outbox, message, texts.no_open_vote(vote_id))
        return
    if action == "close":
        # Exactly what the close at the deadline does; that run will find it closed.
        jobs.announce_vote(db, outbox, result, pond.timezone, now)
        reply(outbox, message, texts.vote_closed_early(result.vote, result.counts))
        return
    closed = result.vote
    if closed.message_id is not None:  # else its post, when recorded, is edited so
        outbox.board(
            f"vote:{closed.id}",
            EditMessageText(
                chat_id=closed.chat_id,
                message_id=closed.message_id,
                text=texts.vote_cancelled_post(closed),
            ),
        )
    reply(outbox, message, texts.vote_cancelled(closed, result.counts))


async def guess_cancel(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
) -> None:
    """`/guessprice cancel`."""
    if pond is None:
        reply(outbox, message, texts.groups_only())
        return
    if [w.lower() for w in _words(command)] != ["cancel"]:
        reply(outbox, message, texts.usage_guess_cancel())
        return
    key = jobs.command_key(Job.guess_close, message.chat.id, message.message_id)
    if await _replayed(scheduler, key):
        return
    now = scheduler.clock()
    cancelled: guess.RoundView | None = None
    async with db.transaction() as session:
        view = await guess.open_round_of(session, pond.chat_id)
        if view is not None:
            payload = {"round_id": view.id}
            if not await scheduler.schedule(
                now, Job.guess_close, key, payload, session=session, chat_id=pond.chat_id
            ):
                return  # the same command, delivered twice at once
            cancelled = await guess.cancel_round(session, view.id, now)
    if cancelled is None:
        reply(outbox, message, texts.no_round())
        return
    show_cancelled(outbox, cancelled)
    reply(outbox, message, texts.round_cancelled(cancelled))


class Recall:
    """`/redpacket recall <id>` over the red packets' machinery (whose memory of closed
    packets must learn of the recall at once: `RedPackets.recall`)."""

    def __init__(self, packets: RedPackets) -> None:
        self.packets = packets

    async def recall(
        self,
        message: Message,
        command: CommandObject,
        bot: Bot,
        db: Database,
        outbox: Outbox,
        operators: OperatorPolicy,
        scheduler: Scheduler,
        person: repo.UserInfo | None,
        pond: PondInfo | None,
    ) -> None:
        chat = message.chat
        if chat.type not in GROUPS:
            reply(outbox, message, packet_texts.groups_only())
            return
        words = _words(command)
        packet_id = parse_id(words[1]) if len(words) == 2 else None
        if packet_id is None:
            reply(outbox, message, packet_texts.usage_recall())
            return
        operator = await operators.is_operator(bot, chat, message.from_user, message.sender_chat)
        if not operator and person is None:
            reply(outbox, message, packet_texts.recall_not_allowed())
            return
        key = jobs.command_key(Job.red_packet_expire, chat.id, message.message_id)
        if await _replayed(scheduler, key):
            return
        done = await self.packets.recall(
            db,
            scheduler,
            packet_id=packet_id,
            chat_id=chat.id,
            user_id=person.id if person is not None else None,
            operator=operator,
            key=key,
        )
        if done.kind == "replay":
            return
        if done.kind == "recalled":
            assert done.card is not None
            timezone = pond.timezone if pond is not None else ""
            self.packets.show(outbox, done.card, timezone)  # who got what; no button
            text = packet_texts.recalled(done.card)
        elif done.kind == "closed":
            assert done.card is not None
            text = packet_texts.recall_closed(done.card)
        elif done.kind == "not_allowed":
            text = packet_texts.recall_not_allowed()
        else:
            text = packet_texts.recall_unknown(packet_id)
        reply(outbox, message, text)
