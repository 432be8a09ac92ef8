"""The shop in the database on SQLite and PostgreSQL: redemptions exact under
concurrency, idempotent per command, refunds once, lottery grants, uploaded codes."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import col

from games.shop import CODE_ALPHABET, CODE_LENGTH, ItemArgs
from storage import ledger, shop
from storage.db import Database
from storage.export import export_redemptions
from storage.ledger import InsufficientPoints
from storage.models import (
    CodeState,
    LedgerEntry,
    LedgerKind,
    Member,
    RedemptionStatus,
    ShopCode,
)
from storage.repo import UserInfo, link_dm, upsert_member
from storage.shop import ShopError

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


async def members(db: Database, *user_ids: int, points: int = 100, linked: bool = True) -> None:
    async with db.transaction() as s:
        for uid in user_ids:
            await upsert_member(s, UserInfo(id=uid, first_name=f"user{uid}"))
            if linked:
                await link_dm(s, uid)
            if points:
                await ledger.award(
                    s, user_id=uid, amount=points, kind=LedgerKind.admin_adjust,
                    key=f"seed:{uid}",
                )


async def item(db: Database, *, price: int = 10, stock: int = 5, limit: int = 1,
               kind: str = "coupon", key: str = "op:1", **extra: object) -> shop.ItemView:
    async with db.transaction() as s:
        view, applied = await shop.add_item(
            s, ItemArgs(price, stock, "满100减10", limit=limit, kind=kind, **extra),  # type: ignore[arg-type]
            source_key=key, created_by=1, now=NOW,
        )
    assert applied
    return view


async def redeem(db: Database, item_id: int, user_id: int, key: str,
                 now: datetime = NOW) -> shop.RedemptionView:
    async with db.transaction() as s:
        return await shop.redeem(
            s, item_id=item_id, user_id=user_id, chat_id=-100, source_key=key, now=now
        )


async def balance(db: Database, user_id: int) -> int:
    async with db.transaction(readonly=True) as s:
        value = await s.scalar(
            select(col(Member.balance)).where(col(Member.user_id) == user_id)
        )
    return int(value or 0)


async def invariant_ok(db: Database) -> bool:
    async with db.transaction(readonly=True) as s:
        return (await ledger.check_invariant(s)).ok


async def test_redeem_debits_takes_stock_and_assigns_a_generated_code(db: Database) -> None:
    await members(db, 1)
    it = await item(db)
    r = await redeem(db, it.id, 1, "-100:7")
    assert r.applied and r.price == 10 and r.status is RedemptionStatus.undelivered
    assert r.code is not None and len(r.code) == CODE_LENGTH
    assert set(r.code) <= set(CODE_ALPHABET)
    assert r.dm_linked
    assert await balance(db, 1) == 90
    async with db.transaction(readonly=True) as s:
        after = await shop.get_item(s, it.id)
        codes = (await s.execute(select(ShopCode))).scalars().all()
    assert after is not None and after.stock == 4 and after.redeemed == 1
    assert [(c.code, c.state, c.redemption_id, c.generated) for c in codes] == [
        (r.code, CodeState.assigned, r.id, True)
    ]
    assert await invariant_ok(db)


async def test_a_replayed_command_pays_once_and_returns_the_first_redemption(
    db: Database,
) -> None:
    await members(db, 1)
    it = await item(db, limit=0)
    first = await redeem(db, it.id, 1, "-100:7")
    again = await redeem(db, it.id, 1, "-100:7")
    assert not again.applied and again.id == first.id and again.code == first.code
    assert await balance(db, 1) == 90
    async with db.transaction(readonly=True) as s:
        after = await shop.get_item(s, it.id)
    assert after is not None and after.stock == 4


async def test_refusals_change_nothing(db: Database) -> None:
    await members(db, 1, points=15)
    it = await item(db, price=10, stock=3, limit=1)
    await redeem(db, it.id, 1, "k1")
    with pytest.raises(ShopError) as exc:
        await redeem(db, it.id, 1, "k2")
    assert exc.value.code == "limit" and exc.value.limit == 1
    pricey = await item(db, price=50, key="op:2", limit=0)
    with pytest.raises(InsufficientPoints):
        await redeem(db, pricey.id, 1, "k3")
    with pytest.raises(ShopError) as exc:
        await redeem(db, 999, 1, "k4")
    assert exc.value.code == "unknown_item"
    async with db.transaction() as s:
        await shop.set_on_sale(s, it.id, False, now=NOW)
    with pytest.raises(ShopError) as exc:
        await redeem(db, it.id, 1, "k5")
    assert exc.value.code == "off_sale"
    async with db.transaction(readonly=True) as s:
        a = await shop.get_item(s, it.id)
        b = await shop.get_item(s, pricey.id)
        mine = await shop.of_member(s, 1)
    assert a is not None and (a.stock, a.redeemed) == (2, 1)
    assert b is not None and (b.stock, b.redeemed) == (5, 0)
    assert len(mine) == 1
    assert await balance(db, 1) == 5
    assert await invariant_ok(db)


async def test_active_dates_are_local_days_of_the_shop(db: Database) -> None:
    await members(db, 1)
    it = await item(db, limit=0, active_from=date(2026, 12, 7), active_until=date(2026, 12, 8))
    # 2026-12-06 16:30 UTC is 12-07 00:30 in Shanghai: on sale.
    with pytest.raises(ShopError) as exc:
        await redeem(db, it.id, 1, "a", now=datetime(2026, 12, 6, 15, 59, tzinfo=UTC))
    assert exc.value.code == "not_yet"
    await redeem(db, it.id, 1, "b", now=datetime(2026, 12, 6, 16, 30, tzinfo=UTC))
    with pytest.raises(ShopError) as exc:
        await redeem(db, it.id, 1, "c", now=datetime(2026, 12, 8, 16, 0, tzinfo=UTC))
    assert exc.value.code == "ended"


async def test_goods_wait_pending_and_are_fulfilled_once(db: Database) -> None:
    await members(db, 1)
    it = await item(db, kind="goods")
    r = await redeem(db, it.id, 1, "g")
    assert r.code is None and r.status is RedemptionStatus.pending
    async with db.transaction() as s:
        view, applied = await shop.fulfil(s, r.id, actor_id=9, now=NOW)
    assert applied and view.status is RedemptionStatus.fulfilled
    async with db.transaction() as s:
        _, applied = await shop.fulfil(s, r.id, actor_id=9, now=NOW)
    assert not applied
    async with db.transaction() as s:
        with pytest.raises(ShopError) as exc:
            await shop.fulfil(s, 4242, actor_id=9, now=NOW)
    assert exc.value.code == "unknown_redemption"


async def test_refund_twice_refunds_once_returns_stock_and_voids_the_code(
    db: Database,
) -> None:
    await members(db, 1)
    it = await item(db)
    r = await redeem(db, it.id, 1, "r")
    results = []
    for _ in range(2):
        async with db.transaction() as s:
            results.append(await shop.refund(s, r.id, actor_id=9, reason="broken", now=NOW))
    assert [x.applied for x in results] == [True, False]
    assert results[0].points == 10 and results[0].stock_back
    assert results[1].redemption.status is RedemptionStatus.refunded
    assert await balance(db, 1) == 100
    async with db.transaction(readonly=True) as s:
        after = await shop.get_item(s, it.id)
        code = (await s.execute(select(ShopCode))).scalars().one()
        kinds = Counter(
            e.kind for e in (await s.execute(select(LedgerEntry))).scalars()
        )
    assert after is not None and (after.stock, after.redeemed) == (5, 0)
    assert code.state == CodeState.void
    assert kinds == Counter({"admin_adjust": 1, "redeem": 1, "refund": 1})
    # Refunded redemptions do not count against the limit.
    again = await redeem(db, it.id, 1, "r2")
    assert again.applied and again.code != r.code
    assert await invariant_ok(db)


async def test_refunding_a_pool_code_voids_it_and_the_stock_stays(db: Database) -> None:
    await members(db, 1)
    it = await item(db, stock=0)
    async with db.transaction() as s:
        added = await shop.add_codes(s, it.id, ["A1", "A2"], now=NOW)
    assert added.item.stock == 2 and added.item.pool
    r = await redeem(db, it.id, 1, "p")
    assert r.code == "A1"
    async with db.transaction() as s:
        done = await shop.refund(s, r.id, actor_id=9, reason="", now=NOW)
    assert done.applied and not done.stock_back
    async with db.transaction(readonly=True) as s:
        after = await shop.get_item(s, it.id)
        states = dict(
            (c.code, c.state) for c in (await s.execute(select(ShopCode))).scalars()
        )
    assert after is not None and (after.stock, after.redeemed) == (1, 0)
    assert states == {"A1": CodeState.void, "A2": CodeState.free}
    r2 = await redeem(db, it.id, 1, "p2")
    assert r2.code == "A2"  # the voided code is never given again


async def test_add_codes_skips_codes_already_in_the_pool(db: Database) -> None:
    it = await item(db, stock=7)
    async with db.transaction() as s:
        first = await shop.add_codes(s, it.id, ["X1", "X2", "X3"], now=NOW)
    async with db.transaction() as s:
        second = await shop.add_codes(s, it.id, ["X3", "X4", "X1"], now=NOW)
    assert (first.added, first.already_in_pool) == (3, ())
    assert (second.added, second.already_in_pool) == (1, ("X3", "X1"))
    assert second.item.stock == 4  # a pool item's stock is its free codes
    goods = await item(db, kind="goods", key="op:g")
    async with db.transaction() as s:
        with pytest.raises(ShopError) as exc:
            await shop.add_codes(s, goods.id, ["Y"], now=NOW)
    assert exc.value.code == "goods_no_codes"


async def test_grant_gives_a_unit_free_and_is_idempotent(db: Database) -> None:
    await members(db, 1, points=0)
    it = await item(db, price=30, stock=1, limit=1)
    async with db.transaction() as s:
        g = await shop.grant(s, item_id=it.id, user_id=1, chat_id=None, source_key="draw:1",
                             now=NOW)
        again = await shop.grant(s, item_id=it.id, user_id=1, chat_id=None,
                                 source_key="draw:1", now=NOW)
        none = await shop.grant(s, item_id=it.id, user_id=1, chat_id=None,
                                source_key="draw:2", now=NOW)
        unknown = await shop.grant(s, item_id=77, user_id=1, chat_id=None,
                                   source_key="draw:3", now=NOW)
    assert g is not None and g.applied and g.via_draw and g.price == 0 and g.code
    assert again is not None and not again.applied and again.id == g.id
    assert none is None and unknown is None  # out of stock / unknown
    assert await balance(db, 1) == 0
    assert await invariant_ok(db)


async def test_mark_delivered_is_idempotent_and_undelivered_lists_waiting_codes(
    db: Database,
) -> None:
    await members(db, 1, linked=False)
    it = await item(db, limit=0)
    a = await redeem(db, it.id, 1, "d1")
    b = await redeem(db, it.id, 1, "d2")
    assert not a.dm_linked
    async with db.transaction() as s:
        assert await shop.mark_delivered(s, a.id, now=NOW)
        assert not await shop.mark_delivered(s, a.id, now=NOW)
        waiting = await shop.undelivered(s, 1)
    assert [w.id for w in waiting] == [b.id]


async def test_100_members_storm_the_last_5_units(db: Database) -> None:
    """Concurrent sessions (truly concurrent on PostgreSQL): exactly 5 sold, 5 distinct
    codes, nobody debited twice, the limit held for a member trying twice."""
    users = list(range(1000, 1100))
    await members(db, *users)
    it = await item(db, price=10, stock=5, limit=1)

    async def attempt(uid: int, key: str) -> shop.RedemptionView | Exception:
        try:
            return await redeem(db, it.id, uid, key)
        except (ShopError, InsufficientPoints) as exc:
            return exc

    jobs = [attempt(uid, f"-100:{uid}") for uid in users]
    jobs += [attempt(uid, f"-100:{uid}:again") for uid in users[:50]]  # tries twice
    outcomes = await asyncio.gather(*jobs)
    won = [o for o in outcomes if isinstance(o, shop.RedemptionView)]
    refused = Counter(o.code for o in outcomes if isinstance(o, ShopError))
    assert len(won) == 5
    assert len({w.code for w in won}) == 5
    assert len({w.user_id for w in won}) == 5  # the limit held
    assert sum(refused.values()) == len(jobs) - 5
    assert set(refused) <= {"sold_out", "limit"}
    async with db.transaction(readonly=True) as s:
        after = await shop.get_item(s, it.id)
        debits = Counter(
            e.user_id
            for e in (await s.execute(select(LedgerEntry))).scalars()
            if e.kind == LedgerKind.redeem
        )
    assert after is not None and (after.stock, after.redeemed) == (0, 5)
    assert debits == Counter({w.user_id: 1 for w in won})
    for uid in users:
        assert await balance(db, uid) == (90 if uid in debits else 100)
    assert await invariant_ok(db)


async def test_one_command_delivered_concurrently_pays_once(db: Database) -> None:
    await members(db, 1)
    it = await item(db, limit=0)
    outcomes = await asyncio.gather(*(redeem(db, it.id, 1, "same") for _ in range(10)))
    assert len({o.id for o in outcomes}) == 1
    assert sum(o.applied for o in outcomes) == 1
    assert await balance(db, 1) == 90
    async with db.transaction(readonly=True) as s:
        after = await shop.get_item(s, it.id)
    assert after is not None and after.stock == 4
    assert await invariant_ok(db)


async def test_export_redemptions_and_import_codes(db: Database, db_url: str,
                                                   tmp_path: Path) -> None:
    await members(db, 1, 2)
    it = await item(db, price=10, stock=0, limit=0)
    path = tmp_path / "codes.csv"
    path.write_text("code\nQ1,x\nQ2\nQ1\n\nbad code\n", encoding="utf-8-sig")
    done = await asyncio.to_thread(shop.import_codes_file, db_url, it.id, path)
    assert (done.added, done.repeated, done.already_in_pool, done.bad_lines, done.stock) == (
        2, ("Q1",), (), (6,), 2
    )
    path.write_text("Q2\nQ3\n", encoding="utf-8")
    again = await asyncio.to_thread(shop.import_codes_file, db_url, it.id, path)
    assert (again.added, again.already_in_pool, again.stock) == (1, ("Q2",), 3)
    with pytest.raises(ShopError):
        await asyncio.to_thread(shop.import_codes_file, db_url, 999, path)
    async with db.transaction() as s:
        await shop.set_on_sale(s, it.id, True, now=NOW)
    cashy = await item(db, price=5, stock=2, key="op:cash", cash_cents=990)
    await redeem(db, it.id, 1, "e1")
    await redeem(db, cashy.id, 2, "e2")
    out = io.StringIO()
    assert await export_redemptions(db, out) == 2
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["id", "item_id", "item_name", "user_id", "price", "cash", "code",
                       "status", "created_at"]
    assert [r[1:8] for r in rows[1:]] == [
        [str(it.id), "满100减10", "1", "10", "0.00", "Q1", "undelivered"],
        [str(cashy.id), "满100减10", "2", "5", "9.90", rows[2][6], "undelivered"],
    ]
    assert rows[1][8].startswith("2026-12-06T04:00:00")


def _cli(code: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process, checking it never loads aiogram."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DATABASE_"))}
    env["DATABASE_URL"] = url
    program = (
        "import sys; from bot.cli import main; "
        f"rc = main({code}); "
        "assert 'aiogram' not in sys.modules, 'aiogram imported'; sys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=cwd,
        timeout=120, check=False,
    )


async def test_pondbot_import_codes_and_export_redemptions(sqlite_url: str,
                                                           tmp_path: Path) -> None:
    db = Database(sqlite_url)
    try:
        it = await item(db, stock=0, limit=0)
        goods = await item(db, kind="goods", key="op:goods")
    finally:
        await db.dispose()
    path = tmp_path / "codes.txt"
    path.write_text("K1\nK2\nK1\n", encoding="utf-8")
    r = await asyncio.to_thread(_cli, f"['import', 'codes', '{it.id}', {str(path)!r}]",
                                sqlite_url, ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"imported 2, duplicates skipped 1; item {it.id} has 2 unused codes"
    assert "duplicate in the file, skipped: K1" in r.stderr
    r = await asyncio.to_thread(_cli, f"['import', 'codes', '{it.id}', {str(path)!r}]",
                                sqlite_url, ROOT)
    assert r.returncode == 0 and r.stdout.startswith("imported 0, duplicates skipped 3")
    assert "already in the pool, skipped: K2" in r.stderr
    for target, words in ((goods.id, "goods take no codes"), (999, "no such item")):
        r = await asyncio.to_thread(_cli, f"['import', 'codes', '{target}', {str(path)!r}]",
                                    sqlite_url, ROOT)
        assert r.returncode == 1 and words in r.stderr
    out = tmp_path / "redemptions.csv"
    r = await asyncio.to_thread(_cli, f"['export', 'redemptions', '--out', {str(out)!r}]",
                                sqlite_url, ROOT)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().decode("utf-8-sig").splitlines() == [
        "id,item_id,item_name,user_id,price,cash,code,status,created_at"
    ]


async def test_concurrent_refunds_and_redemptions_of_one_member_and_item(db: Database) -> None:
    """Refunds (redemption, item, member rows) and redemptions (item, member) running at
    once: each refund applies once, nothing waits in a circle, the books balance."""
    await members(db, 1, points=1000)
    it = await item(db, price=10, stock=40, limit=0)
    first = [await redeem(db, it.id, 1, f"a{i}") for i in range(10)]

    async def refund(rid: int) -> shop.Refund:
        async with db.transaction() as s:
            return await shop.refund(s, rid, actor_id=9, reason="", now=NOW)

    outcomes = await asyncio.gather(
        *(refund(r.id) for r in first for _ in range(2)),
        *(redeem(db, it.id, 1, f"b{i}") for i in range(10)),
    )
    refunds = [o for o in outcomes if isinstance(o, shop.Refund)]
    assert sum(o.applied for o in refunds) == 10
    assert await balance(db, 1) == 1000 - 10 * 10
    async with db.transaction(readonly=True) as s:
        after = await shop.get_item(s, it.id)
    assert after is not None and (after.stock, after.redeemed) == (30, 10)
    assert await invariant_ok(db)


async def test_a_generated_code_the_item_already_has_is_replaced(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = iter(["SAMECODE22", "SAMECODE22", "OTHERCODE3"])
    monkeypatch.setattr(shop, "generate_code", lambda: next(drawn))
    await members(db, 1)
    it = await item(db, limit=0)
    a = await redeem(db, it.id, 1, "c1")
    b = await redeem(db, it.id, 1, "c2")
    assert (a.code, b.code) == ("SAMECODE22", "OTHERCODE3")
    async with db.transaction(readonly=True) as s:
        stored = {r.id: r.code for r in await shop.of_member(s, 1)}
        codes = {c.code: c.redemption_id for c in (await s.execute(select(ShopCode))).scalars()}
    assert stored == {a.id: "SAMECODE22", b.id: "OTHERCODE3"}
    assert codes == {"SAMECODE22": a.id, "OTHERCODE3": b.id}
