"""The lottery in the database (抽奖, SPEC F8): the prize table and draws.

A draw is one transaction, in the caller's unit of work:

1. A draw already recorded under its `source_key` (a replayed update, a double press)
   is returned as it was (`applied=False`) and nothing else happens.
2. The prizes in play (active, in stock) are read; with none, the draw is refused
   (`DrawRefused`: `closed` — no prize at all —, or `sold_out`) and nothing is recorded.
3. The draw's row is inserted first, with `ON CONFLICT DO NOTHING`. A free draw takes
   the next free slot of the member's local day (`games.lottery.free_slot`); the unique
   (user_id, day, free_slot) makes two concurrent free draws unable to both take the last
   one: the loser inserts nothing — on PostgreSQL after waiting for the winner's commit,
   without aborting its transaction —, counts again and takes the next slot or pays.
   A paid draw spends `cost` through the ledger (kind `lottery`, key `draw:{source_key}`)
   once its prize is taken (step 4): the member's row after the prize's and the item's, the
   order every unit of work takes them in, so none waits for another in a circle;
   `InsufficientPoints` becomes `DrawRefused("no_points")`, and the caller's transaction
   rolls back: nothing is recorded, the balance is unchanged. A cost of 0 makes paid
   draws free of charge, still recorded.
4. A prize is picked among those in play by weight (`games.lottery.pick`) and its stock
   taken with a guarded `UPDATE … WHERE stock IS NULL OR stock > 0` — the prize row is
   the lock concurrent draws of it queue on. A prize that lost the race (no row updated)
   is left out and the pick made again among the rest; when none is left the draw is
   refused (`sold_out`). A prize out of stock is never won.
5. A points prize is paid through the ledger (kind `lottery`, key `draw-win:{draw_id}`);
   an item prize is a redemption of the item (`storage.shop.grant`, in a savepoint: an
   item out of stock puts the prize's unit back and the pick is made again). The draw's
   row records what was won.

Raising out of the transaction (a refusal) rolls all of it back: a refused draw is not a
draw.

`DRAW_OP` makes a crowd's draws in one unit of work for the `BatchWriter`, with the same
rules decided in memory and a few statements (see `DrawOp`); it falls back on `draw`,
one by one, whenever a concurrent unit of work got in the way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from games import lottery as rules
from games.checkin import DEFAULT_TIMEZONE
from games.people import display_name
from games.settings import PondSettings
from storage import ledger, repo
from storage.dialect import insert_for
from storage.models import Draw, LedgerKind, Member, Prize, PrizeKind, ShopItem, utcnow

PRIZE = Prize.__table__  # type: ignore[attr-defined]
DRAW = Draw.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]
ITEM = ShopItem.__table__  # type: ignore[attr-defined]

if TYPE_CHECKING:
    from storage.shop import RedemptionView


def spend_key(source_key: str) -> str:
    return f"draw:{source_key}"


def win_key(draw_id: int) -> str:
    return f"draw-win:{draw_id}"


class DrawRefused(Exception):
    """Not a draw: `closed` (no prize at all), `sold_out` (none in stock) or `no_points`
    (the free draws are used and the balance is below the cost)."""

    def __init__(self, code: str, *, balance: int = 0, cost: int = 0) -> None:
        super().__init__(code)
        self.code = code
        self.balance = balance
        self.cost = cost


class PrizeRefused(Exception):
    """`/prize add` or `/prize off` refused: `no_item` (item=<id> names no shop item),
    `not_found` (no such prize)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class DrawResult:
    """One draw as recorded. `applied` False: a replay, returned as first recorded."""

    draw_id: int
    user_id: int
    free: bool
    cost: int  # points paid for it (0 for a free draw)
    prize_id: int | None
    prize_name: str
    kind: str  # PrizeKind of what was won ("none": 谢谢参与)
    won_points: int
    redemption_id: int | None
    balance: int  # the member's balance after it
    free_left: int  # free draws left on its day
    applied: bool
    # The item won, made now (None for a replay: its code was queued the first time, and
    # `/start` delivers whatever is still undelivered). Deliver it after the commit.
    redemption: RedemptionView | None = None

    @property
    def won(self) -> bool:
        return self.kind != PrizeKind.nothing


@dataclass(frozen=True, slots=True)
class PrizeLine:
    """A prize as `/prize list` and the board show it; `odds` its chance now (0 when
    it is not in play)."""

    id: int
    name: str
    weight: int
    stock: int | None
    kind: str
    points: int
    item_id: int | None
    won: int
    odds: float


# -- the prize table -----------------------------------------------------------------------


async def add_prize(
    session: AsyncSession,
    spec: rules.PrizeSpec,
    *,
    source_key: str,
    created_by: int | None,
    now: datetime | None = None,
) -> tuple[int, bool]:
    """Add a prize once per `source_key` (the operator's command message); its id, and
    whether it was added now. Raises `PrizeRefused("no_item")`."""
    found = await session.scalar(select(PRIZE.c.id).where(PRIZE.c.source_key == source_key))
    if found is not None:
        return int(found), False
    if spec.kind == PrizeKind.item:
        item = await session.scalar(select(ITEM.c.id).where(ITEM.c.id == spec.item_id))
        if item is None:
            raise PrizeRefused("no_item")
    new_id = await session.scalar(
        insert_for(session, PRIZE)
        .values(
            name=spec.name, weight=spec.weight, stock=spec.stock, kind=spec.kind,
            points=spec.points, item_id=spec.item_id, active=True, won=0,
            source_key=source_key, created_by=created_by, created_at=now or utcnow(),
        )
        .on_conflict_do_nothing()
        .returning(PRIZE.c.id)
    )
    if new_id is None:  # a concurrent delivery of the same command added it
        found = await session.scalar(select(PRIZE.c.id).where(PRIZE.c.source_key == source_key))
        assert found is not None
        return int(found), False
    return int(new_id), True


async def prize_off(session: AsyncSession, prize_id: int) -> str:
    """Take a prize out of the draw; its name. Raises `PrizeRefused("not_found")`."""
    name = await session.scalar(
        update(PRIZE).where(PRIZE.c.id == prize_id).values(active=False).returning(PRIZE.c.name)
    )
    if name is None:
        raise PrizeRefused("not_found")
    return str(name)


async def prizes(session: AsyncSession) -> list[PrizeLine]:
    """The active prizes, oldest first, each with its odds among those in play."""
    rows = (
        await session.execute(
            select(PRIZE.c.id, PRIZE.c.name, PRIZE.c.weight, PRIZE.c.stock, PRIZE.c.kind,
                   PRIZE.c.points, PRIZE.c.item_id, PRIZE.c.won)
            .where(PRIZE.c.active.is_(True))
            .order_by(PRIZE.c.id)
        )
    ).all()
    chances = rules.odds([(int(r.id), int(r.weight)) for r in rows if rules.in_stock(r.stock)])
    return [
        PrizeLine(int(r.id), str(r.name), int(r.weight), r.stock, str(r.kind), int(r.points),
                  r.item_id, int(r.won), chances.get(int(r.id), 0.0))
        for r in rows
    ]


# -- a draw -------------------------------------------------------------------------------


async def draw(
    session: AsyncSession,
    *,
    user_id: int,
    chat_id: int | None,
    day: date,
    source_key: str,
    free_per_day: int,
    cost: int,
    rng: rules.RandomSource,
    now: datetime | None = None,
    timezone: str = DEFAULT_TIMEZONE,
) -> DrawResult:
    """One draw of `user_id` (see the module docstring); raises `DrawRefused`.
    `timezone`: the pond's, for an item prize's active dates."""
    now = now or utcnow()
    done = await _recorded(session, source_key, free_per_day)
    if done is not None:
        return done
    playable = await _playable(session)
    if not playable:
        active = await session.scalar(
            select(func.count()).select_from(PRIZE).where(PRIZE.c.active.is_(True))
        )
        raise DrawRefused("sold_out" if active else "closed")
    claimed = await _claim(session, user_id, chat_id, day, source_key, free_per_day, cost, now)
    if claimed is None:  # a concurrent delivery of the same press recorded it first
        done = await _recorded(session, source_key, free_per_day)
        assert done is not None
        return done
    draw_id, slot = claimed
    # The prize (and an item prize's item) before the member's row: rows are taken in
    # the order a redemption takes them (the item's, then the member's), so a draw and
    # a /redeem never wait for each other in a circle.
    won = await _take_prize(session, playable, rng, user_id, chat_id, source_key, now,
                            timezone)
    if won is None:
        raise DrawRefused("sold_out")
    paid = 0
    balance: int | None = None
    if slot is None and cost > 0:
        try:
            balance = (await ledger.spend(
                session, user_id=user_id, amount=cost, kind=LedgerKind.lottery,
                key=spend_key(source_key), chat_id=chat_id, ref=f"draw #{draw_id}", now=now,
            )).balance
        except ledger.InsufficientPoints as exc:
            raise DrawRefused("no_points", balance=exc.balance, cost=cost) from exc
        paid = cost
    prize, redemption = won
    redemption_id = redemption.id if redemption is not None else None
    won_points = 0
    if prize.kind == PrizeKind.points and prize.points > 0:
        balance = (await ledger.award(
            session, user_id=user_id, amount=int(prize.points), kind=LedgerKind.lottery,
            key=win_key(draw_id), chat_id=chat_id, ref=f"draw #{draw_id}: {prize.name}",
            now=now,
        )).balance
        won_points = int(prize.points)
    await session.execute(_RECORD_WIN, {"did": draw_id, "pid": prize.id, "pname": prize.name,
                                        "points": won_points, "rid": redemption_id})
    if balance is None:
        balance = int(await session.scalar(_BALANCE, {"uid": user_id}) or 0)
    free_left = free_per_day - slot if slot is not None else 0  # a paid draw: none left
    return DrawResult(
        draw_id, user_id, slot is not None, paid, int(prize.id), str(prize.name),
        str(prize.kind), won_points, redemption_id, balance, free_left, True, redemption,
    )


# The statements of a draw are built once: building them is most of a draw's cost.
_FREE_USED = (
    select(func.count()).select_from(DRAW)
    .where(DRAW.c.user_id == bindparam("uid"), DRAW.c.day == bindparam("day"),
           DRAW.c.free_slot.is_not(None))
)
_RECORDED = (
    select(DRAW, PRIZE.c.kind, MEMBER.c.balance)
    .select_from(
        DRAW.outerjoin(PRIZE, PRIZE.c.id == DRAW.c.prize_id)
        .outerjoin(MEMBER, MEMBER.c.user_id == DRAW.c.user_id)
    )
    .where(DRAW.c.source_key == bindparam("key"))
)
_PLAYABLE = (
    select(PRIZE.c.id, PRIZE.c.name, PRIZE.c.weight, PRIZE.c.kind, PRIZE.c.points,
           PRIZE.c.item_id)
    .where(PRIZE.c.active.is_(True))
    .where(PRIZE.c.stock.is_(None) | (PRIZE.c.stock > 0))
    .order_by(PRIZE.c.id)
)
_DRAW_ID = select(DRAW.c.id).where(DRAW.c.source_key == bindparam("key"))
_TAKE = (
    update(PRIZE)
    .where(PRIZE.c.id == bindparam("pid"), PRIZE.c.active.is_(True))
    .where(PRIZE.c.stock.is_(None) | (PRIZE.c.stock > 0))
    .values(stock=PRIZE.c.stock - 1, won=PRIZE.c.won + 1)
    .returning(PRIZE.c.id)
)
_RECORD_WIN = (
    update(DRAW).where(DRAW.c.id == bindparam("did"))
    .values(prize_id=bindparam("pid"), prize_name=bindparam("pname"),
            won_points=bindparam("points"), redemption_id=bindparam("rid"))
)
_BALANCE = select(MEMBER.c.balance).where(MEMBER.c.user_id == bindparam("uid"))
_CLAIMS: dict[str, Any] = {}
_CLAIM_COLUMNS = ("user_id", "chat_id", "day", "free_slot", "cost", "source_key", "created_at")


def _claim_statement(session: AsyncSession) -> Any:
    name = session.get_bind().dialect.name
    stmt = _CLAIMS.get(name)
    if stmt is None:
        stmt = _CLAIMS[name] = (
            insert_for(session, DRAW)
            .values(
                {c: bindparam(f"v_{c}") for c in _CLAIM_COLUMNS}
                | {"prize_id": None, "prize_name": "", "won_points": 0, "redemption_id": None}
            )
            .on_conflict_do_nothing()
            .returning(DRAW.c.id)
        )
    return stmt


async def _free_used(session: AsyncSession, user_id: int, day: date) -> int:
    return int(await session.scalar(_FREE_USED, {"uid": user_id, "day": day}) or 0)


async def _recorded(session: AsyncSession, source_key: str, free_per_day: int
                    ) -> DrawResult | None:
    row = (await session.execute(_RECORDED, {"key": source_key})).first()
    if row is None:
        return None
    used = await _free_used(session, row.user_id, row.day)
    return DrawResult(
        int(row.id), int(row.user_id), row.free_slot is not None, int(row.cost), row.prize_id,
        str(row.prize_name), str(row.kind or PrizeKind.nothing), int(row.won_points),
        row.redemption_id, int(row.balance or 0), max(free_per_day - used, 0), False,
    )


async def _playable(session: AsyncSession) -> list[Any]:
    """The prizes in play: active and in stock."""
    return list((await session.execute(_PLAYABLE)).all())


async def _claim(
    session: AsyncSession,
    user_id: int,
    chat_id: int | None,
    day: date,
    source_key: str,
    free_per_day: int,
    cost: int,
    now: datetime,
) -> tuple[int, int | None] | None:
    """Insert the draw's row: a free one in the next free slot, else a paid one. Its id
    and slot; None when the same `source_key` was recorded meanwhile."""
    stmt = _claim_statement(session)
    while True:
        used = await _free_used(session, user_id, day) if free_per_day > 0 else 0
        slot = rules.free_slot(used, free_per_day)
        values = (user_id, chat_id, day, slot, 0 if slot is not None else cost, source_key, now)
        new_id = await session.scalar(
            stmt, {f"v_{c}": v for c, v in zip(_CLAIM_COLUMNS, values, strict=True)}
        )
        if new_id is not None:
            return int(new_id), slot
        taken = await session.scalar(_DRAW_ID, {"key": source_key})
        if taken is not None or slot is None:
            return None
        # The slot went to a concurrent draw of the same member: count again.


async def _take_prize(
    session: AsyncSession,
    playable: list[Any],
    rng: rules.RandomSource,
    user_id: int,
    chat_id: int | None,
    source_key: str,
    now: datetime,
    timezone: str,
) -> tuple[Any, RedemptionView | None] | None:
    """Pick a prize in stock and take one unit of it; the prize and, for an item prize,
    the redemption made. None: every prize ran out meanwhile."""
    left = {int(p.id): p for p in playable}
    while left:
        chosen = rules.pick([(i, int(p.weight)) for i, p in left.items()], rng)
        assert chosen is not None
        prize = left.pop(chosen)
        taken = await session.scalar(_TAKE, {"pid": chosen})
        if taken is None:
            continue  # lost the last unit to a concurrent draw (or turned off)
        if prize.kind != PrizeKind.item or prize.item_id is None:
            return prize, None
        granted = await _grant(session, int(prize.item_id), user_id, chat_id, source_key,
                               now, timezone)
        if granted is not None:
            return prize, granted
        await session.execute(  # the item is out of stock: the prize's unit goes back
            update(PRIZE).where(PRIZE.c.id == chosen)
            .values(stock=PRIZE.c.stock + 1, won=PRIZE.c.won - 1)
        )
    return None


async def _grant(
    session: AsyncSession, item_id: int, user_id: int, chat_id: int | None, source_key: str,
    now: datetime, timezone: str,
) -> RedemptionView | None:
    """A redemption of the item, won in the draw `source_key`; None: the item cannot be
    given (out of stock, off sale, gone — `storage.shop.grant` leaves the session as it
    was)."""
    from storage import shop

    return await shop.grant(
        session, item_id=item_id, user_id=user_id, chat_id=chat_id,
        source_key=spend_key(source_key), now=now, timezone=timezone,
    )


# -- the board ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BoardView:
    draws: int  # draws in this pond on the day
    winners: list[tuple[str, str]]  # (member, prize) of the latest wins, newest first
    prizes: list[PrizeLine]  # the prizes in play
    open: bool  # whether the shop has any prize at all (in stock or not)


async def board_view(session: AsyncSession, chat_id: int, day: date, latest: int = 5
                     ) -> BoardView:
    count = await session.scalar(
        select(func.count()).select_from(DRAW)
        .where(DRAW.c.chat_id == chat_id, DRAW.c.day == day)
    )
    rows = (
        await session.execute(
            select(MEMBER.c.user_id, MEMBER.c.first_name, MEMBER.c.last_name,
                   MEMBER.c.username, DRAW.c.prize_name)
            .select_from(
                DRAW.join(MEMBER, MEMBER.c.user_id == DRAW.c.user_id)
                .join(PRIZE, PRIZE.c.id == DRAW.c.prize_id)
            )
            .where(DRAW.c.chat_id == chat_id, DRAW.c.day == day,
                   PRIZE.c.kind != str(PrizeKind.nothing))
            .order_by(DRAW.c.id.desc())
            .limit(latest)
        )
    ).all()
    winners = [
        (display_name(r.first_name, r.last_name, r.username, str(r.user_id)), str(r.prize_name))
        for r in rows
    ]
    table = await prizes(session)
    return BoardView(int(count or 0), winners, [p for p in table if rules.in_stock(p.stock)],
                     bool(table))


async def dm_linked(session: AsyncSession, user_id: int) -> bool:
    """Whether the member's private chat with the bot is linked (where answers can go)."""
    return bool(await session.scalar(select(MEMBER.c.dm_linked)
                                     .where(MEMBER.c.user_id == user_id)))


# -- many draws in one unit of work -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrawRequest:
    """A draw for `DRAW_OP`; `day` is the pond's local day, `timezone` the pond's."""

    user_id: int
    chat_id: int | None
    day: date
    source_key: str
    now: datetime
    rng: rules.RandomSource
    timezone: str = DEFAULT_TIMEZONE


@dataclass(frozen=True, slots=True)
class DrawOutcome:
    """A draw made, or refused (nothing recorded), with what its answer needs: the
    pond's `lottery_quiet_below` and whether the member's DM is linked."""

    result: DrawResult | None
    refused: DrawRefused | None
    quiet_below: int
    dm_linked: bool


# Many rows in one INSERT … VALUES (…), (…) RETURNING, as SQLAlchemy batches them.
_DRAW_ROWS_RETURNING = insert(DRAW).returning(DRAW.c.source_key, DRAW.c.id)


def _take_many(taken: dict[int, int]) -> Any:
    """Take `taken[prize_id]` units of each prize (stock unlimited: only counted)."""
    n = case(taken, value=PRIZE.c.id)
    return (
        update(PRIZE)
        .where(PRIZE.c.id.in_(sorted(taken)), PRIZE.c.active.is_(True))
        .where(PRIZE.c.stock.is_(None) | (PRIZE.c.stock >= n))
        .values(stock=PRIZE.c.stock - n, won=PRIZE.c.won + n)
        .returning(PRIZE.c.id)
    )


class PrizeRaced(Exception):
    """A batch's prize was taken meanwhile by another unit of work (PostgreSQL, several
    instances): the batch is rolled back and its draws made one by one."""


class DrawOp:
    """Many draws in one unit of work, for the `BatchWriter` (a crowd on the 🎰 board).

    The state the draws need — draws already recorded under their keys, the members'
    balances and DM links, their free draws of the day, the prize table — is read once;
    the draws are decided in order in memory with `draw`'s rules; then the draws' rows,
    the prizes' stock (one guarded update per prize), the costs and the points won are
    written with a few statements. A refusal decided in memory writes nothing and is
    returned as the request's outcome. When the writes meet something a concurrent unit
    of work changed (a prize's last unit, a free slot, a balance: PostgreSQL with several
    instances) they raise, the writer rolls the batch back and makes each draw alone with
    `draw`, which handles those races. A lone request is made with `draw` right away (a
    refusal then raises `DrawRefused`: the unit of work is rolled back).
    """

    order = 20  # after the member records of the same batch

    async def run(self, session: AsyncSession, requests: Sequence[DrawRequest]
                  ) -> list[DrawOutcome]:
        chats = {r.chat_id for r in requests}
        settings = {c: await repo.pond_settings(session, c or 0) for c in chats}
        if len(requests) == 1:
            return [await self._one(session, requests[0], settings[requests[0].chat_id])]
        return await self._many(session, requests, settings)

    async def _one(self, session: AsyncSession, r: DrawRequest, s: PondSettings) -> DrawOutcome:
        linked = await dm_linked(session, r.user_id)
        result = await draw(
            session, user_id=r.user_id, chat_id=r.chat_id, day=r.day, source_key=r.source_key,
            free_per_day=s.lottery_free_per_day, cost=s.lottery_cost, rng=r.rng, now=r.now,
            timezone=r.timezone,
        )
        return DrawOutcome(result, None, s.lottery_quiet_below, linked)

    async def _many(
        self, session: AsyncSession, requests: Sequence[DrawRequest],
        settings: dict[int | None, PondSettings],
    ) -> list[DrawOutcome]:
        users = sorted({r.user_id for r in requests})
        members = {
            int(m.user_id): (int(m.balance), bool(m.dm_linked))
            for m in (await session.execute(
                select(MEMBER.c.user_id, MEMBER.c.balance, MEMBER.c.dm_linked)
                .where(MEMBER.c.user_id.in_(users))
            )).all()
        }
        balance = {u: b for u, (b, _) in members.items()}
        used: dict[tuple[int, date], int] = {
            (int(row.user_id), row.day): int(row.n)
            for row in (await session.execute(
                select(DRAW.c.user_id, DRAW.c.day, func.count().label("n"))
                .where(DRAW.c.user_id.in_(users), DRAW.c.free_slot.is_not(None),
                       DRAW.c.day.in_(sorted({r.day for r in requests})))
                .group_by(DRAW.c.user_id, DRAW.c.day)
            )).all()
        }
        before = {
            row.source_key: row
            for row in (await session.execute(
                select(DRAW, PRIZE.c.kind.label("prize_kind"))
                .select_from(DRAW.outerjoin(PRIZE, PRIZE.c.id == DRAW.c.prize_id))
                .where(DRAW.c.source_key.in_(sorted({r.source_key for r in requests})))
            )).all()
        }
        table = (await session.execute(
            select(PRIZE.c.id, PRIZE.c.name, PRIZE.c.weight, PRIZE.c.stock, PRIZE.c.kind,
                   PRIZE.c.points, PRIZE.c.item_id)
            .where(PRIZE.c.active.is_(True)).order_by(PRIZE.c.id)
            .with_for_update()  # prizes, then items, then members: as `draw` takes them
        )).all()
        prizes = {int(p.id): p for p in table}
        stock: dict[int, int | None] = {int(p.id): p.stock for p in table}
        taken: dict[int, int] = {}
        decided: list[tuple[DrawRequest, DrawResult | DrawRefused, dict[str, Any] | None]] = []
        first: dict[str, int] = {}  # a key decided in this batch: the index of its decision
        for r in requests:
            s = settings[r.chat_id]
            free_per_day = s.lottery_free_per_day
            if r.source_key in before:
                row = before[r.source_key]
                left = max(free_per_day - used.get((r.user_id, row.day), 0), 0)
                decided.append((r, DrawResult(
                    int(row.id), int(row.user_id), row.free_slot is not None, int(row.cost),
                    row.prize_id, str(row.prize_name), str(row.prize_kind or PrizeKind.nothing),
                    int(row.won_points), row.redemption_id, balance.get(r.user_id, 0), left,
                    False), None))
                continue
            if r.source_key in first:  # a double press: as the first one went
                decided.append((r, decided[first[r.source_key]][1], None))
                continue
            first[r.source_key] = len(decided)
            in_play = [i for i in prizes if rules.in_stock(stock[i])]
            if not in_play:
                decided.append((r, DrawRefused("sold_out" if prizes else "closed"), None))
                continue
            slot = rules.free_slot(used.get((r.user_id, r.day), 0), free_per_day)
            cost = 0 if slot is not None else s.lottery_cost
            have = balance.get(r.user_id, 0)
            if cost > have:
                decided.append((r, DrawRefused("no_points", balance=have, cost=cost), None))
                continue
            chosen, redemption = await self._pick(session, r, in_play, prizes, stock)
            if chosen is None:
                decided.append((r, DrawRefused("sold_out"), None))
                continue
            prize = prizes[chosen]
            if stock[chosen] is not None:
                stock[chosen] = int(stock[chosen] or 0) - 1
            taken[chosen] = taken.get(chosen, 0) + 1
            points = int(prize.points) if prize.kind == PrizeKind.points else 0
            balance[r.user_id] = have - cost + points
            if slot is not None:
                used[(r.user_id, r.day)] = used.get((r.user_id, r.day), 0) + 1
            row_values: dict[str, Any] = {
                "user_id": r.user_id, "chat_id": r.chat_id, "day": r.day, "free_slot": slot,
                "cost": cost, "prize_id": chosen, "prize_name": str(prize.name),
                "won_points": points, "redemption_id": redemption.id if redemption else None,
                "source_key": r.source_key, "created_at": r.now,
            }
            decided.append((r, DrawResult(
                0, r.user_id, slot is not None, cost, chosen, str(prize.name), str(prize.kind),
                points, row_values["redemption_id"], balance[r.user_id],
                free_per_day - slot if slot is not None else 0, True, redemption,
            ), row_values))
        ids = await self._write(session, decided, taken)
        return await self._outcomes(session, decided, settings, members, ids)

    async def _pick(
        self, session: AsyncSession, r: DrawRequest, in_play: list[int], prizes: dict[int, Any],
        stock: dict[int, int | None],
    ) -> tuple[int | None, RedemptionView | None]:
        left = list(in_play)
        while left:
            chosen = rules.pick([(i, int(prizes[i].weight)) for i in left], r.rng)
            assert chosen is not None
            prize = prizes[chosen]
            if prize.kind != PrizeKind.item or prize.item_id is None:
                return chosen, None
            granted = await _grant(session, int(prize.item_id), r.user_id, r.chat_id,
                                   r.source_key, r.now, r.timezone)
            if granted is not None:
                return chosen, granted
            left.remove(chosen)  # the item cannot be given: as if out of stock
        return None, None

    async def _write(
        self, session: AsyncSession,
        decided: list[tuple[DrawRequest, DrawResult | DrawRefused, dict[str, Any] | None]],
        taken: dict[int, int],
    ) -> dict[str, int]:
        """Write the batch's new draws; their ids by source key."""
        rows = [v for _, _, v in decided if v is not None]
        if not rows:
            return {}
        # Every prize the batch won, in one guarded update (their rows are locked since
        # the prize table was read): each one it could not take raises.
        took = set((await session.execute(_take_many(taken))).scalars().all())
        if len(took) < len(taken):
            raised = sorted(set(taken) - {int(i) for i in took})
            raise PrizeRaced(f"prizes {raised} ran out meanwhile")
        # One multi-row INSERT … RETURNING (SQLite >= 3.35, PostgreSQL): the ids come
        # back with their keys, in whatever order the database gives them.
        return {
            str(k): int(i)
            for k, i in (await session.execute(_DRAW_ROWS_RETURNING, rows)).all()
        }

    async def _outcomes(
        self, session: AsyncSession,
        decided: list[tuple[DrawRequest, DrawResult | DrawRefused, dict[str, Any] | None]],
        settings: dict[int | None, PondSettings],
        members: dict[int, tuple[int, bool]],
        ids: dict[str, int],
    ) -> list[DrawOutcome]:
        awards: list[ledger.Award] = []
        out: list[DrawOutcome] = []
        fresh: dict[str, DrawResult] = {}
        # On SQLite the unit of work holds the whole database (BEGIN IMMEDIATE): the
        # balances read at its start, moved by its own spends, are the members' balances
        # now, and the ledger need not read them again. (PostgreSQL: it locks and reads.)
        held: dict[int, int] | None = (
            {u: b for u, (b, _) in members.items()}
            if session.get_bind().dialect.name == "sqlite" else None
        )
        for r, what, values in decided:
            s = settings[r.chat_id]
            linked = members.get(r.user_id, (0, False))[1]
            if isinstance(what, DrawRefused):
                out.append(DrawOutcome(None, what, s.lottery_quiet_below, linked))
                continue
            if values is not None:
                draw_id = ids[r.source_key]
                what = fresh[r.source_key] = replace(what, draw_id=draw_id)
                if what.cost:
                    move = await ledger.spend(
                        session, user_id=r.user_id, amount=what.cost, kind=LedgerKind.lottery,
                        key=spend_key(r.source_key), chat_id=r.chat_id, ref=f"draw #{draw_id}",
                        now=r.now,
                    )
                    if held is not None and move.applied:
                        held[r.user_id] = move.balance
                    else:
                        held = None  # a spend made before: read the balances
                if what.won_points:
                    awards.append(ledger.Award(
                        r.user_id, what.won_points, LedgerKind.lottery, win_key(draw_id),
                        r.chat_id, ref=f"draw #{draw_id}: {what.prize_name}"))
            elif what.applied:  # a double press of a draw made in this batch
                what = replace(fresh[r.source_key], applied=False, redemption=None)
            out.append(DrawOutcome(what, None, s.lottery_quiet_below, linked))
        await ledger.award_many(session, awards, now=decided[0][0].now, balances=held)
        return out


DRAW_OP = DrawOp()


async def refused_outcome(session: AsyncSession, request: DrawRequest, refused: DrawRefused
                          ) -> DrawOutcome:
    """The outcome of a lone draw that was refused (its unit of work rolled back)."""
    settings = await repo.pond_settings(session, request.chat_id or 0)
    return DrawOutcome(None, refused, settings.lottery_quiet_below,
                       await dm_linked(session, request.user_id))
