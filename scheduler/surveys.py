"""A survey's deadline (F10): `survey.close` {survey_id} closes it (if open), freezes
its post with the final counts and posts the result — exactly like a vote's close
(scheduler/games.py): the state change is `UPDATE … WHERE state = 'open'`, the result is
recorded (`announced_at`) only once Telegram answered it, and a result that never went
out is posted by the start-up step of handlers/survey.py.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from scheduler.core import Scheduler
from scheduler.deps import JobDeps
from scheduler.polls import close_job
from services import polls
from services.outbox import Outbox
from services.texts import surveys as texts
from storage import surveys
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
    scheduler.register(
        Job.survey_close, close_job(deps, "survey_id", surveys.close_survey, announce_survey)
    )
