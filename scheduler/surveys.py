"""A survey's deadline (F10): `survey.close` {survey_id} closes it (if open), freezes
its post with the final counts and posts the result — exactly like a vote's close
(scheduler/games.py): the state change is `UPDATE … WHERE state = 'open'`, the result is
recorded (`announced_at`) only once Telegram answered it, and a result that never went
out is posted by the start-up step of handlers/survey.py.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from scheduler.core import Scheduler, TaskRun
from scheduler.deps import JobDeps
from services import polls
from services.outbox import Outbox
from services.texts import surveys as texts
from storage import repo, surveys
from storage.db import Database
from storage.models import Job


def close_key(survey_id: int) -> str:
    return f"{Job.survey_close}:{survey_id}"


def announce_survey(
    db: Database, outbox: Outbox, result: surveys.Result, timezone: str, now: datetime
) -> bool:
    """Freeze a closed survey's post (final counts, no buttons) and queue its result post,
    recorded as announced once Telegram answered it. False: already on its way."""
    view = result.survey

    async def mark(session: AsyncSession) -> None:
        await surveys.mark_announced(session, view.id, now)

    return polls.announce(
        db,
        outbox,
        key=close_key(view.id),
        chat_id=view.chat_id,
        message_id=view.message_id,
        final=texts.survey_post(view, result.counts, timezone, closed=True),
        result=texts.survey_result(view, result.counts),
        mark=mark,
    )


def setup(scheduler: Scheduler, deps: JobDeps) -> None:
    async def close_survey(run: TaskRun) -> None:
        survey_id = int(run.payload["survey_id"])
        async with deps.db.transaction() as session:
            result = await surveys.close_survey(session, survey_id, run.now)
            pond = None if result is None else await repo.get_pond(session, result.survey.chat_id)
        if result is None or result.announced:
            return
        with deps.language(pond.language if pond else ""):
            announce_survey(deps.db, deps.outbox, result, pond.timezone if pond else "", run.now)

    scheduler.register(Job.survey_close, close_survey)
