"""The members' page's "My coupons" (`GET /app/api/mine`) and the tier's discount on
`GET /app/api/me`, through the page's aiohttp app over the production dispatcher and a
real migrated SQLite file: the member's own redemptions and draws — what `/mine` lists,
with the codes their DM got — newest first, page after page; nobody else's; nothing at
all without a genuine initData."""

from __future__ import annotations

import random
import re
from datetime import timedelta

from aiogram.methods import SendMessage
from sqlalchemy import select

from storage.models import Draw, Redemption, RedemptionStatus, utcnow
from tests.rig.client import person, private_chat
from tests.webapp.conftest import MEMBER_ID, OPERATOR_ID, TOKEN, Page, init_data, link_dm

OTHER_ID = 700_002


async def seed(p: Page) -> tuple[int, int]:
    """The member: a coupon redeemed (its code in their DM), a draw won (5 points), goods
    redeemed, in that order; another member redeems the coupon too. The two item ids."""
    op = p.h.member(p.group, person(OPERATOR_ID, "Op"))
    other = person(OTHER_ID, "虾米", "shrimp")
    await p.h.member(p.group, p.member).send("/checkin")
    await p.h.member(p.group, other).send("/checkin")
    await op.send("/give @fish 100 welcome")
    await op.send("/give @shrimp 100 welcome")
    await link_dm(p)
    await p.h.member(private_chat(other), other).send("/start")
    coupon = await p.add_item("30 5 limit=0 满100减10")
    goods = await p.add_item("20 5 limit=0 kind=goods 帆布袋")
    await op.send("/prize add 1 - points=5 五积分")
    await p.h.member(p.group, p.member).send(f"/redeem {coupon}")
    await p.h.settle()
    await p.h.member(p.group, p.member).send("/draw")
    await p.h.settle()
    await p.h.member(p.group, p.member).send(f"/redeem {goods}")
    await p.h.member(p.group, other).send(f"/redeem {coupon}")
    await p.h.settle()
    return coupon, goods


async def test_mine_lists_the_members_redemptions_and_draws_newest_first(page: Page) -> None:
    coupon, goods = await seed(page)
    status, body = await page.get("mine")
    assert status == 200, body
    assert body["next"] is None
    got = [(e["type"], e["name"], e["status"], e.get("code")) for e in body["entries"]]
    async with page.db.transaction(readonly=True) as s:
        reds = {r.user_id: r for r in (await s.execute(
            select(Redemption).where(Redemption.item_id == coupon))).scalars()}  # type: ignore[arg-type]
    code = reds[MEMBER_ID].code
    assert code and reds[MEMBER_ID].status == RedemptionStatus.delivered.value
    assert got == [
        ("redemption", "帆布袋", "pending", None),
        ("draw", "五积分", "won_points", None),
        ("redemption", "满100减10", "delivered", code),
    ]
    draw = body["entries"][1]
    assert (draw["cost"], draw["won_points"], draw["redemption_id"]) == (0, 5, None)
    assert [e["item_id"] for e in body["entries"] if e["type"] == "redemption"] == [goods, coupon]
    times = [e["created_at"] for e in body["entries"]]
    assert times == sorted(times, reverse=True)
    # the code the page shows is the one the member's DM got
    assert any(m.chat_id == MEMBER_ID and code in m.text
               for m in page.h.session.requests_of(SendMessage))
    # … and /mine in the DM lists the same redemptions with the same code
    await page.h.member(private_chat(page.member), page.member).send("/mine")
    await page.h.settle()
    listed = page.h.replies(MEMBER_ID)[-1]
    ids = [int(i) for i in re.findall(r"#(\d+)", listed)]
    assert ids == [e["id"] for e in body["entries"] if e["type"] == "redemption"]
    assert code in listed and "五积分" in listed

    # another member sees their own redemption only: never this member's code
    other_code = reds[OTHER_ID].code
    status, theirs = await page.get("mine", data=init_data(OTHER_ID, first_name="虾米"))
    assert status == 200
    assert [(e["type"], e["code"]) for e in theirs["entries"]] == [("redemption", other_code)]
    assert code not in str(theirs)
    # someone with nothing gets the empty page
    status, nobody = await page.get("mine", data=init_data(700_003, first_name="路人"))
    assert (status, nobody) == (200, {"entries": [], "next": None})


async def test_a_refunded_code_is_not_shown(page: Page) -> None:
    coupon, _goods = await seed(page)
    async with page.db.transaction(readonly=True) as s:
        rid = await s.scalar(select(Redemption.id).where(  # type: ignore[call-overload]
            Redemption.user_id == MEMBER_ID, Redemption.item_id == coupon))
    await page.h.member(page.group, person(OPERATOR_ID, "Op")).send(f"/refund {rid} 过期")
    await page.h.settle()
    _, body = await page.get("mine")
    refunded = next(e for e in body["entries"] if e["id"] == rid and e["type"] == "redemption")
    assert (refunded["status"], refunded["code"]) == ("refunded", None)


async def test_forged_stale_or_missing_init_data_gets_401_and_nothing(page: Page) -> None:
    await seed(page)
    genuine = init_data()
    forged = genuine[:-1] + ("0" if genuine[-1] != "0" else "1")
    someone_else = genuine.replace(str(MEMBER_ID), str(OTHER_ID))
    stale = init_data(at=utcnow() - timedelta(days=2))
    for reason, data in [("forged", forged), ("forged", someone_else), ("stale", stale),
                         ("missing", "")]:
        status, body = await page.get("mine", data=data)
        assert (status, body) == (401, {"error": "unauthorized", "reason": reason})
        assert TOKEN not in str(body)
    status, body = await page.get("mine", data=forged, before="99.99")
    assert status == 401 and "entries" not in body


async def test_mine_pages_fifty_at_a_time_nothing_skipped_or_twice(page: Page) -> None:
    """130 of the member's redemptions and draws, interleaved in time (some at the same
    instant), and another member's among them: every one of the member's exactly once,
    newest first, 50 a page."""
    coupon = await page.add_item("30 5 limit=0 满100减10")
    rng = random.Random(7)
    start = utcnow() - timedelta(days=1)
    async with page.db.transaction() as s:
        for k in range(130):
            at = start + timedelta(seconds=k // 2)  # pairs share an instant
            user = MEMBER_ID if k % 9 else OTHER_ID
            if rng.random() < 0.5:
                s.add(Redemption(item_id=coupon, user_id=user, price=30, code=f"C{k:04d}",
                                 status=RedemptionStatus.delivered.value,
                                 source_key=f"test:r{k}", created_at=at))
            else:
                s.add(Draw(user_id=user, day=at.date(), cost=10, prize_name=f"P{k}",
                           source_key=f"test:d{k}", created_at=at))
            await s.flush()
    async with page.db.transaction(readonly=True) as s:
        mine_r = (await s.execute(select(Redemption.id).where(  # type: ignore[call-overload]
            Redemption.user_id == MEMBER_ID))).scalars().all()
        mine_d = (await s.execute(select(Draw.id).where(  # type: ignore[call-overload]
            Draw.user_id == MEMBER_ID))).scalars().all()
    expected = {("redemption", i) for i in mine_r} | {("draw", i) for i in mine_d}

    seen: list[tuple[str, int]] = []
    times: list[str] = []
    sizes: list[int] = []
    before: str | None = None
    while True:
        status, body = await page.get("mine", **({"before": before} if before else {}))
        assert status == 200, body
        sizes.append(len(body["entries"]))
        seen += [(e["type"], e["id"]) for e in body["entries"]]
        times += [e["created_at"] for e in body["entries"]]
        assert all(e["code"] is None or e["code"].startswith("C")
                   for e in body["entries"] if e["type"] == "redemption")
        before = body["next"]
        if before is None:
            break
    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert sizes == [50, 50, len(expected) - 100]
    assert times == sorted(times, reverse=True)
    for bad in ("abc", "12", "0.5", "5.0", "1.2.3", "-1.2"):
        status, body = await page.get("mine", before=bad)
        assert (status, body["error"]) == (400, "bad_before"), bad


async def test_me_tells_the_tiers_discount(page: Page) -> None:
    await page.h.member(page.group, page.member).send("/checkin")
    await page.h.settle()
    _, me = await page.get("me")
    assert (me["tier"], me["discount"]) == ("member", None)
    await page.h.member(page.group, person(OPERATOR_ID, "Op")).send("/order @fish 10 A-1")
    await page.h.settle()
    _, me = await page.get("me")
    assert (me["tier"], me["discount"]) == ("VIP1", "9.8")  # the default tiers: VIP1 9.8折
    assert {"user_id", "balance", "tier", "streak", "rank"} <= set(me)
