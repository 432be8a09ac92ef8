"""Repositories for ponds, members and memberships.

Plain functions over the caller's session; none of them commits. Upserts are written
for both SQLite and PostgreSQL (`ON CONFLICT` exists in both dialects).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games.checkin import local_day
from games.people import UserInfo as UserInfo  # re-exported: storage names people repo.UserInfo
from games.settings import PondSettings
from storage.dialect import insert_for
from storage.models import (
    SERVED_TRUST,
    Member,
    Membership,
    OperatorGiveDay,
    Pond,
    PondStatus,
    PondTrust,
    SaleCampaign,
    SalesPlan,
    utcnow,
)
from storage.settings import Fallback, pond_defaults


@dataclass(frozen=True, slots=True)
class MemberView:
    user_id: int
    username: str | None
    display_name: str
    balance: int
    lifetime_earned: int
    streak: int
    tier: str


def _view(m: Member) -> MemberView:
    return MemberView(
        m.user_id, m.username, m.display_name, m.balance, m.lifetime_earned, m.streak, m.tier
    )


async def _upsert(
    session: AsyncSession,
    table: Table,
    values: dict[str, Any],
    key: list[str],
    update_cols: list[str],
) -> None:
    stmt = insert_for(session, table).values(**values)
    if update_cols:
        stmt = stmt.on_conflict_do_update(
            index_elements=key, set_={c: getattr(stmt.excluded, c) for c in update_cols}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=key)
    await session.execute(stmt)


def member_row(user: UserInfo, now: datetime) -> dict[str, Any]:
    """The `member` row for a person seen for the first time."""
    username = user.username or None
    return {
        "user_id": user.id,
        "username": username,
        "username_lower": username.lower() if username else None,
        "first_name": user.first_name[:128],
        "last_name": (user.last_name or "")[:128],
        "language_code": user.language_code,
        "is_bot": user.is_bot,
        "balance": 0,
        "lifetime_earned": 0,
        "streak": 0,
        "tier": "",
        "lifetime_spent_cents": 0,
        "dm_linked": False,
        "created_at": now,
        "updated_at": now,
    }


MEMBER_COLUMNS = ["user_id", "username", "username_lower", "first_name", "last_name",
                  "language_code", "is_bot", "balance", "lifetime_earned", "streak", "tier",
                  "lifetime_spent_cents", "dm_linked", "created_at", "updated_at"]

# What a later sighting refreshes (display names are kept fresh).
MEMBER_REFRESH = ["username", "username_lower", "first_name", "last_name", "language_code",
                  "updated_at"]


async def upsert_member(session: AsyncSession, user: UserInfo, now: datetime | None = None) -> None:
    """Record a member or refresh their names."""
    await _upsert(
        session,
        Member.__table__,  # type: ignore[attr-defined]
        member_row(user, now or utcnow()),
        ["user_id"],
        MEMBER_REFRESH,
    )


async def link_dm(session: AsyncSession, user_id: int, *, linked: bool = True) -> None:
    """Whether the bot may write to the member privately (they started it, and have not
    blocked it since)."""
    await session.execute(
        update(Member).where(Member.user_id == user_id).values(dm_linked=linked)  # type: ignore[arg-type]
    )


async def touch_membership(
    session: AsyncSession,
    chat_id: int,
    user_id: int,
    *,
    status: str | None = None,
    now: datetime | None = None,
) -> None:
    """Mark a member as seen in a pond; with `status`, record a join/leave/promotion."""
    now = now or utcnow()
    values: dict[str, Any] = {
        "chat_id": chat_id,
        "user_id": user_id,
        "status": status or "member",
        "first_seen_at": now,
        "last_seen_at": now,
        "joined_at": now if status in (None, "member", "administrator", "creator") else None,
        "left_at": now if status in ("left", "kicked") else None,
    }
    cols = ["last_seen_at"]
    if status is not None:
        cols.append("status")
        cols.append("left_at" if status in ("left", "kicked") else "joined_at")
    await _upsert(session, Membership.__table__, values, ["chat_id", "user_id"], cols)  # type: ignore[attr-defined]


async def upsert_pond(
    session: AsyncSession,
    chat_id: int,
    *,
    title: str,
    chat_type: str,
    status: PondStatus | None = None,
    default_timezone: str = "Asia/Shanghai",
    default_language: str = "zh",
    now: datetime | None = None,
) -> None:
    now = now or utcnow()
    values: dict[str, Any] = {
        "chat_id": chat_id,
        "title": title[:255],
        "chat_type": chat_type,
        "status": str(status or PondStatus.active),
        # A new pond starts with the shop-wide defaults (see storage.settings).
        **await pond_defaults(session, Fallback(default_timezone, default_language)),
        "created_at": now,
        "updated_at": now,
    }
    cols = ["title", "chat_type", "updated_at"]
    if status is not None:
        cols.append("status")
    await _upsert(session, Pond.__table__, values, ["chat_id"], cols)  # type: ignore[attr-defined]


async def set_pond_status(
    session: AsyncSession, chat_id: int, status: PondStatus, now: datetime | None = None
) -> None:
    await session.execute(
        update(Pond)
        .where(Pond.chat_id == chat_id)  # type: ignore[arg-type]
        .values(status=str(status), updated_at=now or utcnow())
    )


async def get_pond(session: AsyncSession, chat_id: int) -> Pond | None:
    return await session.get(Pond, chat_id)


async def migrate_pond(
    session: AsyncSession, old_chat_id: int, new_chat_id: int, now: datetime | None = None
) -> None:
    """A group became a supergroup: the pond, its memberships, its campaigns and plans
    move to the new id.

    The old row stays (status `migrated`, `migrated_to` set) so ledger history that names
    the old id still resolves. Idempotent: both service messages may arrive, twice.
    """
    now = now or utcnow()
    old = await session.get(Pond, old_chat_id)
    if old is None:
        return
    new_exists = await session.get(Pond, new_chat_id)
    if new_exists is None:
        session.add(
            Pond(
                chat_id=new_chat_id,
                title=old.title,
                chat_type="supergroup",
                status=PondStatus.active if old.status != PondStatus.inactive else old.status,
                timezone=old.timezone,
                language=old.language,
                settings=old.settings,
                trust=old.trust,
                trusted_by=old.trusted_by,
                trust_changed_at=old.trust_changed_at,
                stranger_notice_at=old.stranger_notice_at,
                created_at=old.created_at,
                updated_at=now,
            )
        )
        await session.flush()
    elif old.trust in SERVED_TRUST and new_exists.trust not in SERVED_TRUST | {PondTrust.revoked}:
        # The new chat may have been seen (and judged on its own admins) first: the pond
        # keeps the trust it had, as it keeps everything else.
        new_exists.trust = old.trust
        new_exists.trusted_by = old.trusted_by
        new_exists.trust_changed_at = now
        session.add(new_exists)
    if old.status != PondStatus.migrated or old.migrated_to != new_chat_id:
        old.status = PondStatus.migrated
        old.migrated_to = new_chat_id
        old.updated_at = now
        session.add(old)
    # Move memberships not yet present under the new id; drop the duplicates.
    moved = (
        (
            await session.execute(
                select(Membership).where(Membership.chat_id == old_chat_id)  # type: ignore[arg-type]
            )
        )
        .scalars()
        .all()
    )
    for m in moved:
        values = m.model_dump()
        values["chat_id"] = new_chat_id
        await _upsert(session, Membership.__table__, values, ["chat_id", "user_id"], [])  # type: ignore[attr-defined]
        await session.delete(m)
    # What the pond's operators set up goes with it: its sale campaigns (a name already
    # set up under the new id keeps that one) and its plans, the history with them.
    taken = select(col(SaleCampaign.name)).where(col(SaleCampaign.scope) == new_chat_id)
    await session.execute(
        update(SaleCampaign)
        .where(col(SaleCampaign.scope) == old_chat_id, col(SaleCampaign.name).not_in(taken))
        .values(scope=new_chat_id)
    )
    await session.execute(
        update(SalesPlan).where(col(SalesPlan.chat_id) == old_chat_id).values(chat_id=new_chat_id)
    )
    await session.flush()


async def pond_chat_ids(session: AsyncSession, chat_id: int) -> tuple[int, ...]:
    """The chat ids a pond's rows may carry: its own, then those of the groups that became
    it (a group upgraded to a supergroup, maybe twice over)."""
    ids = [chat_id]
    newer = [chat_id]
    while newer:
        older = (
            await session.scalars(
                select(col(Pond.chat_id)).where(col(Pond.migrated_to).in_(newer))
            )
        ).all()
        newer = [int(i) for i in older if i not in ids]
        ids += newer
    return tuple(ids)


async def get_member(session: AsyncSession, user_id: int) -> MemberView | None:
    m = await session.get(Member, user_id)
    return _view(m) if m else None


async def find_member_by_username(session: AsyncSession, username: str) -> MemberView | None:
    name = username.lstrip("@").lower()
    if not name:
        return None
    m = (
        (
            await session.execute(select(Member).where(Member.username_lower == name))  # type: ignore[arg-type]
        )
        .scalars()
        .first()
    )
    return _view(m) if m else None


async def named_member(
    session: AsyncSession,
    *,
    replied: UserInfo | None = None,
    username: str | None = None,
    user_id: int | None = None,
) -> MemberView | None:
    """The member an operator's command names: the author of the message it replies to
    (recorded now if new), else by @username, else by user id."""
    if replied is not None:
        await upsert_member(session, replied)
        return await get_member(session, replied.id)
    if username is not None:
        return await find_member_by_username(session, username)
    assert user_id is not None, "a command names its member one way or another"
    return await get_member(session, user_id)


# -- ranks (SPEC F2) -----------------------------------------------------------------------
#
# Balances are shop-wide, but ranks and leaderboards in a pond are among that pond's
# members: those with a seat row for the chat that did not leave. The seat's primary key
# (chat_id, user_id) finds them; each is then one member row by its primary key.

GONE = ("left", "kicked")


def pond_members(query: Select[Any], chat_id: int) -> Select[Any]:
    """`query` over the `member` table, narrowed to the members of pond `chat_id`."""
    seat = Membership.__table__  # type: ignore[attr-defined]
    member = Member.__table__  # type: ignore[attr-defined]
    return query.join(seat, seat.c.user_id == member.c.user_id).where(
        seat.c.chat_id == chat_id, seat.c.status.not_in(GONE)
    )


async def top_members(
    session: AsyncSession, limit: int = 10, *, chat_id: int | None = None
) -> list[MemberView]:
    """The members with the most points: in pond `chat_id`, or shop-wide."""
    query = select(Member)
    if chat_id is not None:
        query = pond_members(query, chat_id)
    rows = (
        (
            await session.execute(
                query.where(col(Member.is_bot).is_(False), col(Member.balance) > 0)
                .order_by(col(Member.balance).desc(), col(Member.user_id))
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    return [_view(m) for m in rows]


async def rank_of(session: AsyncSession, user_id: int, *, chat_id: int | None = None
                  ) -> int | None:
    """1-based rank by balance among members with points (bots aside, as in
    `top_members`): in pond `chat_id`, or shop-wide; None without points."""
    balance = await session.scalar(
        select(col(Member.balance)).where(col(Member.user_id) == user_id)
    )
    if not balance:
        return None
    query = select(func.count()).select_from(Member)
    if chat_id is not None:
        query = pond_members(query, chat_id)
    higher = await session.scalar(
        query.where(col(Member.balance) > balance, col(Member.is_bot).is_(False))
    )
    return int(higher or 0) + 1


async def pond_settings(session: AsyncSession, chat_id: int) -> PondSettings:
    """The pond's settings (defaults for a pond we don't know)."""
    stored = await session.scalar(select(col(Pond.settings)).where(col(Pond.chat_id) == chat_id))
    return PondSettings.from_stored(stored)


async def change_pond_settings(
    session: AsyncSession, chat_id: int, now: datetime | None = None, **changes: Any
) -> PondSettings:
    """Validate and store changes (raises pydantic's `ValidationError` on bad values)."""
    current = await pond_settings(session, chat_id)
    new = current.changed(**changes)
    await session.execute(
        update(Pond)
        .where(col(Pond.chat_id) == chat_id)
        .values(settings=new.overrides(), updated_at=now or utcnow())
    )
    return new


# -- trust boundary (SPEC F1) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PondRecord:
    """A group as `/ponds` lists it."""

    chat_id: int
    title: str
    status: str
    trust: str
    trusted_by: int | None
    migrated_to: int | None

    @property
    def served(self) -> bool:
        return self.status == PondStatus.active and self.trust in SERVED_TRUST


def _record(p: Pond) -> PondRecord:
    return PondRecord(p.chat_id, p.title, p.status, p.trust, p.trusted_by, p.migrated_to)


async def pond_record(session: AsyncSession, chat_id: int) -> PondRecord | None:
    p = await session.get(Pond, chat_id)
    return _record(p) if p else None


async def list_ponds(session: AsyncSession) -> list[PondRecord]:
    """Every group the bot knows, except the old ids of groups that became supergroups."""
    rows = (
        await session.scalars(
            select(Pond)
            .where(col(Pond.status) != PondStatus.migrated)
            .order_by(col(Pond.title), col(Pond.chat_id))
        )
    ).all()
    return [_record(p) for p in rows]


async def unchecked_ponds(session: AsyncSession) -> list[int]:
    """Active groups whose trust was never decided (ponds from before the boundary)."""
    rows = await session.scalars(
        select(col(Pond.chat_id)).where(
            col(Pond.status) == PondStatus.active, col(Pond.trust) == PondTrust.unchecked
        ).order_by(col(Pond.chat_id))
    )
    return list(rows.all())


async def set_trust(
    session: AsyncSession,
    chat_id: int,
    trust: PondTrust,
    *,
    only_from: frozenset[PondTrust] | None = None,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> bool:
    """Set the pond's trust; with `only_from`, only when it is in one of those states (a
    check decided outside the transaction never overrides an approval or a revocation
    made meanwhile). True when the row changed."""
    stmt = update(Pond).where(col(Pond.chat_id) == chat_id, col(Pond.trust) != str(trust))
    if only_from is not None:
        stmt = stmt.where(col(Pond.trust).in_([str(t) for t in only_from]))
    values: dict[str, Any] = {"trust": str(trust), "trust_changed_at": now or utcnow()}
    if actor_id is not None or trust in (PondTrust.approved, PondTrust.revoked):
        values["trusted_by"] = actor_id
    result = await session.execute(stmt.values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def claim_stranger_notice(
    session: AsyncSession, chat_id: int, now: datetime | None = None
) -> bool:
    """True exactly once per group, across restarts and processes: whoever gets True
    says that the group is not a pond."""
    result = await session.execute(
        update(Pond)
        .where(col(Pond.chat_id) == chat_id, col(Pond.stranger_notice_at).is_(None))
        .values(stranger_notice_at=now or utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


class OverAllowance(Exception):
    """A pond operator's award would pass today's `operator_give_daily_cap`. Raised
    inside the award's transaction, so that the award rolls back with it."""

    def __init__(self, left: int, cap: int) -> None:
        super().__init__(left, cap)
        self.left, self.cap = left, cap


async def spend_operator_allowance(
    session: AsyncSession, chat_id: int, actor_id: int, points: int, *, timezone: str,
    now: datetime,
) -> int:
    """Count what a pond's own operator hands out of the shop's points — a `/give`, a
    shop-funded red packet — against their cap for the pond's local day; the points left
    today, or `OverAllowance`. Global operators are not counted (the caller decides)."""
    day = local_day(now, timezone)
    cap = (await pond_settings(session, chat_id)).operator_give_daily_cap
    left = await take_give_allowance(session, chat_id, actor_id, day, points, cap)
    if left is None:
        raise OverAllowance(await give_allowance_left(session, chat_id, actor_id, day, cap), cap)
    return left


async def take_give_allowance(
    session: AsyncSession, chat_id: int, actor_id: int, day: date, amount: int, cap: int
) -> int | None:
    """Count `amount` against what `actor_id` may give in the pond on `day`: the points
    left afterwards, or None (nothing counted) when it would pass `cap`.

    One conditional `UPDATE … WHERE given + :n <= :cap` on the day's row, so two gives
    racing on PostgreSQL cannot both slip under the cap (SQLite writers take turns).
    """
    key = {"chat_id": chat_id, "actor_id": actor_id, "day": day}
    await _upsert(session, OperatorGiveDay.__table__, {**key, "given": 0}, list(key), [])  # type: ignore[attr-defined]
    where = [getattr(OperatorGiveDay, k) == v for k, v in key.items()]
    given = col(OperatorGiveDay.given)
    result = await session.execute(
        update(OperatorGiveDay)
        .where(*where, given + amount <= cap)
        .values(given=given + amount)
        .returning(given)
    )
    after = result.scalar_one_or_none()
    return None if after is None else cap - int(after)


async def give_allowance_left(
    session: AsyncSession, chat_id: int, actor_id: int, day: date, cap: int
) -> int:
    given = await session.scalar(
        select(col(OperatorGiveDay.given)).where(
            col(OperatorGiveDay.chat_id) == chat_id,
            col(OperatorGiveDay.actor_id) == actor_id,
            col(OperatorGiveDay.day) == day,
        )
    )
    return max(0, cap - int(given or 0))
