"""Check-in storage: the batched check-in write, make-ups, boards and leaderboards.

The rules are in `games.checkin`; this module reads the state they need, applies their
decisions and pays through the ledger (`checkin:{user_id}:{day}` for base + streak bonus,
`checkin-milestone:{user_id}:{day}` for a milestone, `makeup:{user_id}:{day}` for the
price of a make-up).

`CheckinOp` is the fast path: a `BatchWriter` op that checks in many members in one
transaction with a handful of multi-row statements. The `checkin` row's unique
(user_id, day) key and the members' rows — locked `FOR UPDATE` on PostgreSQL, under
`BEGIN IMMEDIATE` on SQLite — make every check-in happen once, however many deliveries
of it race. A check-in's day is that of the moment it was made (its message's date), so
a replay, however late, names the same day and the same keys. A `checkin` row's
`created_at` is that moment (a make-up's: when it was bought).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, cast, func, insert, literal, null, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games import checkin as rules
from games.people import display_name
from games.settings import PondSettings
from storage import ledger, repo
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
    day: date  # the pond's calendar day at `at`
    now: datetime  # when it is handled
    at: datetime | None = None  # when it was made (`games.checkin.checkin_moment`); None: now

    @property
    def moment(self) -> datetime:
        return self.now if self.at is None else self.at


@dataclass(frozen=True, slots=True)
class CheckinResult:
    """`reward` None: the member had already checked in (that day, or a later day)."""

    user_id: int
    day: date
    reward: rules.Reward | None
    streak: int  # the member's streak now
    balance: int
    rank: int | None  # n-th check-in of the day in this pond (new check-ins only)
    quiet_below: int  # the pond's `checkin_quiet_below`, read with its rules

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


async def settings_of(session: AsyncSession, chat_ids: set[int]) -> dict[int, PondSettings]:
    """Each pond's settings, in one query (defaults if unknown)."""
    stored: dict[int, Any] = dict(
        (
            await session.execute(
                select(POND.c.chat_id, POND.c.settings).where(POND.c.chat_id.in_(chat_ids))
            )
        ).all()
    )
    return {c: PondSettings.from_stored(stored.get(c)) for c in chat_ids}


async def _ponds_and_counts(
    session: AsyncSession, chat_ids: set[int], ponds_days: set[tuple[int, date]]
) -> tuple[dict[int, PondSettings], dict[tuple[int, date], int]]:
    """`settings_of(chat_ids)` and the number of check-ins of each (pond, day), in one
    round trip: the ponds' rows, then the counts, as one UNION ALL."""
    ponds = select(
        POND.c.chat_id, POND.c.settings, cast(null(), CHECKIN.c.day.type).label("day"),
        literal(0).label("n"),
    ).where(POND.c.chat_id.in_(chat_ids))
    days = (
        select(CHECKIN.c.chat_id, null(), CHECKIN.c.day, func.count())
        .where(CHECKIN.c.chat_id.in_(chat_ids),
               CHECKIN.c.day.in_(sorted({d for _, d in ponds_days})))
        .group_by(CHECKIN.c.chat_id, CHECKIN.c.day)
    )
    stored: dict[int, Any] = {}
    counts: dict[tuple[int, date], int] = {}
    for chat_id, value, day, n in (await session.execute(union_all(ponds, days))).all():
        if day is None:
            stored[int(chat_id)] = value
        elif (int(chat_id), day) in ponds_days:
            counts[(int(chat_id), day)] = int(n)
    return {c: PondSettings.from_stored(stored.get(c)) for c in chat_ids}, counts


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment  # SQLite: naive UTC


@dataclass(slots=True)
class _Member:
    balance: int
    streak: int
    last: date | None
    # Check-ins made in this batch so far: day -> the moment it was made.
    made: dict[date, datetime]


class CheckinOp:
    """Check in many members in one unit of work (see the module docstring).

    Requests run in the order they were submitted. A request for a day before the
    member's last check-in is a late delivery only when it was made before that
    check-in was (`rules.decide_late`); the member's days are read for it, which only
    such a rare request costs.
    """

    order = 10

    async def run(
        self, session: AsyncSession, requests: Sequence[CheckinRequest]
    ) -> list[CheckinResult]:
        state: dict[int, _Member] = {
            int(r.user_id): _Member(int(r.balance), int(r.streak), r.last_checkin_day, {})
            for r in (await _lock_members(session, [q.user_id for q in requests])).all()
        }
        locked = {u: m.balance for u, m in state.items()}  # as read, for the ledger
        # The ponds' settings and their counts of the requests' days, in one query: a day
        # with a new check-in gets its rank from its count.
        settings, counts = await _ponds_and_counts(
            session, {q.chat_id for q in requests}, {(q.chat_id, q.day) for q in requests}
        )
        pond_rules = {c: rules_for(s) for c, s in settings.items()}
        decisions: list[tuple[CheckinRequest, rules.Reward | None]] = []
        for q in requests:
            m = state.get(q.user_id)
            if m is None:
                decisions.append((q, None))  # unknown member: nothing to do
                continue
            decision = rules.decide(pond_rules[q.chat_id], m.last, m.streak, q.day)
            if decision.reward is not None:
                m.balance += decision.reward.total
                m.streak = decision.reward.streak
                m.last = q.day
                m.made[q.day] = q.moment
                decisions.append((q, decision.reward))
                continue
            late = None
            if m.last is not None and q.day < m.last:
                late = await self._late(session, pond_rules[q.chat_id], q, m)
            if late is not None:
                m.balance += late.reward.total
                m.streak = late.streak
                m.made[q.day] = q.moment
            decisions.append((q, None if late is None else late.reward))
        new = [(q, r) for q, r in decisions if r is not None]
        ranks = []
        for q, _ in new:
            counts[(q.chat_id, q.day)] = nth = counts.get((q.chat_id, q.day), 0) + 1
            ranks.append(nth)
        if new:
            await _CHECKINS.execute(
                session,
                [
                    {
                        "user_id": q.user_id, "chat_id": q.chat_id, "day": q.day,
                        "streak": r.streak, "points": r.total, "makeup": False,
                        "created_at": q.moment,
                    }
                    for q, r in new
                ],
            )
            awards: list[ledger.Award] = []
            for q, r in new:
                awards.append(ledger.Award(
                    q.user_id, r.points, LedgerKind.checkin, checkin_key(q.user_id, q.day),
                    chat_id=q.chat_id, ref=f"day {r.streak}",
                ))
                if r.milestone:
                    awards.append(ledger.Award(
                        q.user_id, r.milestone, LedgerKind.streak_bonus,
                        milestone_key(q.user_id, q.day), chat_id=q.chat_id,
                        ref=f"day {r.streak}",
                    ))
            # The points and the streaks in one update of the members' rows.
            await ledger.award_many(
                session, awards, now=new[0][0].now, balances=locked, credit=_CREDIT_STREAKS,
                member_values={
                    u: {"new_streak": state[u].streak, "new_day": state[u].last}
                    for u in dict.fromkeys(q.user_id for q, _ in new)
                },
            )
        results: list[CheckinResult] = []
        rank_iter = iter(ranks)
        for q, reward in decisions:
            m = state.get(q.user_id)
            balance, streak = (m.balance, m.streak) if m is not None else (0, 0)
            rank = next(rank_iter) if reward is not None else None
            results.append(CheckinResult(
                q.user_id, q.day, reward, streak, balance, rank,
                settings[q.chat_id].checkin_quiet_below,
            ))
        return results

    @staticmethod
    async def _late(
        session: AsyncSession, pond_rules: rules.Rules, q: CheckinRequest, m: _Member
    ) -> rules.LateDecision | None:
        assert m.last is not None
        made: dict[date, datetime] = {
            d: _utc(at)
            for d, at in (
                await session.execute(
                    select(CHECKIN.c.day, CHECKIN.c.created_at)
                    .where(CHECKIN.c.user_id == q.user_id)
                )
            ).all()
        }
        made.update(m.made)
        last_made = made.get(m.last)
        if last_made is None or q.moment >= last_made:
            return None  # made after the last check-in: not a late one (never backwards)
        return rules.decide_late(pond_rules, made, m.last, q.day)


_CHECKINS = Bulk(
    lambda _dialect: insert(CHECKIN),
    ["user_id", "chat_id", "day", "streak", "points", "makeup", "created_at"],
)
_CREDIT_STREAKS = Bulk(
    lambda _dialect: update(MEMBER)
    .where(MEMBER.c.user_id == bindparam("uid"))
    .values(
        balance=MEMBER.c.balance + bindparam("gain"),
        lifetime_earned=MEMBER.c.lifetime_earned + bindparam("gain"),
        streak=bindparam("new_streak"),
        last_checkin_day=bindparam("new_day"),
    ),
    ["uid", "gain", "new_streak", "new_day"],
)

CHECKIN_OP = CheckinOp()


# -- make-up -----------------------------------------------------------------------------


class MakeupError(Exception):
    """A refused make-up; nothing was charged. `code`: nothing_to_make_up |
    would_not_lengthen (`day` and `streak` say what it would have done) | used_recently |
    not_enough_points (`balance`, `cost`) | unknown."""

    def __init__(
        self,
        code: str,
        *,
        balance: int = 0,
        cost: int = 0,
        day: date | None = None,
        streak: int = 0,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.balance = balance
        self.cost = cost
        self.day = day
        self.streak = streak


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
        raise MakeupError(exc.code, day=exc.day, streak=exc.streak) from exc
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


async def top_streaks(
    session: AsyncSession, today: date, limit: int = 10, *, chat_id: int | None = None
) -> list[StreakRow]:
    """Longest streaks still alive (last check-in today or yesterday): among the members
    of pond `chat_id` (see `repo.pond_members`), or shop-wide."""
    query = select(
        MEMBER.c.user_id, MEMBER.c.first_name, MEMBER.c.last_name, MEMBER.c.username,
        MEMBER.c.streak,
    )
    if chat_id is not None:
        query = repo.pond_members(query, chat_id)
    rows = (
        await session.execute(
            query
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
        StreakRow(
            int(r.user_id), display_name(r.first_name, r.last_name, r.username, str(r.user_id)),
            int(r.streak),
        )
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
        [display_name(r.first_name, r.last_name, r.username, str(r.user_id)) for r in rows],
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

