"""The shop and the lottery under a storm, against the floor of aiogram itself.

    .venv/bin/python bench/redeem.py [--n 10000] [--stock 100] [--batch 100]

N known members (each with points and a linked private chat, already in the database)
all type `/redeem <id>` in one pond for a coupon with `stock` units left, then all press
the pond's lottery board (🎰) once. Both go through the production Dispatcher
(`build_dispatcher`), a real SQLite file (migrated) and the spec-validating fake Bot API
session of the test rig, fed as long polling feeds them: batches of `batch` updates
through the production `handle_batch`. Measured in the same run, with the same updates
fed the same way through the same kind of fake session: a bare aiogram Dispatcher whose
only handler answers once (a message for `/redeem`, a toast for the press). Each side
runs twice per phase and keeps its best.

Exactness is checked after each phase: `stock` redemptions, as many distinct codes, each
sent only to its owner's private chat and never to the group; `stock` × price debited;
the item's stock at zero; one draw per member (their free one), a prize with stock never
won more often than its stock; every press answered once; the ledger invariant.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiogram import Bot, Dispatcher, Router  # noqa: E402
from aiogram.methods import AnswerCallbackQuery, SendMessage  # noqa: E402
from aiogram.types import (  # noqa: E402
    CallbackQuery,
    Chat,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    Update,
    User,
)
from sqlalchemy import func, insert, select  # noqa: E402

from bench.support import SHOP_OWNER, Failures, rig  # noqa: E402
from bot.polling import handle_batch  # noqa: E402
from bot.runtime import tune_gc  # noqa: E402
from services.lottery_board import LotteryButton  # noqa: E402
from services.outbox import Outbox  # noqa: E402
from storage import ledger, repo  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.models import (  # noqa: E402
    Draw,
    LedgerEntry,
    LedgerKind,
    Member,
    Prize,
    Redemption,
    ShopItem,
)
from tests.rig.fake_session import BOT_ID, FakeSession  # noqa: E402

POND = Chat(id=-1001000000999, type="supergroup", title="Bench pond")
DATE = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
PRICE = 50
POINTS = 100  # every member's balance before the storm: enough for one coupon
PRIZE_STOCK = 20  # the lottery's one stocked prize


def command(update_id: int, user: User, text: str) -> Update:
    name = text.split()[0]
    return Update(update_id=update_id, message=Message(
        message_id=update_id, date=DATE, chat=POND, from_user=user, text=text,
        entities=[MessageEntity(type="bot_command", offset=0, length=len(name))],
    ))


def member(user_id: int) -> User:
    return User(id=user_id, is_bot=False, first_name=f"Member{user_id}")


def press(update_id: int, user_id: int, board: Message) -> Update:
    return Update(update_id=update_id, callback_query=CallbackQuery(
        id=f"q{update_id}", from_user=member(user_id), chat_instance="bench", message=board,
        data=LotteryButton(chat_id=POND.id).pack(),
    ))


def bare_dispatcher() -> Dispatcher:
    """The floor: aiogram routing one update to a handler that answers once."""
    router = Router()

    @router.callback_query()
    async def toast(query: CallbackQuery, bot: Bot) -> None:
        await bot(AnswerCallbackQuery(callback_query_id=query.id, text="🎰"))

    @router.message()
    async def answer(message: Message, bot: Bot) -> None:
        await bot(SendMessage(chat_id=message.chat.id, text="✅"))

    dp = Dispatcher()
    dp.include_router(router)
    return dp


async def feed(dp: Dispatcher, bot: Bot, updates: list[Update], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(updates), batch):
        await handle_batch(dp, bot, updates[i : i + batch])
    return time.perf_counter() - started


async def settle(outbox: Outbox) -> None:
    """Until the outbox has sent everything queued (it offers a count, not an event)."""
    while outbox.pending():  # noqa: ASYNC110
        await asyncio.sleep(0.001)


async def seed(db: Database, users: range) -> None:
    """Known members with points and a linked private chat, written straight into the
    database (their first sighting is the red-packet bench's business)."""
    now = dt.datetime.now(dt.UTC)
    async with db.transaction() as s:
        rows = []
        for uid in users:
            row = repo.member_row(repo.UserInfo(id=uid, first_name=f"Member{uid}"), now)
            rows.append({**row, "dm_linked": True})
        await s.execute(insert(Member), rows)
        await ledger.award_many(s, [
            ledger.Award(user_id=uid, amount=POINTS, kind=LedgerKind.admin_adjust,
                         key=f"bench-seed:{uid}")
            for uid in users
        ])


async def operator_says(dp: Dispatcher, bot: Bot, outbox: Outbox, update_id: int,
                        text: str) -> None:
    await dp.feed_update(bot, command(update_id, SHOP_OWNER, text))
    await settle(outbox)


async def stock_the_shop(dp: Dispatcher, bot: Bot, db: Database, outbox: Outbox,
                         stock: int) -> int:
    await operator_says(dp, bot, outbox, 1, f"/item add {PRICE} {stock} limit=1 满99减10券")
    await operator_says(dp, bot, outbox, 2, f"/prize add 1 {PRIZE_STOCK} points=50 大奖")
    await operator_says(dp, bot, outbox, 3, "/prize add 5 - points=2 小奖")
    await operator_says(dp, bot, outbox, 4, "/prize add 10 - none 谢谢参与")
    async with db.transaction(readonly=True) as s:
        item_id = await s.scalar(select(func.max(ShopItem.id)))
        prizes = await s.scalar(select(func.count()).select_from(Prize))
    assert item_id is not None and prizes == 3, (item_id, prizes)
    return int(item_id)


async def post_board(dp: Dispatcher, bot: Bot, session: FakeSession, outbox: Outbox) -> Message:
    await operator_says(dp, bot, outbox, 5, "/lottery")
    await dp["lottery_board"].idle()
    await settle(outbox)
    sent = [m for m in session.delivered_of(SendMessage) if m.chat_id == POND.id]
    markup = sent[-1].reply_markup if sent else None
    assert isinstance(markup, InlineKeyboardMarkup), "no lottery board was posted"
    message_id = len(sent)  # the fake session numbers a chat's messages 1, 2, 3 …
    return Message(
        message_id=message_id, date=DATE, chat=POND,
        from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"), text="🎰",
        reply_markup=markup,
    )


async def check_shop(db: Database, session: FakeSession, item_id: int, stock: int) -> None:
    async with db.transaction(readonly=True) as s:
        sold = list((await s.execute(
            select(Redemption).where(Redemption.item_id == item_id)  # type: ignore[arg-type]
        )).scalars())
        left = await s.scalar(select(ShopItem.stock).where(ShopItem.id == item_id))  # type: ignore[call-overload]
        debits = (await s.execute(
            select(func.count(), func.sum(LedgerEntry.delta))
            .where(LedgerEntry.kind == LedgerKind.redeem)  # type: ignore[arg-type]
        )).one()
        assert (await ledger.check_invariant(s)).ok
    owners = Counter(r.user_id for r in sold)
    codes = {r.code for r in sold}
    assert len(sold) == stock and set(owners.values()) == {1}, (len(sold), owners.most_common(1))
    assert len(codes) == stock and None not in codes, len(codes)
    assert left == 0, left
    assert tuple(debits) == (stock, -stock * PRICE), tuple(debits)
    for r in sold:
        holders = {m.chat_id for m in session.requests_of(SendMessage)
                   if r.code and r.code in (m.text or "")}
        assert holders == {r.user_id}, (r.code, holders)


async def check_lottery(db: Database, session: FakeSession, users: range,
                        updates: list[Update]) -> Counter[str]:
    async with db.transaction(readonly=True) as s:
        draws = list((await s.execute(select(Draw))).scalars())
        big = await s.scalar(select(Prize.won).where(Prize.name == "大奖"))  # type: ignore[call-overload]
        assert (await ledger.check_invariant(s)).ok
    per_member = Counter(d.user_id for d in draws)
    assert len(per_member) == len(users) and set(per_member.values()) == {1}, (
        len(per_member), per_member.most_common(1))
    assert all(d.cost == 0 for d in draws)  # each member's one free draw of the day
    won = Counter(d.prize_name for d in draws)
    assert won["大奖"] == big and big is not None and big <= PRIZE_STOCK, (won, big)
    ids = {u.callback_query.id for u in updates if u.callback_query}
    answered = Counter(a.callback_query_id for a in session.requests_of(AnswerCallbackQuery)
                       if a.callback_query_id in ids)
    assert len(answered) == len(ids) and set(answered.values()) == {1}, len(answered)
    for text in (m.text or "" for m in session.requests_of(SendMessage) if m.chat_id == POND.id):
        assert not re.search(r"\b[A-Z0-9]{10}\b", text), text  # no code ever in the group
    return won


async def run(n: int, stock: int, batch: int) -> dict[str, float]:
    async with rig(bare_dispatcher()) as r:
        dp, bot, db, outbox, session = r.dp, r.bot, r.db, r.outbox, r.session
        bare, floor_bot = r.bare, r.floor_bot
        users = range(1_000_000, 1_000_000 + n)
        warm_users = range(5_000_000, 5_000_300)
        await seed(db, users)
        await seed(db, warm_users)
        item_id = await stock_the_shop(dp, bot, db, outbox, stock)
        board = await post_board(dp, bot, session, outbox)

        # Warm-up: imports and statement caches; a /shop look and an unknown item.
        warm = [command(10 + i, member(uid), "/redeem 999999")
                for i, uid in enumerate(warm_users)]
        await feed(bare, floor_bot, warm, batch)
        await feed(dp, bot, warm, batch)
        tune_gc()  # as `pondbot run` does once it serves (applies to both dispatchers)

        redeem = [command(100_000 + i, member(uid), f"/redeem {item_id}")
                  for i, uid in enumerate(users)]
        floor_s = await feed(bare, floor_bot, redeem, batch)
        real_s = await feed(dp, bot, redeem, batch)
        floor_s = min(floor_s, await feed(bare, floor_bot, redeem, batch))
        await settle(outbox)
        await check_shop(db, session, item_id, stock)

        presses = [press(200_000 + i, uid, board) for i, uid in enumerate(users)]
        floor_d = await feed(bare, floor_bot, presses, batch)
        real_d = await feed(dp, bot, presses, batch)
        floor_d = min(floor_d, await feed(bare, floor_bot, presses, batch))
        await dp["lottery_board"].idle()
        await settle(outbox)
        won = await check_lottery(db, session, users, presses)
        group_messages = sum(1 for q in session.requests if getattr(q, "chat_id", None) == POND.id)
    return {
        "redeem_per_s": n / real_s,
        "redeem_floor_per_s": n / floor_s,
        "redeem_ratio": floor_s / real_s,
        "draw_per_s": n / real_d,
        "draw_floor_per_s": n / floor_d,
        "draw_ratio": floor_d / real_d,
        "big_prizes": float(won["大奖"]),
        "group_messages": float(group_messages),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="distinct members (10000)")
    parser.add_argument("--stock", type=int, default=100, help="coupons left (100)")
    parser.add_argument("--batch", type=int, default=100,
                        help="updates per getUpdates batch (100, Telegram's maximum)")
    args = parser.parse_args(argv)
    failures = Failures.installed()
    r = asyncio.run(run(args.n, args.stock, args.batch))
    if failures.records:
        raise SystemExit(f"{len(failures.records)} errors logged, the first: "
                         f"{failures.records[0].getMessage()}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"shop and lottery storm: N={args.n} members, {args.stock} coupons, "
          f"batches of {args.batch}, SQLite file")
    print(f"  [redeem]  exact: {args.stock} sold, {args.stock} distinct codes, each only in "
          f"its owner's DM, stock 0")
    print(f"    pondbot (build_dispatcher): {r['redeem_per_s']:8.0f} /redeem/s")
    print(f"    bare aiogram, answers once: {r['redeem_floor_per_s']:8.0f} updates/s")
    print(f"    ratio: {r['redeem_ratio']:.2f}   (target >= 0.7)")
    print(f"  [lottery board]  exact: {args.n} draws, one each, every press answered once, "
          f"the stocked prize won {r['big_prizes']:.0f}/{PRIZE_STOCK}")
    print(f"    pondbot (build_dispatcher): {r['draw_per_s']:8.0f} draws/s")
    print(f"    bare aiogram, answers once: {r['draw_floor_per_s']:8.0f} updates/s")
    print(f"    ratio: {r['draw_ratio']:.2f}   (target >= 0.7)")
    print(f"  group messages sent: {r['group_messages']:.0f}")
    print(f"  peak RSS: {rss_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
