"""Segments (F10) through the real Dispatcher: `/segments` counts the pond's members
per RFM segment and at churn risk; `/promo at … to=<segment>` reaches exactly the pond's
linked members of that segment, once each (also when a delivery run died in the
middle); `/redpacket at … to=churn` posts the packet in the group and tells the
segment by DM; a bad `to=` is refused with the segments and schedules nothing; `/promo
list` shows a targeted post's segment."""

from __future__ import annotations

from datetime import datetime, timedelta

from aiogram.methods import SendMessage, SendPhoto
from aiogram.types import Chat
from sqlalchemy import func, select, update
from sqlmodel import col

from storage import repo
from storage import segments as segment_store
from storage.db import Database
from storage.models import Member, Order, Pond, RedPacket, SegmentDelivery
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, OPERATOR_ID
from tests.dispatcher.test_promo import T0, Rig, group, rig  # noqa: F401 (fixtures)
from tests.rig.client import GroupClient, person, private_chat

DAY = timedelta(days=1)
# user id -> (orders as days ago, yuan each), DM linked, last seen days ago
SHOP: dict[int, tuple[list[int], int, bool, int]] = {
    1: ([5, 40, 80], 150, True, 1),  # gold: recent, 3 orders, ¥450
    2: ([2, 30, 60], 200, False, 2),  # gold, but no DM: never reached
    3: ([10], 500, True, 3),  # key: recent and ¥500, one order
    4: ([200], 50, True, 3),  # low: one small order long ago (no high at all)
    8: ([10], 50, True, 3),  # ordinary: one small order lately (recent only)
    5: ([], 0, True, 5),  # low: never bought
    6: ([], 0, True, 45),  # low and at churn risk: not seen for 45 days
    7: ([3, 4, 5], 100, True, 1),  # gold: recent, 3 orders, ¥300
}


async def seed(db: Database, now: datetime,
               shop: dict[int, tuple[list[int], int, bool, int]] = SHOP) -> None:
    """The pond and `shop`'s members with their orders, DM links and last activity."""
    async with db.transaction() as s:
        await repo.upsert_pond(s, GROUP_ID, title="Pond", chat_type="supergroup",
                               default_language="en")
        for uid, (days, yuan, linked, seen) in shop.items():
            await repo.upsert_member(s, repo.UserInfo(uid, f"U{uid}"), now)
            await repo.touch_membership(s, GROUP_ID, uid, now=now - seen * DAY)
            await repo.link_dm(s, uid, linked=linked)
            for n, ago in enumerate(days):
                s.add(Order(order_no=f"o{uid}-{n}", user_id=uid, amount_cents=yuan * 100,
                            paid_at=now - ago * DAY, source="import"))
            await s.execute(update(Member).where(Member.user_id == uid)  # type: ignore[arg-type]
                            .values(lifetime_spent_cents=len(days) * yuan * 100))


async def segments_caption(pond: Rig, boss: GroupClient) -> str:
    """`boss` sends /segments: the caption of the one report the pond got."""
    await boss.send("/segments")
    await pond.h.settle()
    [report] = pond.sent(GROUP_ID, SendPhoto)
    return str(report.caption)


async def test_segments_counts_and_a_promo_to_gold_reaches_its_linked_members_once(
    rig: Rig, group: Chat  # noqa: F811
) -> None:
    await seed(rig.db, T0)
    async with rig.db.transaction(readonly=True) as s:
        rows = await segment_store.standings(
            s, segment_store.thresholds(await repo.pond_settings(s, GROUP_ID)), T0,
            chat_id=GROUP_ID,
        )
    by_user = {r.user_id: (str(r.standing.segment), r.standing.churn_risk) for r in rows}
    assert by_user == {1: ("gold", False), 2: ("gold", False), 3: ("key", False),
                       4: ("low", False), 5: ("low", False), 6: ("low", True),
                       7: ("gold", False), 8: ("ordinary", False)}

    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    caption = await segments_caption(rig, boss)
    assert "gold (重要价值): <b>3</b> (2 reachable by DM)" in caption
    assert "churn risk (no activity for 30 days): <b>1</b>" in caption

    # A bad `to=` names the segments and schedules nothing.
    said = await rig.say(boss, "/promo at +10m Hello to=vip")
    assert said.startswith("⚠️") and "gold, key, ordinary, low, churn" in said
    said = await rig.say(boss, "/redpacket at +10m 100 5 to=vip")
    assert said.startswith("⚠️") and "gold, key, ordinary, low, churn" in said
    op = person(OPERATOR_ID, "Op")  # a global operator's broadcast has no pond's members
    said = await rig.say(rig.h.member(private_chat(op), op), "/promo at +10m Hi to=gold")
    assert said.startswith("⚠️ to=&lt;")  # (in the shop's language: Chinese)
    assert await rig.posts() == []

    await rig.say(boss, "/promo at +10m Gold members: 20% off tonight to=gold")
    [post] = await rig.posts()
    assert post.segment == "gold"
    ok, _no = rig.buttons(GROUP_ID)
    assert "✅" in await rig.click(boss, ok)
    listed = await rig.say(boss, "/promo list")  # the list says where it goes
    assert "this pond, by DM to gold (重要价值) members" in listed, listed
    group_posts = len(rig.sent(GROUP_ID))
    await rig.tick(T0 + timedelta(minutes=10))
    for _ in range(2):
        await rig.tick(T0 + timedelta(minutes=20))
    dms = {uid: [m.text for m in rig.sent(uid)] for uid in SHOP}
    assert dms[1] == dms[7] == ["Gold members: 20% off tonight"]
    assert all(dms[u] == [] for u in (2, 3, 4, 5, 6, 8))
    assert len(rig.sent(GROUP_ID)) == group_posts  # nothing in the group
    async with rig.db.transaction(readonly=True) as s:
        states = (await s.execute(select(SegmentDelivery.user_id, SegmentDelivery.state))).all()
    assert sorted(states) == [(1, "sent"), (7, "sent")]


async def test_a_delivery_that_died_midway_sends_no_second_copy(
    rig: Rig, group: Chat  # noqa: F811
) -> None:
    async with rig.db.transaction() as s:
        await repo.upsert_pond(s, GROUP_ID, title="Pond", chat_type="supergroup")
        for uid in range(100, 130):  # thirty members who never bought: low
            await repo.upsert_member(s, repo.UserInfo(uid, f"U{uid}"), T0)
            await repo.touch_membership(s, GROUP_ID, uid, now=T0)
            await repo.link_dm(s, uid)
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    await rig.say(boss, "/promo at +10m 只发一次 to=low")
    ok, _no = rig.buttons(GROUP_ID)
    await rig.click(boss, ok)
    [post] = await rig.posts()
    assert post.id is not None
    rig.clock.now = T0 + timedelta(minutes=10)
    async with rig.db.transaction() as s:
        made = await s.scalar(select(func.count()).select_from(SegmentDelivery))
    assert made == 0  # nothing before it fires
    # Fire the post, but not its delivery: plan the rows, then a run that died after
    # claiming five: two requests issued (one reached its member before the crash), three
    # still queued in its outbox.
    await rig.scheduler.sweep()
    occurrence = rig.clock.now
    async with rig.db.transaction() as s:
        dead = await segment_store.claim_deliveries(s, post.id, occurrence, 5, rig.clock.now)
        for row_id, _user, claim in dead[:2]:
            assert await segment_store.mark_sending(s, row_id, claim, rig.clock.now)
    await rig.h.outbox.call(SendMessage(chat_id=dead[0][1], text="只发一次"))
    await rig.scheduler.sweep()
    await rig.h.settle()
    await rig.tick(T0 + timedelta(hours=1))
    copies = {u: [m.text for m in rig.sent(u)].count("只发一次") for u in range(100, 130)}
    assert all(n <= 1 for n in copies.values()), copies
    assert copies[dead[1][1]] == 0  # of unknown fate: not resent
    assert all(copies[user] == 1 for _i, user, _c in dead[2:])  # never issued: sent now
    assert sum(copies.values()) == 30 - 1
    async with rig.db.transaction(readonly=True) as s:
        states = [st for (st,) in (await s.execute(select(SegmentDelivery.state))).all()]
    assert states.count("unknown") == 2 and states.count("sent") == 28


async def test_a_red_packet_drop_to_churn_posts_in_the_group_and_tells_the_segment(
    rig: Rig, group: Chat  # noqa: F811
) -> None:
    await seed(rig.db, T0)
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    said = await rig.say(boss, "/redpacket at +10m 100 5 to=churn")
    assert "churn risk" in said
    await rig.tick(T0 + timedelta(minutes=10))
    await rig.tick(T0 + timedelta(minutes=11))
    async with rig.db.transaction(readonly=True) as s:
        packet = (await s.execute(select(RedPacket))).scalars().one()
    assert any(f"#{packet.id}" in (m.text or "") for m in rig.sent(GROUP_ID))
    assert [m.text for m in rig.sent(6)] and f"#{packet.id}" in rig.sent(6)[0].text
    assert all(rig.sent(u) == [] for u in (1, 2, 3, 4, 5, 7, 8))
    await rig.tick(T0 + timedelta(minutes=30))
    assert len(rig.sent(6)) == 1



async def test_segments_follow_the_shops_thresholds_whatever_a_pond_once_stored(
    rig: Rig, group: Chat  # noqa: F811
) -> None:
    """A pond may hold a segment value it stored before they were shop-wide: `/segments`
    and `to=<segment>` read the shop's."""
    await seed(rig.db, T0)
    async with rig.db.transaction() as s:
        await s.execute(update(Pond).where(col(Pond.chat_id) == GROUP_ID)
                        .values(settings={"churn_days": 2, "segment_min_orders": 9}))
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    caption = await segments_caption(rig, boss)
    assert "churn risk (no activity for 30 days): <b>1</b>" in caption
    assert "gold (重要价值): <b>3</b> (2 reachable by DM)" in caption
    await rig.say(boss, "/promo at +10m Gold night to=gold")
    ok, _no = rig.buttons(GROUP_ID)
    await rig.click(boss, ok)
    await rig.tick(T0 + timedelta(minutes=10))
    for _ in range(2):
        await rig.tick(T0 + timedelta(minutes=20))
    reached = sorted(u for u in SHOP if [m.text for m in rig.sent(u)] == ["Gold night"])
    assert reached == [1, 7]
