"""The shop in the database (F7): items, coupon codes, redemptions, refunds, fulfilment.

Plain functions over the caller's unit of work; none of them commits.

A redemption (`redeem`, and `grant` for a lottery prize) is, in the caller's transaction:

    UPDATE shop_item SET stock = stock - 1, redeemed = redeemed + 1
        WHERE id = :item AND stock > 0 AND on_sale AND <today within its dates>
        RETURNING name, kind, price, cash_cents, pool, per_member_limit

then the per-member limit (the member's bought redemptions of the item that are not
refunded), the ledger debit (`redeem`, key `redeem:<source_key>`), and the code: a pool
item's first `free` code is marked `assigned`, otherwise a generated one is inserted
`assigned` (unique per item); goods get no code and wait `pending`.

The row update is the item's lock. On SQLite every write transaction is serialised
anyway (BEGIN IMMEDIATE); on PostgreSQL concurrent redemptions of one item queue on that
row and each re-checks `stock > 0` once it has it, and every statement after it reads
what the transactions before it committed (READ COMMITTED): the limit count, a
`source_key` taken meanwhile by a concurrent first delivery of the same command, the
pool's next free code. So no unit is sold twice, stock never goes below zero and the
limit holds, with the same SQL on both backends and no retry.

A refusal found after the unit was taken (the limit, not enough points, the same
command delivered concurrently) gives the unit back with a compensating update in the
same transaction — never visible to anyone, the row is still locked — so the session
is left exactly as it was found and the caller may carry on (the ledger works the same
way, see storage/ledger.py).

`source_key` names the command (`chat:message_id`) or the draw: a replay returns the
first redemption with `applied=False` and changes nothing. It is looked up once the
item's row is held (the handlers look first, read-only, so a replay rarely gets there).

Rows are always taken in one order — the item's, then the member's (the ledger) — by
redemptions and refunds alike, so transactions on PostgreSQL never wait in a circle.

A code is shown only to its owner: the services deliver it to their DM after the
commit and record it `delivered` (`mark_delivered`); `undelivered` ones wait for
`/start`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from games.checkin import DEFAULT_TIMEZONE, local_day
from games.shop import ItemArgs, generate_code, parse_code_lines
from storage import ledger
from storage.db import Database
from storage.dialect import insert_for
from storage.models import (
    CodeState,
    Draw,
    ItemKind,
    LedgerKind,
    Member,
    Redemption,
    RedemptionStatus,
    ShopCode,
    ShopItem,
    utcnow,
)

_item = ShopItem.__table__  # type: ignore[attr-defined]
_code = ShopCode.__table__  # type: ignore[attr-defined]
_red = Redemption.__table__  # type: ignore[attr-defined]
_member = Member.__table__  # type: ignore[attr-defined]
_draw = Draw.__table__  # type: ignore[attr-defined]

_CODE_TRIES = 8  # generated-code collisions in a row before giving up (never happens)


def redeem_key(source_key: str) -> str:
    return f"redeem:{source_key}"


def refund_key(redemption_id: int) -> str:
    return f"refund:{redemption_id}"


def delivery_key(redemption_id: int) -> str:
    """The outbox key of a code's DM."""
    return f"code:{redemption_id}"


class ShopError(Exception):
    """A refused shop operation; `code` names why (texts turn it into a message).

    Redemptions: `unknown_item`, `off_sale`, `not_yet`, `ended`, `sold_out`, `limit`.
    Operators: `unknown_redemption`, `already_refunded`, `not_goods`, `not_pending`,
    `goods_no_codes`."""

    def __init__(self, code: str, *, limit: int = 0) -> None:
        super().__init__(code)
        self.code = code
        self.limit = limit


@dataclass(frozen=True, slots=True)
class ItemView:
    id: int
    name: str
    kind: ItemKind
    price: int
    cash_cents: int
    stock: int
    pool: bool
    limit: int  # 0: no limit
    active_from: date | None
    active_until: date | None
    on_sale: bool
    redeemed: int

    def sold_on(self, day: date) -> bool:
        """On sale on the local `day` (dates included), stock or not."""
        if not self.on_sale:
            return False
        if self.active_from is not None and day < self.active_from:
            return False
        return self.active_until is None or day <= self.active_until


@dataclass(frozen=True, slots=True)
class RedemptionView:
    """One redemption as its owner, an operator or a service sees it. `dm_linked`: the
    owner's DM was linked when this was read (where a code can go); `applied` False: a
    replay found it made before."""

    id: int
    item_id: int
    item_name: str
    kind: ItemKind
    user_id: int
    chat_id: int | None
    price: int
    cash_cents: int
    code: str | None
    status: RedemptionStatus
    via_draw: bool
    created_at: datetime
    dm_linked: bool = False
    applied: bool = True

    @property
    def awaiting_delivery(self) -> bool:
        return self.status is RedemptionStatus.undelivered and self.code is not None

    @property
    def shown_code(self) -> str | None:
        """The code as its owner is shown it (`/mine` in the DM, the members' page):
        none once the redemption was refunded (the code is void)."""
        return self.code if self.status is not RedemptionStatus.refunded else None


@dataclass(frozen=True, slots=True)
class DrawLine:
    """A lottery draw as `/mine` lists it."""

    id: int
    cost: int
    prize_name: str
    won_points: int
    redemption_id: int | None
    created_at: datetime


def _item_view(row: Any) -> ItemView:
    return ItemView(
        id=int(row.id),
        name=row.name,
        kind=ItemKind(row.kind),
        price=int(row.price),
        cash_cents=int(row.cash_cents),
        stock=int(row.stock),
        pool=bool(row.pool),
        limit=int(row.per_member_limit),
        active_from=row.active_from,
        active_until=row.active_until,
        on_sale=bool(row.on_sale),
        redeemed=int(row.redeemed),
    )


_RED_COLS = (
    _red.c.id, _red.c.item_id, _item.c.name.label("item_name"), _item.c.kind,
    _red.c.user_id, _red.c.chat_id, _red.c.price, _red.c.cash_cents, _red.c.code,
    _red.c.status, _red.c.via_draw, _red.c.created_at,
    func.coalesce(_member.c.dm_linked, False).label("dm_linked"),
)


def _red_select() -> Any:
    return select(*_RED_COLS).select_from(
        _red.join(_item, _item.c.id == _red.c.item_id).outerjoin(
            _member, _member.c.user_id == _red.c.user_id
        )
    )


def _red_view(row: Any, *, applied: bool = True) -> RedemptionView:
    return RedemptionView(
        id=int(row.id),
        item_id=int(row.item_id),
        item_name=row.item_name,
        kind=ItemKind(row.kind),
        user_id=int(row.user_id),
        chat_id=None if row.chat_id is None else int(row.chat_id),
        price=int(row.price),
        cash_cents=int(row.cash_cents),
        code=row.code,
        status=RedemptionStatus(row.status),
        via_draw=bool(row.via_draw),
        created_at=row.created_at,
        dm_linked=bool(row.dm_linked),
        applied=applied,
    )


async def get_redemption(session: AsyncSession, redemption_id: int) -> RedemptionView | None:
    row = (await session.execute(_red_select().where(_red.c.id == redemption_id))).first()
    return None if row is None else _red_view(row)


async def redemptions_by_id(
    session: AsyncSession, redemption_ids: Sequence[int]
) -> list[RedemptionView]:
    if not redemption_ids:
        return []
    rows = await session.execute(
        _red_select().where(_red.c.id.in_(list(redemption_ids))).order_by(_red.c.id)
    )
    return [_red_view(r) for r in rows]


async def _by_source(session: AsyncSession, source_key: str) -> RedemptionView | None:
    row = (
        await session.execute(_red_select().where(_red.c.source_key == source_key))
    ).first()
    return None if row is None else _red_view(row, applied=False)


# -- items -----------------------------------------------------------------------------


async def add_item(
    session: AsyncSession,
    args: ItemArgs,
    *,
    source_key: str,
    created_by: int | None,
    now: datetime,
) -> tuple[ItemView, bool]:
    """A new item; `(item, False)` when the command was carried out before."""
    new_id = await session.scalar(
        insert_for(session, _item)
        .values(
            name=args.name,
            kind=args.kind,
            price=args.price,
            cash_cents=args.cash_cents,
            stock=args.stock,
            pool=False,
            per_member_limit=args.limit,
            active_from=args.active_from,
            active_until=args.active_until,
            on_sale=True,
            redeemed=0,
            source_key=source_key,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["source_key"])
        .returning(_item.c.id)
    )
    row = (
        await session.execute(
            select(_item).where(
                _item.c.id == new_id if new_id is not None else _item.c.source_key == source_key
            )
        )
    ).one()
    return _item_view(row), new_id is not None


async def get_item(session: AsyncSession, item_id: int) -> ItemView | None:
    row = (await session.execute(select(_item).where(_item.c.id == item_id))).first()
    return None if row is None else _item_view(row)


async def items(session: AsyncSession, *, on_sale_day: date | None = None) -> list[ItemView]:
    """Every item (operators' list), or the ones sold on `on_sale_day` (the shop)."""
    query = select(_item).order_by(_item.c.id)
    if on_sale_day is not None:
        query = query.where(_item.c.on_sale.is_(True), *_dates_hold(on_sale_day))
    return [_item_view(r) for r in await session.execute(query)]


async def set_on_sale(
    session: AsyncSession, item_id: int, on_sale: bool, *, now: datetime
) -> ItemView | None:
    """Take an item off sale or put it back; None for an unknown id."""
    done = await session.scalar(
        update(_item)
        .where(_item.c.id == item_id)
        .values(on_sale=on_sale, updated_at=now)
        .returning(_item.c.id)
    )
    return None if done is None else await get_item(session, item_id)


@dataclass(frozen=True, slots=True)
class CodesAdded:
    item: ItemView
    added: int
    already_in_pool: tuple[str, ...]


async def add_codes(
    session: AsyncSession, item_id: int, codes: Sequence[str], *, now: datetime
) -> CodesAdded:
    """Add uploaded codes to a coupon's pool, skipping the ones it already has; the item
    becomes a pool item whose stock is its free codes. Raises `ShopError`
    (`unknown_item`, `goods_no_codes`)."""
    locked = await session.scalar(  # the item's lock, like a redemption's
        update(_item)
        .where(_item.c.id == item_id, _item.c.kind == ItemKind.coupon.value)
        .values(pool=True, updated_at=now)
        .returning(_item.c.id)
    )
    if locked is None:
        item = await get_item(session, item_id)
        raise ShopError("unknown_item" if item is None else "goods_no_codes")
    unique = list(dict.fromkeys(codes))
    known: set[str] = set()
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        known.update(
            (
                await session.execute(
                    select(_code.c.code).where(
                        _code.c.item_id == item_id, _code.c.code.in_(chunk)
                    )
                )
            ).scalars()
        )
    fresh = [c for c in unique if c not in known]
    for start in range(0, len(fresh), 500):
        await session.execute(
            insert_for(session, _code)
            .values(
                [
                    {
                        "item_id": item_id,
                        "code": c,
                        "state": CodeState.free.value,
                        "redemption_id": None,
                        "generated": False,
                        "added_at": now,
                    }
                    for c in fresh[start : start + 500]
                ]
            )
            .on_conflict_do_nothing(index_elements=["item_id", "code"])
        )
    free = (
        select(func.count())
        .select_from(_code)
        .where(_code.c.item_id == item_id, _code.c.state == CodeState.free.value)
        .scalar_subquery()
    )
    await session.execute(update(_item).where(_item.c.id == item_id).values(stock=free))
    item = await get_item(session, item_id)
    assert item is not None
    return CodesAdded(item, len(fresh), tuple(c for c in unique if c in known))


# -- redemptions -----------------------------------------------------------------------


def _dates_hold(day: date) -> tuple[Any, Any]:
    return (
        or_(_item.c.active_from.is_(None), _item.c.active_from <= day),
        or_(_item.c.active_until.is_(None), _item.c.active_until >= day),
    )


async def _take_unit(session: AsyncSession, item_id: int, day: date, now: datetime) -> Any:
    return (
        await session.execute(
            update(_item)
            .where(
                _item.c.id == item_id,
                _item.c.stock > 0,
                _item.c.on_sale.is_(True),
                *_dates_hold(day),
            )
            .values(stock=_item.c.stock - 1, redeemed=_item.c.redeemed + 1, updated_at=now)
            .returning(
                _item.c.name, _item.c.kind, _item.c.price, _item.c.cash_cents, _item.c.pool,
                _item.c.per_member_limit,
            )
        )
    ).first()


async def _give_back(session: AsyncSession, item_id: int) -> None:
    """Undo `_take_unit` in the same transaction (the row is still locked by it)."""
    await session.execute(
        update(_item)
        .where(_item.c.id == item_id)
        .values(stock=_item.c.stock + 1, redeemed=_item.c.redeemed - 1)
    )


async def _why_not(session: AsyncSession, item_id: int, day: date) -> str:
    item = await get_item(session, item_id)
    if item is None:
        return "unknown_item"
    if not item.on_sale:
        return "off_sale"
    if item.active_from is not None and day < item.active_from:
        return "not_yet"
    if item.active_until is not None and day > item.active_until:
        return "ended"
    return "sold_out"


async def _free_code(session: AsyncSession, item_id: int) -> tuple[int, str]:
    """The pool's next free code of the item (locked by the caller): `(row id, code)`."""
    row = (
        await session.execute(
            select(_code.c.id, _code.c.code)
            .where(_code.c.item_id == item_id, _code.c.state == CodeState.free.value)
            .order_by(_code.c.id)
            .limit(1)
        )
    ).first()
    if row is None:  # pragma: no cover - a pool item's stock counts its free codes
        raise RuntimeError(f"item {item_id} has stock but no free code")
    return int(row.id), str(row.code)


async def _keep_generated(
    session: AsyncSession, item_id: int, redemption_id: int, code: str, now: datetime
) -> str:
    """Record a generated code of the item for the redemption; a code the item already
    has (odds about one in 10**14 per code) is replaced by a fresh one."""
    for _ in range(_CODE_TRIES):
        code_id = await session.scalar(
            insert_for(session, _code)
            .values(
                item_id=item_id, code=code, state=CodeState.assigned.value,
                redemption_id=redemption_id, generated=True, added_at=now,
            )
            .on_conflict_do_nothing(index_elements=["item_id", "code"])
            .returning(_code.c.id)
        )
        if code_id is not None:
            return code
        code = generate_code()
        await session.execute(update(_red).where(_red.c.id == redemption_id).values(code=code))
    raise RuntimeError(f"no unique code for item {item_id}")  # pragma: no cover


async def _redeem(
    session: AsyncSession,
    *,
    item_id: int,
    user_id: int,
    chat_id: int | None,
    source_key: str,
    now: datetime,
    timezone: str,
    paid: bool,
) -> RedemptionView:
    day = local_day(now, timezone)
    unit = await _take_unit(session, item_id, day, now)
    if unit is None:
        done = await _by_source(session, source_key)  # a concurrent first delivery
        if done is not None:
            return done
        raise ShopError(await _why_not(session, item_id, day))
    # Holding the item's row now: whatever committed before is visible (see docstring),
    # a replay of this command among it.
    done = await _by_source(session, source_key)
    if done is not None:
        await _give_back(session, item_id)
        return done
    limit = int(unit.per_member_limit)
    if paid and limit > 0:
        held = await session.scalar(
            select(func.count())
            .select_from(_red)
            .where(
                _red.c.item_id == item_id,
                _red.c.user_id == user_id,
                _red.c.via_draw.is_(False),
                _red.c.status != RedemptionStatus.refunded.value,
            )
        )
        if int(held or 0) >= limit:
            await _give_back(session, item_id)
            raise ShopError("limit", limit=limit)
    price = int(unit.price) if paid else 0
    if price > 0:
        try:
            await ledger.spend(
                session, user_id=user_id, amount=price, kind=LedgerKind.redeem,
                key=redeem_key(source_key), chat_id=chat_id, ref=f"item:{item_id}", now=now,
            )
        except ledger.LedgerError:
            await _give_back(session, item_id)
            raise
    kind = ItemKind(unit.kind)
    pool_code: int | None = None
    code: str | None = None
    if kind is ItemKind.coupon and unit.pool:
        pool_code, code = await _free_code(session, item_id)
    elif kind is ItemKind.coupon:
        code = generate_code()
    status = RedemptionStatus.undelivered if code is not None else RedemptionStatus.pending
    cash = int(unit.cash_cents) if paid else 0
    red_id = await session.scalar(
        insert_for(session, _red)
        .values(
            item_id=item_id, user_id=user_id, chat_id=chat_id, price=price, cash_cents=cash,
            code=code, status=status.value, via_draw=not paid, source_key=source_key,
            created_at=now, delivered_at=None, fulfilled_at=None, refunded_at=None,
            handled_by=None, reason="",
        )
        .returning(_red.c.id)
    )
    assert red_id is not None
    if pool_code is not None:
        await session.execute(
            update(_code)
            .where(_code.c.id == pool_code)
            .values(state=CodeState.assigned.value, redemption_id=red_id)
        )
    elif code is not None:
        code = await _keep_generated(session, item_id, int(red_id), code, now)
    linked = await session.scalar(
        select(_member.c.dm_linked).where(_member.c.user_id == user_id)
    )
    return RedemptionView(
        id=int(red_id), item_id=item_id, item_name=unit.name, kind=kind, user_id=user_id,
        chat_id=chat_id, price=price, cash_cents=cash, code=code, status=status,
        via_draw=not paid, created_at=now, dm_linked=bool(linked), applied=True,
    )


async def refusal(
    session: AsyncSession, *, item_id: int, source_key: str, now: datetime,
    timezone: str = DEFAULT_TIMEZONE,
) -> str | None:
    """A read-only look before a redemption's write transaction: `replayed` (the
    command was carried out before), a `ShopError` code when the item is surely not sold
    now (`unknown_item`, `off_sale`, `not_yet`, `ended`, `sold_out`), else None. Lets a
    storm on a sold-out item be refused without queueing for the writer; `redeem`
    decides again under the lock."""
    if await _by_source(session, source_key) is not None:
        return "replayed"
    day = local_day(now, timezone)
    item = await get_item(session, item_id)
    if item is None or not item.sold_on(day) or item.stock <= 0:
        return await _why_not(session, item_id, day)
    return None


async def redeem(
    session: AsyncSession,
    *,
    item_id: int,
    user_id: int,
    chat_id: int | None,
    source_key: str,
    now: datetime,
    timezone: str = DEFAULT_TIMEZONE,
) -> RedemptionView:
    """One unit of the item bought with points (see the module docstring).

    Raises `ShopError` (`unknown_item`, `off_sale`, `not_yet`, `ended`, `sold_out`,
    `limit`) or the ledger's `InsufficientPoints` / `UnknownMember`; a refusal leaves
    the session as it was. A replayed `source_key` returns the first redemption with
    `applied=False`. `timezone`: the shop's, for the item's active dates."""
    return await _redeem(
        session, item_id=item_id, user_id=user_id, chat_id=chat_id, source_key=source_key,
        now=now, timezone=timezone, paid=True,
    )


async def grant(
    session: AsyncSession,
    *,
    item_id: int,
    user_id: int,
    chat_id: int | None,
    source_key: str,
    now: datetime,
    timezone: str = DEFAULT_TIMEZONE,
) -> RedemptionView | None:
    """One unit of the item given free (a lottery prize), in the caller's transaction:
    the stock and a code are taken exactly as by `redeem`, but no points are debited
    and the per-member limit does not apply (nor does a prize count against it).

    None when the item is unknown, off sale, outside its dates or out of stock (the
    session is left as it was). Idempotent by `source_key`: a replay returns the first
    redemption (`applied=False`). Deliver its code after the commit with
    `services.shop_delivery.deliver`."""
    try:
        return await _redeem(
            session, item_id=item_id, user_id=user_id, chat_id=chat_id,
            source_key=source_key, now=now, timezone=timezone, paid=False,
        )
    except ShopError:
        return None


async def mark_delivered(session: AsyncSession, redemption_id: int, *, now: datetime) -> bool:
    """The code reached its owner's DM; False when it was recorded before (or refunded)."""
    done = await session.scalar(
        update(_red)
        .where(_red.c.id == redemption_id, _red.c.status == RedemptionStatus.undelivered.value)
        .values(status=RedemptionStatus.delivered.value, delivered_at=now)
        .returning(_red.c.id)
    )
    return done is not None


async def undelivered(session: AsyncSession, user_id: int) -> list[RedemptionView]:
    """The member's codes not yet in their DM, oldest first."""
    rows = await session.execute(
        _red_select()
        .where(
            _red.c.user_id == user_id,
            _red.c.status == RedemptionStatus.undelivered.value,
            _red.c.code.is_not(None),
        )
        .order_by(_red.c.id)
    )
    return [_red_view(r) for r in rows]


async def of_member(session: AsyncSession, user_id: int, *, limit: int = 20,
                    before: int | None = None) -> list[RedemptionView]:
    """The member's latest redemptions, newest first (`before`: with ids below it — the
    members' page reads its pages here, so it and `/mine` always agree)."""
    query = _red_select().where(_red.c.user_id == user_id)
    if before is not None:
        query = query.where(_red.c.id < before)
    rows = await session.execute(query.order_by(_red.c.id.desc()).limit(limit))
    return [_red_view(r) for r in rows]


async def draws_of(session: AsyncSession, user_id: int, *, limit: int = 10,
                   before: int | None = None) -> list[DrawLine]:
    """The member's latest lottery draws, newest first (`before`: with ids below it)."""
    query = select(
        _draw.c.id, _draw.c.cost, _draw.c.prize_name, _draw.c.won_points,
        _draw.c.redemption_id, _draw.c.created_at,
    ).where(_draw.c.user_id == user_id)
    if before is not None:
        query = query.where(_draw.c.id < before)
    rows = await session.execute(query.order_by(_draw.c.id.desc()).limit(limit))
    return [
        DrawLine(
            int(r.id), int(r.cost), r.prize_name, int(r.won_points),
            None if r.redemption_id is None else int(r.redemption_id), r.created_at,
        )
        for r in rows
    ]


async def listing(
    session: AsyncSession, *, item_id: int | None = None, limit: int = 30
) -> list[RedemptionView]:
    """Redemptions for operators, newest first (of one item, or all)."""
    query = _red_select().order_by(_red.c.id.desc()).limit(limit)
    if item_id is not None:
        query = query.where(_red.c.item_id == item_id)
    return [_red_view(r) for r in await session.execute(query)]


# -- operators: refund, fulfil ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refund:
    """What `/refund` did: `applied` False when it was refunded before (nothing
    changed); `points` given back; `stock_back` whether the unit went back on sale (a
    pool code is voided instead: never given again)."""

    redemption: RedemptionView
    applied: bool
    points: int
    stock_back: bool


async def refund(
    session: AsyncSession,
    redemption_id: int,
    *,
    actor_id: int | None,
    reason: str,
    now: datetime,
) -> Refund:
    """Cancel a redemption once: status `refunded`, the price back (ledger `refund`),
    its code void, the unit back in stock unless it was a pool code. Raises
    `ShopError("unknown_redemption")`."""
    row = (
        await session.execute(
            update(_red)
            .where(_red.c.id == redemption_id, _red.c.status != RedemptionStatus.refunded.value)
            .values(
                status=RedemptionStatus.refunded.value, refunded_at=now, handled_by=actor_id,
                reason=reason[:255],
            )
            .returning(_red.c.item_id, _red.c.user_id, _red.c.price, _red.c.code,
                       _red.c.chat_id)
        )
    ).first()
    if row is None:
        view = await get_redemption(session, redemption_id)
        if view is None:
            raise ShopError("unknown_redemption")
        return Refund(view, False, 0, False)
    item_id, price = int(row.item_id), int(row.price)
    pool_code = False
    if row.code is not None:
        voided = (
            await session.execute(
                update(_code)
                .where(_code.c.item_id == item_id, _code.c.code == row.code)
                .values(state=CodeState.void.value)
                .returning(_code.c.generated)
            )
        ).first()
        pool_code = voided is not None and not voided.generated
    stock_back = not pool_code
    await session.execute(
        update(_item)
        .where(_item.c.id == item_id)
        .values(
            stock=_item.c.stock + (1 if stock_back else 0),
            redeemed=_item.c.redeemed - 1,
            updated_at=now,
        )
    )
    # The item's row before the member's, as a redemption takes them: two transactions
    # on PostgreSQL never wait for each other in a circle.
    if price > 0:
        await ledger.award(
            session, user_id=int(row.user_id), amount=price, kind=LedgerKind.refund,
            key=refund_key(redemption_id), chat_id=row.chat_id, actor_id=actor_id,
            ref=f"redemption:{redemption_id}", now=now,
        )
    view = await get_redemption(session, redemption_id)
    assert view is not None
    return Refund(view, True, price, stock_back)


async def fulfil(
    session: AsyncSession, redemption_id: int, *, actor_id: int | None, now: datetime
) -> tuple[RedemptionView, bool]:
    """Mark a pending goods redemption handed over; `(view, False)` when it was fulfilled
    before. Raises `ShopError` (`unknown_redemption`, `not_goods`, `already_refunded`)."""
    done = await session.scalar(
        update(_red)
        .where(_red.c.id == redemption_id, _red.c.status == RedemptionStatus.pending.value)
        .values(status=RedemptionStatus.fulfilled.value, fulfilled_at=now, handled_by=actor_id)
        .returning(_red.c.id)
    )
    view = await get_redemption(session, redemption_id)
    if view is None:
        raise ShopError("unknown_redemption")
    if done is not None:
        return view, True
    if view.status is RedemptionStatus.fulfilled:
        return view, False
    if view.status is RedemptionStatus.refunded:
        raise ShopError("already_refunded")
    raise ShopError("not_goods")


# -- export ----------------------------------------------------------------------------


def export_query() -> Any:
    """`pondbot export redemptions`: every redemption with its item's name, by id."""
    return (
        select(
            _red.c.id, _red.c.item_id, _item.c.name.label("item_name"), _red.c.user_id,
            _red.c.price, _red.c.cash_cents, _red.c.code, _red.c.status, _red.c.created_at,
        )
        .select_from(_red.outerjoin(_item, _item.c.id == _red.c.item_id))
        .order_by(_red.c.id)
    )


# -- `pondbot import codes` ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodesImported:
    """What `pondbot import codes` did: codes added, skipped as repeated in the file or
    already in the pool, line numbers that hold no code, and the unused codes now."""

    added: int
    repeated: tuple[str, ...]
    already_in_pool: tuple[str, ...]
    bad_lines: tuple[int, ...]
    stock: int


def import_codes_file(url: str | URL, item_id: int, path: str | os.PathLike[str]
                      ) -> CodesImported:
    """Add the codes of a text/CSV file (one per line; see `games.shop.parse_code_lines`)
    to an item's pool, in one transaction. Raises `OSError` / `UnicodeDecodeError` for an
    unreadable file, `ShopError` (`unknown_item`, `goods_no_codes`) and
    `storage.export.SchemaNotReady`."""
    from storage.export import SchemaNotReady
    from storage.migrate import ais_up_to_date, run_blocking

    lines = parse_code_lines(Path(path).read_bytes().decode("utf-8-sig"))
    if not run_blocking(lambda: ais_up_to_date(url)):
        raise SchemaNotReady

    async def run() -> CodesAdded:
        db = Database(url)
        try:
            async with db.transaction() as session:
                return await add_codes(session, item_id, lines.codes, now=utcnow())
        finally:
            await db.dispose()

    done = run_blocking(run)
    return CodesImported(
        done.added, lines.repeated, done.already_in_pool, lines.bad_lines, done.item.stock
    )
