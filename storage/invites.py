"""Personal invite links and referrals (F9). Functions over the caller's session.

A referral is recorded when a newcomer joins a pond through a member's link: not for a
bot, not for the link's owner, and not for anyone who was ever in that pond before (a
membership row exists). A newcomer is referred at most once (primary key).

The referrer is credited once — ledger key `referral:<newcomer>` — after the newcomer's
first check-in made after they joined: a `checkin` row (not a bought make-up) whose
moment (`created_at`: when its message was sent) is not before `joined_at` (when the
join happened, by Telegram's clock). A member of another pond who checked in there
before joining through the link earns the referrer nothing until they check in again.
Three ways lead there,
all through `credit_referral_after_checkin`, so which one comes first does not matter:

* a hook the check-in code can call in its unit of work
  (`credit_referral_after_checkin(session, user_id, now)`);
* `credit_due`, run by a durable recurring scheduler task (`invites.credit`, every
  minute), created the first time a referral is recorded;
* lazily, for a referrer's own newcomers, when the referrer asks for their link again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage import ledger, repo
from storage.dialect import insert_for
from storage.models import Checkin, InviteLink, LedgerKind, Membership, Referral

CREDIT_BATCH = 500


async def get_link(session: AsyncSession, chat_id: int, user_id: int) -> str | None:
    return await session.scalar(
        select(col(InviteLink.link)).where(
            col(InviteLink.chat_id) == chat_id, col(InviteLink.user_id) == user_id
        )
    )


async def save_link(
    session: AsyncSession, chat_id: int, user_id: int, link: str, name: str, now: datetime
) -> str:
    """Store the member's link; if one was stored meanwhile, that one wins (returned)."""
    await session.execute(
        insert_for(session, InviteLink)
        .values(chat_id=chat_id, user_id=user_id, link=link, name=name, created_at=now)
        .on_conflict_do_nothing()
    )
    stored = await get_link(session, chat_id, user_id)
    assert stored is not None
    return stored


async def record_join(
    session: AsyncSession, *, chat_id: int, newcomer_id: int, link: str, now: datetime
) -> int | None:
    """Record that `newcomer_id` joined through `link`; the referrer's id, or None when
    it does not count (unknown link, self-invite, was in the pond before, referred
    already). Call it before the join itself is recorded as a membership."""
    owner = await session.scalar(
        select(col(InviteLink.user_id)).where(
            col(InviteLink.chat_id) == chat_id, col(InviteLink.link) == link
        )
    )
    if owner is None or owner == newcomer_id:
        return None
    if await session.get(Membership, (chat_id, newcomer_id)) is not None:
        return None
    inserted = await session.scalar(
        insert_for(session, Referral)
        .values(newcomer_id=newcomer_id, referrer_id=owner, chat_id=chat_id, joined_at=now)
        .on_conflict_do_nothing()
        .returning(col(Referral.newcomer_id))
    )
    return int(owner) if inserted is not None else None


def _has_checked_in() -> Any:
    """The newcomer checked in after joining (the `checkin` key (user_id, day) finds
    their rows)."""
    return exists().where(
        col(Checkin.user_id) == col(Referral.newcomer_id),
        col(Checkin.makeup).is_(False),
        col(Checkin.created_at) >= col(Referral.joined_at),
    )


async def credit_referral_after_checkin(
    session: AsyncSession, user_id: int, now: datetime
) -> ledger.Movement | None:
    """Credit the referrer of `user_id` if `user_id` has checked in since joining and
    the referral is not credited yet; the movement, or None. Idempotent."""
    ref = (
        await session.execute(
            select(Referral).where(
                col(Referral.newcomer_id) == user_id,
                col(Referral.credited_at).is_(None),
                _has_checked_in(),
            )
        )
    ).scalar_one_or_none()
    if ref is None:
        return None
    claimed = await session.execute(
        update(Referral)
        .where(col(Referral.newcomer_id) == user_id, col(Referral.credited_at).is_(None))
        .values(credited_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    points = (await repo.pond_settings(session, ref.chat_id)).referral_points
    if points <= 0:
        return None
    return await ledger.award(
        session,
        user_id=ref.referrer_id,
        amount=points,
        kind=LedgerKind.referral,
        key=f"referral:{user_id}",
        chat_id=ref.chat_id,
        ref=f"newcomer {user_id}",
        now=now,
    )


async def credit_due(
    session: AsyncSession, now: datetime, *, referrer_id: int | None = None
) -> list[ledger.Movement]:
    """Credit every referral (of one referrer, or all) whose newcomer has checked in
    since joining."""
    query = select(col(Referral.newcomer_id)).where(
        col(Referral.credited_at).is_(None), _has_checked_in()
    )
    if referrer_id is not None:
        query = query.where(col(Referral.referrer_id) == referrer_id)
    newcomers = (await session.execute(query.limit(CREDIT_BATCH))).scalars().all()
    moves = []
    for newcomer in newcomers:
        move = await credit_referral_after_checkin(session, int(newcomer), now)
        if move is not None:
            moves.append(move)
    return moves


@dataclass(frozen=True, slots=True)
class ReferralStats:
    joined: int
    credited: int


async def referral_stats(session: AsyncSession, referrer_id: int, chat_id: int) -> ReferralStats:
    row = (
        await session.execute(
            select(func.count(), func.count(col(Referral.credited_at))).where(
                col(Referral.referrer_id) == referrer_id, col(Referral.chat_id) == chat_id
            )
        )
    ).one()
    return ReferralStats(int(row[0]), int(row[1]))
