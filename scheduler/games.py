"""Deadlines of guess-the-price rounds and votes, and the referral credit sweep.

* `guess.close` {round_id}: close the round (if open), pay the winners, post the reveal.
* `vote.close` {vote_id}: close the vote (if open), post the result, freeze the post.
* `invites.credit` (recurring): credit referrers whose newcomers have checked in.

Each body is idempotent: the state change is `UPDATE … WHERE state = 'open'` in the
same transaction as the payments (ledger keys name the round / newcomer), and the
announcement is recorded (`revealed_at`, `announced_at`) only after the outbox has
delivered it — a retried or handed-back run announces what was not announced yet, and
nothing twice once it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram.methods import EditMessageText, SendMessage
from aiogram.types import Message, ReplyParameters

from bot.texts import games as texts
from scheduler.core import Scheduler, TaskRun
from storage import guess, invites, repo, votes

if TYPE_CHECKING:
    from scheduler.jobs import JobDeps

GUESS_CLOSE = "guess.close"
VOTE_CLOSE = "vote.close"
CREDIT = "invites.credit"


def _replying(message_id: int | None) -> ReplyParameters | None:
    if message_id is None:
        return None
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


def setup(scheduler: Scheduler, deps: JobDeps) -> None:
    async def close_guess(run: TaskRun) -> None:
        round_id = int(run.payload["round_id"])
        async with deps.db.transaction() as session:
            reveal = await guess.close_round(session, round_id, run.now)
            pond = None if reveal is None else await repo.get_pond(session, reveal.chat_id)
        if reveal is None or reveal.revealed:
            return
        with deps.language(pond.language if pond else ""):
            text = texts.reveal(reveal)
        await deps.outbox.send(
            SendMessage(
                chat_id=reveal.chat_id, text=text, reply_parameters=_replying(reveal.message_id)
            )
        )
        async with deps.db.transaction() as session:
            await guess.mark_revealed(session, round_id, run.now)

    async def close_vote(run: TaskRun) -> None:
        vote_id = int(run.payload["vote_id"])
        async with deps.db.transaction() as session:
            result = await votes.close_vote(session, vote_id, run.now)
            pond = None if result is None else await repo.get_pond(session, result.vote.chat_id)
        if result is None or result.announced:
            return
        view = result.vote
        with deps.language(pond.language if pond else ""):
            final = texts.vote_post(view, result.counts, pond.timezone if pond else "", closed=True)
            summary = texts.vote_result(view, result.counts)
        if view.message_id is not None:
            # The post keeps the final counts and loses its buttons.
            deps.outbox.send(
                EditMessageText(chat_id=view.chat_id, message_id=view.message_id, text=final)
            )
        sent = await deps.outbox.send(
            SendMessage(
                chat_id=view.chat_id, text=summary, reply_parameters=_replying(view.message_id)
            )
        )
        assert sent is None or isinstance(sent, Message)
        async with deps.db.transaction() as session:
            await votes.mark_announced(session, vote_id, run.now)

    async def credit_referrals(run: TaskRun) -> None:
        async with deps.db.transaction() as session:
            await invites.credit_due(session, run.now)

    scheduler.register(GUESS_CLOSE, close_guess)
    scheduler.register(VOTE_CLOSE, close_vote)
    scheduler.register(CREDIT, credit_referrals)
