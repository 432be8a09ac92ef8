"""Ponds, members and memberships on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select
from sqlmodel import col

from storage import ledger, plans, promo, repo
from storage.db import Database
from storage.models import (
    LedgerKind,
    Member,
    Membership,
    Pond,
    PondStatus,
    SaleCampaign,
    SalesPlan,
    utcnow,
)
from storage.repo import UserInfo

OLD, NEW = -4001, -1004001  # a group and the supergroup it became


async def memberships(db: Database) -> dict[tuple[int, int], Membership]:
    async with db.transaction(readonly=True) as s:
        rows = (await s.execute(select(Membership))).scalars().all()
    return {(m.chat_id, m.user_id): m for m in rows}


async def pond(db: Database, chat_id: int) -> Pond | None:
    async with db.transaction(readonly=True) as s:
        return await repo.get_pond(s, chat_id)


async def test_member_upsert_refreshes_names_and_keeps_the_wallet(db: Database) -> None:
    async with db.transaction() as s:
        await repo.upsert_member(
            s,
            UserInfo(id=7, first_name="Lin", last_name="Wei", username="LinW", language_code="zh"),
        )
        await ledger.award(s, user_id=7, amount=40, kind=LedgerKind.purchase, key="order:1")
    async with db.transaction() as s:
        await repo.upsert_member(s, UserInfo(id=7, first_name="小林", username="lin_new"))
        await repo.link_dm(s, 7)
    async with db.transaction(readonly=True) as s:
        view = await repo.get_member(s, 7)
        member = await s.get(Member, 7)
    assert view is not None and member is not None
    assert (view.username, view.display_name, view.balance, view.lifetime_earned) == (
        "lin_new",
        "小林",
        40,
        40,
    )
    assert (member.last_name, member.language_code, member.dm_linked) == ("", None, True)
    assert member.updated_at >= member.created_at


async def test_username_lookup_is_case_insensitive(db: Database) -> None:
    async with db.transaction() as s:
        await repo.upsert_member(s, UserInfo(id=1, first_name="A", username="ShopFan"))
        await repo.upsert_member(s, UserInfo(id=2, first_name="B"))
    async with db.transaction(readonly=True) as s:
        for name in ("ShopFan", "shopfan", "@SHOPFAN", "@shopFan"):
            found = await repo.find_member_by_username(s, name)
            assert found is not None and found.user_id == 1, name
        assert await repo.find_member_by_username(s, "nobody") is None
        assert await repo.find_member_by_username(s, "@") is None
    async with db.transaction() as s:  # renamed: the old name no longer resolves
        await repo.upsert_member(s, UserInfo(id=1, first_name="A", username="NewName"))
    async with db.transaction(readonly=True) as s:
        assert await repo.find_member_by_username(s, "shopfan") is None
        found = await repo.find_member_by_username(s, "newname")
        assert found is not None and found.user_id == 1


async def test_display_name_falls_back_to_username_then_id(db: Database) -> None:
    async with db.transaction() as s:
        await repo.upsert_member(s, UserInfo(id=5, username="only_user"))
        await repo.upsert_member(s, UserInfo(id=6))
    async with db.transaction(readonly=True) as s:
        five, six = await repo.get_member(s, 5), await repo.get_member(s, 6)
    assert five is not None and five.display_name == "@only_user"
    assert six is not None and six.display_name == "6"


async def test_upsert_pond_status_handling(db: Database) -> None:
    async with db.transaction() as s:
        await repo.upsert_pond(s, OLD, title="鱼塘一号", chat_type="group")
    p = await pond(db, OLD)
    assert p is not None
    assert (p.status, p.timezone, p.language, p.title) == (
        "active",
        "Asia/Shanghai",
        "zh",
        "鱼塘一号",
    )
    async with db.transaction() as s:  # kicked
        await repo.upsert_pond(
            s, OLD, title="鱼塘一号", chat_type="group", status=PondStatus.inactive
        )
    p = await pond(db, OLD)
    assert p is not None and p.status == "inactive"
    async with db.transaction() as s:  # a title change alone does not revive the pond
        await repo.upsert_pond(
            s, OLD, title="鱼塘 1", chat_type="group", default_timezone="UTC", default_language="en"
        )
    p = await pond(db, OLD)
    assert p is not None
    assert (p.status, p.title, p.timezone, p.language) == (
        "inactive",
        "鱼塘 1",
        "Asia/Shanghai",
        "zh",
    )
    async with db.transaction() as s:  # added again
        await repo.upsert_pond(s, OLD, title="鱼塘 1", chat_type="group", status=PondStatus.active)
    p = await pond(db, OLD)
    assert p is not None and p.status == "active"
    async with db.transaction() as s:
        await repo.set_pond_status(s, OLD, PondStatus.inactive)
    p = await pond(db, OLD)
    assert p is not None and p.status == "inactive"


async def test_membership_join_seen_leave(db: Database) -> None:
    t0 = utcnow()
    async with db.transaction() as s:
        await repo.upsert_pond(s, OLD, title="g", chat_type="group")
        await repo.touch_membership(s, OLD, 1, status="member", now=t0)
        await repo.touch_membership(s, OLD, 1, now=t0 + timedelta(minutes=5))
    m = (await memberships(db))[(OLD, 1)]
    assert (m.status, m.joined_at, m.first_seen_at, m.last_seen_at, m.left_at) == (
        "member",
        t0,
        t0,
        t0 + timedelta(minutes=5),
        None,
    )
    async with db.transaction() as s:
        await repo.touch_membership(s, OLD, 1, status="left", now=t0 + timedelta(hours=1))
    m = (await memberships(db))[(OLD, 1)]
    assert (m.status, m.joined_at, m.left_at) == ("left", t0, t0 + timedelta(hours=1))


async def test_migrate_pond_keeps_memberships_and_is_idempotent(db: Database) -> None:
    t0 = utcnow() - timedelta(days=3)
    async with db.transaction() as s:
        await repo.upsert_pond(s, OLD, title="老群", chat_type="group", now=t0)
        for uid, status in ((1, "member"), (2, "administrator"), (3, "left")):
            await repo.upsert_member(s, UserInfo(id=uid, first_name=f"u{uid}"))
            await repo.touch_membership(s, OLD, uid, status=status, now=t0)
    before = await memberships(db)

    for _ in range(2):  # both service messages arrive, and one of them twice
        async with db.transaction() as s:
            await repo.migrate_pond(s, OLD, NEW)
        old, new = await pond(db, OLD), await pond(db, NEW)
        assert old is not None and new is not None
        assert (old.status, old.migrated_to) == ("migrated", NEW)
        assert (new.status, new.chat_type, new.title, new.timezone) == (
            "active",
            "supergroup",
            "老群",
            "Asia/Shanghai",
        )
        after = await memberships(db)
        assert set(after) == {(NEW, 1), (NEW, 2), (NEW, 3)}
        for uid in (1, 2, 3):
            b, a = before[(OLD, uid)], after[(NEW, uid)]
            assert (a.status, a.joined_at, a.left_at, a.first_seen_at) == (
                b.status,
                b.joined_at,
                b.left_at,
                b.first_seen_at,
            )

    async with db.transaction() as s:  # an unknown old id is ignored
        await repo.migrate_pond(s, -999, -1000999)
    assert await pond(db, -1000999) is None


async def test_migrate_pond_when_the_supergroup_was_seen_first(db: Database) -> None:
    """A member spoke in the supergroup before the migration message arrived."""
    async with db.transaction() as s:
        await repo.upsert_pond(s, OLD, title="老群", chat_type="group")
        await repo.upsert_pond(s, NEW, title="老群", chat_type="supergroup")
        await repo.touch_membership(s, OLD, 1, status="administrator")
        await repo.touch_membership(s, OLD, 2, status="member")
        await repo.touch_membership(s, NEW, 2, status="member")
        await repo.migrate_pond(s, OLD, NEW)
    assert set(await memberships(db)) == {(NEW, 1), (NEW, 2)}
    assert (await memberships(db))[(NEW, 1)].status == "administrator"


async def test_migrate_pond_takes_its_campaigns_and_plans_along(db: Database) -> None:
    """A campaign whose name the supergroup already has keeps the supergroup's; the
    shop-wide ones (scope 0) and other ponds' stay where they are."""
    now = utcnow()
    async with db.transaction() as s:
        await repo.upsert_pond(s, OLD, title="老群", chat_type="group")
        await repo.upsert_pond(s, NEW, title="老群", chat_type="supergroup")
        for scope, name, day in ((OLD, "双十一", date(2026, 11, 11)),
                                 (OLD, "618", date(2027, 6, 18)),
                                 (NEW, "618", date(2027, 6, 1)),
                                 (0, "双十二", date(2026, 12, 12)),
                                 (-77, "双十一", date(2026, 11, 11))):
            await promo.save_campaign(s, scope, name, day, by=1, now=now)
        for n, scope in enumerate((OLD, OLD, 0)):
            await plans.save_plan(s, scope, 100 + n, 5, set_by=1, source_key=f"p{n}", now=now)
        await repo.migrate_pond(s, OLD, NEW)
        await repo.migrate_pond(s, OLD, NEW)  # twice: harmless
    async with db.transaction(readonly=True) as s:
        rows = (await s.execute(select(SaleCampaign))).scalars().all()
        assert sorted((c.scope, c.name, c.sale_day) for c in rows) == sorted([
            (NEW, "双十一", date(2026, 11, 11)),
            (NEW, "618", date(2027, 6, 1)),  # the supergroup's own
            (OLD, "618", date(2027, 6, 18)),  # left behind, not merged
            (0, "双十二", date(2026, 12, 12)),
            (-77, "双十一", date(2026, 11, 11)),
        ])
        stored = (await s.execute(select(SalesPlan).order_by(col(SalesPlan.id)))).scalars().all()
        assert [(p.chat_id, p.sales) for p in stored] == [(NEW, 100), (NEW, 101), (0, 102)]
        latest = await plans.last_plan(s, NEW)
        assert latest is not None and latest.sales == 101


async def test_top_and_rank(db: Database) -> None:
    async with db.transaction() as s:
        for uid, pts in ((1, 30), (2, 50), (3, 0), (4, 30)):
            await repo.upsert_member(s, UserInfo(id=uid, first_name=f"u{uid}"))
            if pts:
                await ledger.award(s, user_id=uid, amount=pts, kind=LedgerKind.vote, key=f"v{uid}")
        await repo.upsert_member(s, UserInfo(id=9, first_name="bot", is_bot=True))
        await ledger.award(s, user_id=9, amount=999, kind=LedgerKind.vote, key="v9")
    async with db.transaction(readonly=True) as s:
        top = await repo.top_members(s, limit=3)
        ranks = [await repo.rank_of(s, uid) for uid in (2, 1, 4, 3)]
        ids = (await s.execute(select(col(Member.user_id)))).scalars().all()
    assert [m.user_id for m in top] == [2, 1, 4]
    assert ranks == [1, 2, 2, None]  # ties share a rank; bots are not ranked above anyone
    assert sorted(ids) == [1, 2, 3, 4, 9]
