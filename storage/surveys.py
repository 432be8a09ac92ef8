"""Surveys (问卷, F10): open, answer (or change the answer), close; the members'
profiles; `pondbot export profiles`. Functions over the caller's session.

A survey works like a vote (storage/votes.py): one answer row per member and survey
(primary key survey_id + user_id; a change moves it, so the counts — always counted from
the answers — stay exact), the points paid by a ledger key naming the survey and the
member (`survey:<id>:<user>`: paid once however often the member changes their answer,
presses again or the press is delivered twice). Every answer also sets the member's
profile under the survey's key, in the same transaction: the latest answer wins.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games.surveys import SurveyArgs
from storage import polls
from storage.db import Database
from storage.dialect import insert_for
from storage.models import LedgerKind, MemberProfile, Survey, SurveyAnswer
from storage.posts import closed_unannounced

SURVEY = Survey.__table__  # type: ignore[attr-defined]
ANSWER = SurveyAnswer.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class SurveyView:
    id: int
    chat_id: int
    key: str
    question: str
    options: tuple[str, ...]
    points: int
    state: str
    message_id: int | None
    closes_at: datetime


def _view(s: Survey) -> SurveyView:
    assert s.id is not None
    return SurveyView(
        s.id, s.chat_id, s.key, s.question, tuple(s.options), s.points, s.state,
        s.message_id, s.closes_at,
    )


@dataclass(frozen=True, slots=True)
class Opened:
    kind: str  # opened | replay
    survey: SurveyView


async def open_survey(
    session: AsyncSession,
    *,
    chat_id: int,
    source_key: str,
    args: SurveyArgs,
    points: int,
    opened_by: int | None,
    now: datetime,
) -> Opened:
    seen = await polls.by_source(session, Survey, source_key)
    if seen is not None:
        return Opened("replay", _view(seen))
    row = Survey(
        chat_id=chat_id,
        source_key=source_key,
        key=args.key,
        question=args.vote.question,
        options=list(args.vote.options),
        points=points,
        opened_by=opened_by,
        opened_at=now,
        closes_at=now + args.vote.duration,
    )
    session.add(row)
    await session.flush()
    return Opened("opened", _view(row))


async def set_message(session: AsyncSession, survey_id: int, message_id: int) -> None:
    """Store the post's message id, from Telegram's answer to the post (only then)."""
    await polls.set_message(session, SURVEY, survey_id, message_id)


async def unposted(session: AsyncSession, now: datetime) -> list[SurveyView]:
    """Open surveys whose post never went out (or whose answer was never recorded)."""
    return [_view(s) for s in await polls.unposted(session, Survey, now)]


async def tally(session: AsyncSession, survey_id: int, options: int) -> list[int]:
    return await polls.tally(session, ANSWER, "survey_id", survey_id, options)


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str  # not_found | not_ready | closed | bad_option | same | answered | changed
    survey: SurveyView | None = None
    counts: tuple[int, ...] = ()
    option: int = 0
    paid: int = 0  # points paid by this press (0 after the first answer)


async def answer(
    session: AsyncSession,
    *,
    survey_id: int,
    chat_id: int,
    message_id: int | None,
    user_id: int,
    option: int,
    now: datetime,
    genuine: bool = False,
) -> Answer:
    """A member's press on option `option` of the survey whose post is `message_id` in
    `chat_id` (checked like a vote's: `storage.polls.refusal`)."""
    row = await session.get(Survey, survey_id)
    refused = polls.refusal(
        row, chat_id=chat_id, message_id=message_id, option=option, now=now, genuine=genuine
    )
    if refused is not None:
        return Answer(refused, None if row is None or refused == "not_found" else _view(row))
    assert row is not None
    view = _view(row)
    before = await polls.answered(session, ANSWER, "survey_id", survey_id, user_id)
    if before == option:
        return Answer("same", view, option=option)
    stmt = insert_for(session, SurveyAnswer).values(
        survey_id=survey_id, user_id=user_id, option=option, answered_at=now
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["survey_id", "user_id"],
            set_={"option": stmt.excluded.option, "answered_at": stmt.excluded.answered_at},
        )
    )
    await set_profile(session, user_id, row.key, row.options[option], survey_id, now)
    paid = await polls.pay_once(
        session, row, user_id=user_id, kind=LedgerKind.survey,
        key=f"survey:{survey_id}:{user_id}", now=now,
    )
    counts = await tally(session, survey_id, len(row.options))
    kind = "changed" if before is not None else "answered"
    return Answer(kind, view, tuple(counts), option, paid)


async def set_profile(
    session: AsyncSession, user_id: int, key: str, value: str, survey_id: int | None,
    now: datetime,
) -> None:
    """The member's profile entry `key` becomes `value` (the latest answer wins)."""
    stmt = insert_for(session, MemberProfile).values(
        user_id=user_id, key=key, value=value, survey_id=survey_id, answered_at=now
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["user_id", "key"],
            set_={
                "value": stmt.excluded.value,
                "survey_id": stmt.excluded.survey_id,
                "answered_at": stmt.excluded.answered_at,
            },
        )
    )


async def profile(session: AsyncSession, user_id: int) -> dict[str, str]:
    rows = await session.execute(
        select(col(MemberProfile.key), col(MemberProfile.value))
        .where(col(MemberProfile.user_id) == user_id)
        .order_by(col(MemberProfile.key))
    )
    return {k: v for k, v in rows.all()}


@dataclass(frozen=True, slots=True)
class Result:
    survey: SurveyView
    counts: tuple[int, ...]
    closed_now: bool
    announced: bool

    @property
    def chat_id(self) -> int:
        return self.survey.chat_id


async def close_survey(session: AsyncSession, survey_id: int, now: datetime) -> Result | None:
    """Close the survey (if open) and count it; None for an unknown survey. Safe to repeat."""
    row, closed_now = await polls.close(session, Survey, survey_id, now)
    if row is None:
        return None
    counts = await tally(session, survey_id, len(row.options))
    return Result(_view(row), tuple(counts), closed_now, row.announced_at is not None)


async def unannounced(session: AsyncSession, since: datetime) -> list[int]:
    """Surveys closed since `since` whose result post was never recorded as sent."""
    return await closed_unannounced(session, SURVEY, "announced_at", since)


async def mark_announced(session: AsyncSession, survey_id: int, now: datetime) -> None:
    await polls.mark_announced(session, SURVEY, survey_id, now)


# -- pondbot export profiles ---------------------------------------------------------------

PROFILE_COLUMNS = ("user_id", "key", "value", "answered_at")


async def export_profiles(db: Database, out: TextIO) -> int:
    """Every member's profile entries, by member and key: `user_id,key,value,answered_at`
    (times ISO 8601 in UTC); returns the number of rows."""
    from storage.export import csv_safe

    writer = csv.writer(out)
    writer.writerow(PROFILE_COLUMNS)
    count = 0
    async with db.transaction(readonly=True) as session:
        result = await session.stream(
            select(
                col(MemberProfile.user_id), col(MemberProfile.key), col(MemberProfile.value),
                col(MemberProfile.answered_at),
            )
            .order_by(col(MemberProfile.user_id), col(MemberProfile.key))
            .execution_options(yield_per=1000)
        )
        async for row in result:
            at = row.answered_at.astimezone(UTC).isoformat()
            writer.writerow((row.user_id, csv_safe(row.key), csv_safe(row.value), at))
            count += 1
    return count
