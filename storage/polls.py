"""What a button poll — a vote (storage/votes.py) or a survey (storage/surveys.py) — keeps
in the database the same way, whichever table holds it.

A poll row has an id, its chat, its options, its points, a state (`open`, then
`closed`), its post's message id (stored from Telegram's answer to the post, only then),
its deadline and its result stamp; each member has one answer row per poll (primary key
poll id + user id), so the counts — always counted from those rows — stay exact however
often members change their minds. What differs (the answer row's columns, the profile a
survey's answer also sets, the ledger kind and key of the points) stays with each.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage import ledger
from storage.models import LedgerKind, Survey, Vote

P = TypeVar("P", Vote, Survey)


async def by_source(session: AsyncSession, model: type[P], source_key: str) -> P | None:
    """The poll an operator's command message (`source_key`) opened, if it did."""
    return (
        await session.execute(select(model).where(col(model.source_key) == source_key))
    ).scalar_one_or_none()


async def set_message(session: AsyncSession, table: Table, poll_id: int, message_id: int) -> None:
    """Store the post's message id, from Telegram's answer to the post (only then)."""
    await session.execute(
        update(table)
        .where(table.c.id == poll_id, table.c.message_id.is_(None))
        .values(message_id=message_id)
    )


async def unposted(session: AsyncSession, model: type[P], now: datetime) -> Sequence[P]:
    """Open polls whose post never went out (or whose answer was never recorded)."""
    rows = await session.execute(
        select(model)
        .where(
            col(model.state) == "open",
            col(model.message_id).is_(None),
            col(model.closes_at) > now,
        )
        .order_by(col(model.id))
    )
    return rows.scalars().all()


async def tally(
    session: AsyncSession, answers: Table, poll: str, poll_id: int, options: int
) -> list[int]:
    """Answers per option of the poll `poll_id` (`answers.c[poll]` names the poll)."""
    counts = [0] * options
    rows = await session.execute(
        select(answers.c.option, func.count())
        .where(answers.c[poll] == poll_id)
        .group_by(answers.c.option)
    )
    for option, n in rows.all():
        if 0 <= option < options:
            counts[option] = int(n)
    return counts


def refusal(
    row: Vote | Survey | None,
    *,
    chat_id: int,
    message_id: int | None,
    option: int,
    now: datetime,
    genuine: bool,
) -> str | None:
    """Why a member's press on option `option` of the poll `row`, on the message
    `message_id` in `chat_id`, is refused — not_found | not_ready | closed | bad_option —
    or None. The button's message must be the poll's post, in that chat: the stored one,
    or (`genuine`) a message that carries this very button (see
    `storage.red_packets._off_post`). The post's id comes only from Telegram's answer to
    the post: a press before it is stored cannot be checked ("not ready")."""
    if row is None or row.chat_id != chat_id:
        return "not_found"
    if row.message_id is None:
        return "not_ready"
    if message_id != row.message_id and not genuine:
        return "not_found"
    if row.state != "open" or now >= row.closes_at:
        return "closed"
    if not 0 <= option < len(row.options):
        return "bad_option"
    return None


async def answered(
    session: AsyncSession, answers: Table, poll: str, poll_id: int, user_id: int
) -> int | None:
    """The option the member's answer row holds (None: no answer yet)."""
    return await session.scalar(
        select(answers.c.option).where(answers.c[poll] == poll_id, answers.c.user_id == user_id)
    )


async def pay_once(
    session: AsyncSession,
    row: Vote | Survey,
    *,
    user_id: int,
    kind: LedgerKind,
    key: str,
    now: datetime,
) -> int:
    """The poll's points for the member, by the ledger key `key` (once per member and
    poll); the points paid now (0: none, or paid before)."""
    if row.points <= 0:
        return 0
    move = await ledger.award(
        session,
        user_id=user_id,
        amount=row.points,
        kind=kind,
        key=key,
        chat_id=row.chat_id,
        ref=row.question,
        now=now,
    )
    return row.points if move.applied else 0


async def close(
    session: AsyncSession, model: type[P], poll_id: int, now: datetime
) -> tuple[P | None, bool]:
    """Close the poll if open; the row as it is now (None: unknown) and whether this call
    closed it. Safe to repeat."""
    closed = await session.execute(
        update(model)
        .where(col(model.id) == poll_id, col(model.state) == "open")
        .values(state="closed", closed_at=now)
    )
    row = await session.get(model, poll_id, populate_existing=True)
    return row, closed.rowcount == 1  # type: ignore[attr-defined]


async def mark_announced(session: AsyncSession, table: Table, poll_id: int, now: datetime) -> None:
    await session.execute(update(table).where(table.c.id == poll_id).values(announced_at=now))
