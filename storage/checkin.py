"""Check-in storage: the batched check-in write, make-ups, boards and leaderboards.

The rules are in `games.checkin`; this module reads the state they need, applies their
decisions and pays through the ledger (`checkin:{user_id}:{day}` for base + streak bonus,
`checkin-milestone:{user_id}:{day}` for a milestone, `makeup:{user_id}:{day}` for the
price of a make-up).

`CheckinOp` is the fast path: a `BatchWriter` op that checks in many members in one
transaction with a handful of multi-row statements. The `checkin` row's unique
(user_id, day) key and the members' rows — locked `FOR UPDATE` on PostgreSQL, under
`BEGIN IMMEDIATE` on SQLite — make every check-in happen once, however many deliveries
of it race.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games import checkin as rules
from games.settings import PondSettings
from storage import ledger
from storage.bulk import Bulk
from storage.models import Checkin, CheckinBoard, LedgerKind, Member, Pond

CHECKIN = Checkin.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]
BOARD = CheckinBoard.__table__  # type: ignore[attr-defined]
POND = Pond.__table__  # type: ignore[attr-defined]


def checkin_key(user_id: int, day: date) -> str:
    return f"checkin:{user_id}:{day.isoformat()}"


def milestone_key(user_id: int, day: date) -> str:
    return f"checkin-milestone:{user_id}:{day.isoformat()}"


def makeup_key(user_id: int, day: date) -> str:
    return f"makeup:{user_id}:{day.isoformat()}"


@dataclass(frozen=True, slots=True)
class CheckinRequest:
    user_id: int
    chat_id: int
    day: date  # today in the pond's timezone
    now: datetime


@dataclass(frozen=True, slots=True)
class CheckinResult:
    """`reward` None: the member had already checked in (today, or a later day)."""

    user_id: int
    day: date
    reward: rules.Reward | None
    streak: int  # the member's streak now
    balance: int
    rank: int | None  # n-th check-in of the day in this pond (new check-ins only)

    @property
    def applied(self) -> bool:
        return self.reward is not None


def _lock_members(session: AsyncSession, user_ids: Sequence[int]) -> Any:
    stmt = (
        select(MEMBER.c.user_id, MEMBER.c.balance, MEMBER.c.streak, MEMBER.c.last_checkin_day)
        .where(MEMBER.c.user_id.in_(sorted(set(user_ids))))
        .order_by(MEMBER.c.user_id)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return session.execute(stmt)


def rules_for(settings: PondSettings) -> rules.Rules:
    return rules.Rules(
        base=settings.checkin_base,
        streak_step=settings.checkin_streak_step,
        streak_cap=settings.checkin_streak_cap,
        milestones=settings.checkin_milestones,
    )


async def rules_of(session: AsyncSession, chat_ids: set[int]) -> dict[int, rules.Rules]:
    """Each pond's check-in rules, from its stored settings (defaults if unknown)."""
    stored: dict[int, Any] = dict(
        (
            await session.execute(
                select(POND.c.chat_id, POND.c.settings).where(POND.c.chat_id.in_(chat_ids))
            )
        ).all()
    )
    return {c: rules_for(PondSettings.from_stored(stored.get(c))) for c in chat_ids}


class CheckinOp:
    """Check in many members in one unit of work (see the module docstring)."""

    order = 10

    async def run(
        self, session: AsyncSession, requests: Sequence[CheckinRequest]
    ) -> list[CheckinResult]:
        state: dict[int, tuple[int, int, date | None]] = {
            int(r.user_id): (int(r.balance), int(r.streak), r.last_checkin_day)
            for r in (await _lock_members(session, [q.user_id for q in requests])).all()
        }
        pond_rules = await rules_of(session, {q.chat_id for q in requests})
        decisions: list[tuple[CheckinRequest, rules.Decision | None]] = []
        for q in requests:
            if q.user_id not in state:
                decisions.append((q, None))  # unknown member: nothing to do
                continue
            balance, streak, last = state[q.user_id]
            decision = rules.decide(pond_rules[q.chat_id], last, streak, q.day)
            if decision.reward is not None:
                state[q.user_id] = (balance + decision.reward.total, decision.reward.streak,
                                    q.day)
            decisions.append((q, decision))
        new = [(q, d) for q, d in decisions if d is not None and d.reward is not None]
        ranks = await self._ranks(session, [(q.chat_id, q.day) for q, _ in new])
        if new:
            await _CHECKINS.execute(
                session,
                [
                    {
                        "user_id": q.user_id, "chat_id": q.chat_id, "day": q.day,
                        "streak": d.reward.streak, "points": d.reward.total, "makeup": False,
                        "created_at": q.now,
                    }
                    for q, d in new
                    if d.reward is not None
                ],
            )
            awards: list[ledger.Award] = []
            for q, d in new:
                assert d.reward is not None
                awards.append(ledger.Award(
                    q.user_id, d.reward.points, LedgerKind.checkin, checkin_key(q.user_id, q.day),
                    chat_id=q.chat_id, ref=f"day {d.reward.streak}",
                ))
                if d.reward.milestone:
                    awards.append(ledger.Award(
                        q.user_id, d.reward.milestone, LedgerKind.streak_bonus,
                        milestone_key(q.user_id, q.day), chat_id=q.chat_id,
                        ref=f"day {d.reward.streak}",
                    ))
            await ledger.award_many(session, awards, now=new[0][0].now)
            await _STREAKS.execute(
                session,
                [
                    {"uid": u, "new_streak": state[u][1], "new_day": state[u][2]}
                    for u in dict.fromkeys(q.user_id for q, _ in new)
                ],
            )
        results: list[CheckinResult] = []
        rank_iter = iter(ranks)
        for q, done in decisions:
            balance, streak, _last = state.get(q.user_id, (0, 0, None))
            if done is None or done.reward is None:
                results.append(CheckinResult(q.user_id, q.day, None, streak, balance, None))
                continue
            results.append(
                CheckinResult(q.user_id, q.day, done.reward, done.reward.streak, balance,
                              next(rank_iter))
            )
        return results

    @staticmethod
    async def _ranks(session: AsyncSession, ponds_days: list[tuple[int, date]]) -> list[int]:
        counts: dict[tuple[int, date], int] = {}
        for pond_day in dict.fromkeys(ponds_days):
            chat_id, day = pond_day
            counts[pond_day] = int(
                await session.scalar(
                    select(func.count())
                    .select_from(CHECKIN)
                    .where(CHECKIN.c.chat_id == chat_id, CHECKIN.c.day == day)
                )
                or 0
            )
        ranks = []
        for pond_day in ponds_days:
            counts[pond_day] += 1
            ranks.append(counts[pond_day])
        return ranks


_CHECKINS = Bulk(
    lambda _dialect: insert(CHECKIN),
    ["user_id", "chat_id", "day", "streak", "points", "makeup", "created_at"],
)
_STREAKS = Bulk(
    lambda _dialect: update(MEMBER)
    .where(MEMBER.c.user_id == bindparam("uid"))
    .values(streak=bindparam("new_streak"), last_checkin_day=bindparam("new_day")),
    ["uid", "new_streak", "new_day"],
)

CHECKIN_OP = CheckinOp()


# -- make-up -----------------------------------------------------------------------------


class MakeupError(Exception):
    def __init__(self, code: str, *, balance: int = 0, cost: int = 0) -> None:
        super().__init__(code)
        self.code = code  # nothing_to_make_up | used_recently | not_enough_points | unknown
        self.balance = balance
        self.cost = cost


@dataclass(frozen=True, slots=True)
class MakeupResult:
    day: date
    streak: int
    cost: int
    balance: int


async def makeup(
    session: AsyncSession,
    *,
    user_id: int,
    chat_id: int,
    today: date,
    timezone: str,
    cost: int,
    window: int,
    every_days: int,
    now: datetime,
) -> MakeupResult:
    """Buy a make-up check-in for the most recent missed day (see games.checkin)."""
    row = (await _lock_members(session, [user_id])).first()
    if row is None:
        raise MakeupError("unknown")
    # Days far enough back to rebuild any streak that reaches into the window.
    days = [
        d
        for (d,) in (
            await session.execute(
                select(CHECKIN.c.day).where(CHECKIN.c.user_id == user_id).order_by(CHECKIN.c.day)
            )
        ).all()
    ]
    last_bought = await session.scalar(
        select(func.max(CHECKIN.c.created_at)).where(
            CHECKIN.c.user_id == user_id, CHECKIN.c.makeup.is_(True)
        )
    )
    last_makeup_day = None
    if last_bought is not None:
        if last_bought.tzinfo is None:  # SQLite keeps no offset; values are UTC
            last_bought = last_bought.replace(tzinfo=UTC)
        last_makeup_day = rules.local_day(last_bought, timezone)
    try:
        plan = rules.plan_makeup(
            days, today, window=window, last_makeup_day=last_makeup_day, every_days=every_days
        )
    except rules.MakeupRefused as exc:
        raise MakeupError(exc.code) from exc
    try:
        move = await ledger.spend(
            session, user_id=user_id, amount=cost, kind=LedgerKind.checkin,
            key=makeup_key(user_id, plan.day), chat_id=chat_id, ref=f"makeup {plan.day}",
            now=now,
        )
    except ledger.InsufficientPoints as exc:
        raise MakeupError("not_enough_points", balance=exc.balance, cost=cost) from exc
    await session.execute(
        insert(CHECKIN).values(
            user_id=user_id, chat_id=chat_id, day=plan.day, streak=plan.streak, points=0,
            makeup=True, created_at=now,
        )
    )
    await session.execute(
        update(MEMBER)
        .where(MEMBER.c.user_id == user_id)
        .values(streak=plan.streak, last_checkin_day=plan.last_day)
    )
    return MakeupResult(plan.day, plan.streak, cost, move.balance)


# -- reading -----------------------------------------------------------------------------


async def streak_of(session: AsyncSession, user_id: int, today: date) -> int:
    row = (
        await session.execute(
            select(MEMBER.c.streak, MEMBER.c.last_checkin_day).where(MEMBER.c.user_id == user_id)
        )
    ).first()
    if row is None:
        return 0
    return rules.current_streak(row.last_checkin_day, int(row.streak), today)


@dataclass(frozen=True, slots=True)
class StreakRow:
    user_id: int
    display_name: str
    streak: int


def _display(first: str, last: str, username: str | None, user_id: int) -> str:
    name = f"{first} {last}".strip()
    return name or (f"@{username}" if username else str(user_id))


async def top_streaks(session: AsyncSession, today: date, limit: int = 10) -> list[StreakRow]:
    """Longest streaks still alive (last check-in today or yesterday)."""
    rows = (
        await session.execute(
            select(
                MEMBER.c.user_id, MEMBER.c.first_name, MEMBER.c.last_name, MEMBER.c.username,
                MEMBER.c.streak,
            )
            .where(
                MEMBER.c.last_checkin_day >= today - timedelta(days=1),
                MEMBER.c.streak > 0,
                MEMBER.c.is_bot.is_(False),
            )
            .order_by(MEMBER.c.streak.desc(), MEMBER.c.last_checkin_day, MEMBER.c.user_id)
            .limit(limit)
        )
    ).all()
    return [
        StreakRow(int(r.user_id), _display(r.first_name, r.last_name, r.username, r.user_id),
                  int(r.streak))
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class BoardView:
    chat_id: int
    message_id: int | None
    day: date
    count: int  # check-ins in this pond on `today`
    latest: list[str]  # display names, newest first


async def board_view(
    session: AsyncSession, chat_id: int, today: date, latest: int = 5
) -> BoardView | None:
    board = await session.get(CheckinBoard, chat_id)
    if board is None:
        return None
    count = await session.scalar(
        select(func.count()).select_from(CHECKIN)
        .where(CHECKIN.c.chat_id == chat_id, CHECKIN.c.day == today)
    )
    rows = (
        await session.execute(
            select(MEMBER.c.user_id, MEMBER.c.first_name, MEMBER.c.last_name, MEMBER.c.username)
            .select_from(CHECKIN.join(MEMBER, MEMBER.c.user_id == CHECKIN.c.user_id))
            .where(CHECKIN.c.chat_id == chat_id, CHECKIN.c.day == today,
                   CHECKIN.c.makeup.is_(False))
            .order_by(CHECKIN.c.id.desc())
            .limit(latest)
        )
    ).all()
    return BoardView(
        chat_id, board.message_id, board.day, int(count or 0),
        [_display(r.first_name, r.last_name, r.username, r.user_id) for r in rows],
    )


async def claim_board(
    session: AsyncSession,
    chat_id: int,
    today: date,
    *,
    posted_by: int | None,
    now: datetime,
    force: bool = False,
) -> bool:
    """Claim the right to post a board. An operator's post always may (it replaces the
    stored board); the bot's own post only when the pond has no board from today (or,
    with `force`, when the stored board's message is gone)."""
    board = await session.get(CheckinBoard, chat_id)
    if board is None:
        session.add(CheckinBoard(chat_id=chat_id, message_id=None, day=today,
                                 posted_by=posted_by, posted_at=now))
        await session.flush()
        return True
    if posted_by is None and board.day >= today and not force:
        return False
    board.day = today
    board.posted_by = posted_by
    board.posted_at = now
    session.add(board)
    await session.flush()
    return True


async def board_posted(session: AsyncSession, chat_id: int, message_id: int) -> int | None:
    """Store the message id of the board just posted; returns the one it replaces."""
    old = await session.scalar(select(col(CheckinBoard.message_id))
                               .where(col(CheckinBoard.chat_id) == chat_id))
    await session.execute(
        update(BOARD).where(BOARD.c.chat_id == chat_id).values(message_id=message_id)
    )
    return int(old) if old is not None and old != message_id else None

