"""Deadlines of guess-the-price rounds and votes, and the referral credit sweep.

* `guess.close` {round_id}: close the round (if open), pay the winners, post the reveal
  (`services.guess.reveal_round`). A round's close is scheduled here too: at its
  deadline when it opens, at once (`:early`) when its last winner slot is taken.
* `vote.close` {vote_id}: close the vote (if open), post the result, freeze the post.
  `/vote close` closes it early the same way (`announce_vote`), and `/vote cancel`
  without a result: the run at the deadline then finds it closed, or cancelled, and
  does nothing; a cancelled round likewise (`command_key`).
* `invites.credit` (recurring): credit referrers whose newcomers have checked in.

Each body is idempotent: the state change is `UPDATE … WHERE state = 'open'` in the
same transaction as the payments (ledger keys name the round / newcomer), and the
announcement is recorded (`revealed_at`, `announced_at`) only once Telegram answered it.
A job does not wait for that answer (a busy pond's queue may hold it for minutes, and
shutdown would wait with it): it queues the announcement with `Outbox.post`, which
records the answer when it comes. An announcement that never went out (the process
stopped first) is made by the features' start-up step (`unannounced` below) — a retried
or handed-back run, or a restart, announces what was not announced yet, and nothing
twice once it was recorded.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from scheduler.core import Scheduler, TaskRun
from scheduler.deps import JobDeps
from scheduler.polls import close_job
from services import polls
from services.guess import reveal_round
from services.outbox import Outbox
from services.texts import games as texts
from storage import guess, invites, repo, votes
from storage.db import Database
from storage.models import Job

# A reveal or result that never went out is made at start only for what closed lately.
ANNOUNCE_WITHIN = timedelta(days=2)


def command_key(job: Job, chat_id: int, message_id: int) -> str:
    """The key an operator's undo command (`/vote close|cancel`, `/guessprice cancel`,
    `/redpacket recall`) is recorded under: a run of the game's own job, due at once,
    scheduled in the transaction that closes the game and named by the command message.
    A redelivered command finds the key taken and does nothing again; the run finds the
    game closed and does nothing — but a vote closed early whose result post was lost
    (the bot stopped first) is announced by it."""
    return f"{job}:cmd:{chat_id}:{message_id}"


async def schedule_close(
    scheduler: Scheduler, session: AsyncSession, view: guess.RoundView, chat_id: int
) -> None:
    """A new round's close at its deadline, in the caller's transaction."""
    await scheduler.schedule(
        view.closes_at,
        Job.guess_close,
        guess.close_key(view.id),
        {"round_id": view.id},
        session=session,
        chat_id=chat_id,
    )


async def close_now(
    scheduler: Scheduler, session: AsyncSession, view: guess.RoundView, chat_id: int, now: datetime
) -> None:
    """The last winner slot is taken: close now instead of at the deadline."""
    await scheduler.cancel(guess.close_key(view.id), session=session)
    await scheduler.schedule(
        now,
        Job.guess_close,
        guess.close_key(view.id) + ":early",
        {"round_id": view.id},
        session=session,
        chat_id=chat_id,
    )


def announce_vote(
    db: Database, outbox: Outbox, result: votes.Result, timezone: str, now: datetime
) -> bool:
    """Freeze a closed vote's post (final counts, no buttons) and queue its result post
    (texts in the caller's language), recorded as announced once Telegram answered it.
    False: already on its way."""
    view = result.vote

    async def mark(session: AsyncSession) -> None:
        await votes.mark_announced(session, view.id, now)

    return polls.announce(
        db,
        outbox,
        key=f"{Job.vote_close}:{view.id}",
        chat_id=view.chat_id,
        message_id=view.message_id,
        final=texts.vote_post(view, result.counts, timezone, closed=True),
        result=texts.vote_result(view, result.counts),
        mark=mark,
    )


def setup(scheduler: Scheduler, deps: JobDeps) -> None:
    async def close_guess(run: TaskRun) -> None:
        round_id = int(run.payload["round_id"])
        async with deps.db.transaction() as session:
            reveal = await guess.close_round(session, round_id, run.now)
            pond = None if reveal is None else await repo.get_pond(session, reveal.chat_id)
        if reveal is None or reveal.revealed:
            return
        with deps.language(pond.language if pond else ""):
            reveal_round(deps.db, deps.outbox, reveal, run.now)

    async def credit_referrals(run: TaskRun) -> None:
        async with deps.db.transaction() as session:
            await invites.credit_due(session, run.now)

    scheduler.register(Job.guess_close, close_guess)
    scheduler.register(Job.vote_close, close_job(deps, "vote_id", votes.close_vote, announce_vote))
    scheduler.register(Job.invite_credit, credit_referrals)
