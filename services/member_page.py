"""The members' page (F15): what its JSON API answers, for a member already proven by
their initData (`games.webapp_auth`; the HTTP side is `handlers.webapp`).

Which pond: balances are shop-wide, but a rank, a tier (the pond's `tiers` setting), the
day's date and a shop item's dates belong to a pond. A member may sit in several: the
page names one with `?chat=<id>`, which must be a served pond the member is in; without
it, the one where they were last active. `/me` typed in a pond opens the page on that
pond; from the private chat, on their most recent one. A member in no pond gets the
shop-wide view (rank among all, the default tiers and time zone), like `/points` in a DM.

A redemption runs exactly `/redeem`'s transaction (`storage.shop.redeem`) keyed by the
page's request id (`web:<user>:<request id>`, as `/redeem` keys by its message): a
request sent again — a double tap, a retry after a lost answer — returns the first
redemption and pays nothing. After the commit the code goes to the member's DM through
the outbox (`services.shop_delivery`), and the page shows it too (it is their own page).

"My coupons" lists what `/mine` lists, read by the same queries (`shop.of_member`,
`shop.draws_of`), with the codes as `/mine` shows them in the DM: the member's own
redemptions and draws only, never a refunded (voided) code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from games.checkin import DEFAULT_TIMEZONE, local_day
from games.people import UserInfo
from games.settings import PondSettings
from games.tiers import MEMBER, parse_tiers, tier_for
from services.outbox import Outbox
from services.shop_delivery import deliver
from storage import checkin, ledger, member_page, orders, repo, shop
from storage.db import Database
from storage.member_page import PondChoice

Clock = Callable[[], datetime]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_MINE_BEFORE = re.compile(r"([0-9]{1,19})\.([0-9]{1,19})")


class PageError(Exception):
    """A request the page cannot serve: `status` the HTTP status, `code` what the page
    shows (and `extra` any figures it needs)."""

    def __init__(self, status: int, code: str, **extra: Any) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Place:
    """The pond a request is about (None: shop-wide) and the member's ponds."""

    pond: PondChoice | None
    ponds: list[PondChoice]

    @property
    def chat_id(self) -> int | None:
        return self.pond.chat_id if self.pond is not None else None

    @property
    def timezone(self) -> str:
        return self.pond.timezone if self.pond is not None else DEFAULT_TIMEZONE


def parse_chat(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise PageError(400, "bad_chat") from None


async def place_of(db: Database, user_id: int, chat: int | None) -> Place:
    async with db.transaction(readonly=True) as session:
        ponds = await member_page.ponds_of(session, user_id)
    if chat is None:
        return Place(ponds[0] if ponds else None, ponds)
    for p in ponds:
        if p.chat_id == chat:
            return Place(p, ponds)
    raise PageError(404, "unknown_pond")


async def me(db: Database, user: UserInfo, place: Place, now: datetime) -> dict[str, Any]:
    """`{"user_id", "balance", "tier", "streak", "rank"}` (as `/points` tells them), the
    tier's discount as the `tiers` setting writes it (`"9.8"`: 9.8折; None for a plain
    member) and the ponds the page may switch between."""
    today = local_day(now, place.timezone)
    async with db.transaction(readonly=True) as session:
        member = await repo.get_member(session, user.id)
        rank = await repo.rank_of(session, user.id, chat_id=place.chat_id)
        streak = await checkin.streak_of(session, user.id, today)
        spent = await orders.spent_of(session, user.id)
        settings = (
            await repo.pond_settings(session, place.chat_id) if place.chat_id is not None
            else PondSettings()
        )
    tier = tier_for(spent, parse_tiers(settings.tiers))
    return {
        "user_id": user.id,
        "name": member.display_name if member is not None else user.first_name,
        "balance": member.balance if member is not None else 0,
        "lifetime_earned": member.lifetime_earned if member is not None else 0,
        "tier": tier.name if tier is not None else MEMBER,
        "discount": tier.discount if tier is not None else None,  # "9.8" (9.8折)
        "streak": streak,
        "rank": rank,
        "today": today.isoformat(),
        "chat_id": place.chat_id,
        "ponds": [{"chat_id": p.chat_id, "title": p.title} for p in place.ponds],
    }


def parse_before(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 19 or int(raw) <= 0:
        raise PageError(400, "bad_before")
    return int(raw)


async def history(db: Database, user_id: int, before: int | None) -> dict[str, Any]:
    """A page of the member's ledger, newest first; `next` is the `before` of the next
    page (None: this was the last)."""
    async with db.transaction(readonly=True) as session:
        lines = await member_page.history(session, user_id, before=before,
                                          limit=member_page.PAGE + 1)
    more = len(lines) > member_page.PAGE
    lines = lines[: member_page.PAGE]
    return {
        "entries": [
            {
                "id": e.id, "delta": e.delta, "balance_after": e.balance_after,
                "kind": e.kind, "chat_id": e.chat_id, "created_at": e.created_at.isoformat(),
            }
            for e in lines
        ],
        "next": lines[-1].id if more and lines else None,
    }


@dataclass(frozen=True, slots=True)
class MineCursor:
    """Where a page of `mine` goes on: redemptions and draws with ids below these."""

    redemption: int
    draw: int

    def __str__(self) -> str:
        return f"{self.redemption}.{self.draw}"


def parse_mine_before(raw: str | None) -> MineCursor | None:
    """`<redemption id>.<draw id>`, as a page of `mine` gives it in `next`."""
    if raw is None or raw == "":
        return None
    found = _MINE_BEFORE.fullmatch(raw)
    if not found:
        raise PageError(400, "bad_before")
    cursor = MineCursor(int(found.group(1)), int(found.group(2)))
    if not 0 < cursor.redemption < 2**63 or not 0 < cursor.draw < 2**63:
        raise PageError(400, "bad_before")
    return cursor


def _redemption_line(r: shop.RedemptionView) -> dict[str, Any]:
    return {
        "type": "redemption", "id": r.id, "item_id": r.item_id, "name": r.item_name,
        "kind": r.kind.value, "price": r.price, "cash_cents": r.cash_cents,
        "status": r.status.value, "code": r.shown_code or None, "via_draw": r.via_draw,
        "dm_linked": r.dm_linked,  # an undelivered code is on its way, or waits for /start
        "created_at": r.created_at.isoformat(),
    }


def _draw_line(d: shop.DrawLine) -> dict[str, Any]:
    status = (
        "won_item" if d.redemption_id is not None
        else "won_points" if d.won_points > 0
        else "no_prize"
    )
    return {
        "type": "draw", "id": d.id, "name": d.prize_name, "cost": d.cost,
        "won_points": d.won_points, "redemption_id": d.redemption_id, "status": status,
        "created_at": d.created_at.isoformat(),
    }


async def mine(db: Database, user_id: int, before: MineCursor | None) -> dict[str, Any]:
    """A page of the member's redemptions and draws — what `/mine` reads
    (`shop.of_member`, `shop.draws_of`) — newest first, 50 at a time; `next` is the
    `before` of the next page (None: this was the last).

    The two are read each by its own id, newest first, and merged by time, so a page
    takes the newest of each and the next one goes on below the last shown of each:
    nothing is skipped or shown twice, whatever is written meanwhile. A draw that won an
    item comes just above the redemption it made (same time). Codes are shown as in the
    DM: the page is the member's own, proven by their initData."""
    size = member_page.PAGE
    async with db.transaction(readonly=True) as session:
        reds = await shop.of_member(session, user_id, limit=size + 1,
                                    before=before.redemption if before else None)
        draws = await shop.draws_of(session, user_id, limit=size + 1,
                                    before=before.draw if before else None)
    lines: list[dict[str, Any]] = []
    i = j = 0
    while len(lines) < size and (i < len(reds) or j < len(draws)):
        if j < len(draws) and (i == len(reds) or draws[j].created_at >= reds[i].created_at):
            lines.append(_draw_line(draws[j]))
            j += 1
        else:
            lines.append(_redemption_line(reds[i]))
            i += 1
    more = i < len(reds) or j < len(draws)

    def below(shown: int, fetched: list[Any]) -> int:  # where this kind goes on
        if shown:
            return int(fetched[shown - 1].id)
        return int(fetched[0].id) + 1 if fetched else 1

    cursor = MineCursor(below(i, reds), below(j, draws))
    return {"entries": lines, "next": str(cursor) if more else None}


def month_of(raw: str | None, today: date) -> date:
    """The first day of `YYYY-MM` (None: today's month)."""
    if raw is None or raw == "":
        return today.replace(day=1)
    found = _MONTH.match(raw)
    if not found or not 1 <= int(found.group(2)) <= 12 or not 2000 <= int(found.group(1)) <= 2100:
        raise PageError(400, "bad_month")
    return date(int(found.group(1)), int(found.group(2)), 1)


async def calendar(
    db: Database, user_id: int, place: Place, month: str | None, now: datetime
) -> dict[str, Any]:
    """The month's check-in days (`makeup`: the 补签 ones)."""
    today = local_day(now, place.timezone)
    first = month_of(month, today)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    async with db.transaction(readonly=True) as session:
        days = await member_page.checkin_days(session, user_id, first, last)
    return {
        "month": first.strftime("%Y-%m"),
        "today": today.isoformat(),
        "days": [d.day.day for d in days if not d.makeup],
        "makeup": [d.day.day for d in days if d.makeup],
    }


async def shop_items(db: Database, place: Place, now: datetime) -> dict[str, Any]:
    """The items on sale today, as `/shop` lists them."""
    today = local_day(now, place.timezone)
    async with db.transaction(readonly=True) as session:
        items = await shop.items(session, on_sale_day=today)
    return {
        "items": [
            {
                "id": i.id, "name": i.name, "kind": i.kind.value, "price": i.price,
                "cash_cents": i.cash_cents, "stock": i.stock, "limit": i.limit,
            }
            for i in items
        ]
    }


def redeem_source(user_id: int, request_id: object) -> str:
    """The redemption's key: the member and the page's request id."""
    if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
        raise PageError(400, "bad_request_id")
    return f"web:{user_id}:{request_id}"


def item_of(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw < 2**63:
        raise PageError(400, "bad_item")
    return raw


async def redeem(
    db: Database,
    outbox: Outbox,
    user: UserInfo,
    place: Place,
    *,
    item_id: int,
    source_key: str,
    clock: Clock,
) -> dict[str, Any]:
    """`/redeem <item_id>` from the page (see the module docstring). Raises `PageError`
    (409) for a refusal, with `/redeem`'s reasons."""
    now = clock()
    async with db.transaction(readonly=True) as session:  # a sold-out storm stops here
        refused = await shop.refusal(
            session, item_id=item_id, source_key=source_key, now=now, timezone=place.timezone
        )
    if refused is not None and refused != "replayed":
        raise PageError(409, refused)
    try:
        async with db.transaction() as session:
            r = await shop.redeem(
                session, item_id=item_id, user_id=user.id, chat_id=place.chat_id,
                source_key=source_key, now=now, timezone=place.timezone,
            )
    except shop.ShopError as exc:
        raise PageError(409, exc.code, limit=exc.limit) from None
    except ledger.InsufficientPoints as exc:
        raise PageError(409, "not_enough_points", balance=exc.balance, needed=exc.needed
                        ) from None
    except ledger.UnknownMember:
        raise PageError(409, "no_points") from None
    sent = deliver(outbox, db, [r], clock=clock) if r.applied else []
    async with db.transaction(readonly=True) as session:
        member = await repo.get_member(session, user.id)
    return {
        "redemption_id": r.id,
        "item_id": r.item_id,
        "item_name": r.item_name,
        "kind": r.kind.value,
        "price": r.price,
        "code": r.code,
        "status": r.status.value,
        "dm_linked": r.dm_linked,
        "code_sent": bool(sent) or r.status.value == "delivered",
        "replayed": not r.applied,
        "balance": member.balance if member is not None else 0,
    }
