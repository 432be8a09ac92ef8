"""/order and tiers through the real Dispatcher: one order number pays once (typed twice,
replayed, redelivered after a restart), bad arguments change nothing, tiers move at the
thresholds with a DM to the member, /points shows the tier, and an import's tier notices
reach the member through the running bot's scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiogram.types import Chat
from sqlalchemy import select
from sqlmodel import col

from games.orders import OrderRow
from games.tiers import parse_tiers
from scheduler.core import Scheduler
from storage import ledger, orders, repo
from storage.db import Database
from storage.models import Member, Order
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, OPERATOR_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person, private_chat

ALICE, BOB = 1, 2


@dataclass
class Shop:
    h: Harness
    db: Database
    scheduler: Scheduler
    group: Chat
    alice: GroupClient
    bob: GroupClient
    op: GroupClient

    def said(self) -> list[str]:
        return self.h.replies(GROUP_ID)

    async def member(self, user_id: int) -> Member:
        async with self.db.transaction(readonly=True) as s:
            row = await s.get(Member, user_id)
        assert row is not None
        return row

    async def orders(self) -> int:
        async with self.db.transaction(readonly=True) as s:
            return len((await s.execute(Order.__table__.select())).all())  # type: ignore[attr-defined]

    async def invariant_ok(self) -> bool:
        async with self.db.transaction(readonly=True) as s:
            return (await ledger.check_invariant(s)).ok


@pytest.fixture
async def shop(bot_db: Database) -> AsyncIterator[Shop]:
    scheduler = Scheduler(bot_db)
    async with running(bot_db, scheduler) as h:
        async with bot_db.transaction() as s:  # an English-speaking pond, for readable asserts
            await repo.upsert_pond(
                s, GROUP_ID, title="Pond", chat_type="supergroup", default_language="en"
            )
        group = group_chat(GROUP_ID, "Pond")
        alice_user = person(ALICE, "Alice <b>", "alice_b", language_code="en")
        shop = Shop(
            h, bot_db, scheduler, group,
            h.member(group, alice_user),
            h.member(group, person(BOB, "Bob", "bobby")),
            h.member(group, person(OPERATOR_ID, "Op")),
        )
        await shop.alice.send("hi")
        await shop.bob.send("hello")
        # Alice links her DM; Bob does not.
        await h.member(private_chat(alice_user), alice_user).send("/start")
        await h.settle()
        yield shop


async def test_one_order_number_pays_once(shop: Shop) -> None:
    await shop.op.send("/order @alice_b 299.50 TB-001")
    await shop.op.send("/order @alice_b 299.50 TB-001")  # typed again
    await shop.op.send("/order @bobby 10 TB-001")  # the same number for someone else
    msg = shop.op.message("/order 2 88.80 TB-002")
    uid = shop.h.next_update_id()
    await asyncio.gather(*(shop.op.resend(msg, uid) for _ in range(10)))  # replayed
    await shop.h.settle()
    first, again, other, second = shop.said()[-4:]
    assert "TB-001" in first and "¥299.50" in first and "+299 points" in first
    assert "Alice &lt;b&gt;" in first and "New tier: VIP1 (9.8折" in first
    assert "already recorded" in again and "¥299.50" in again and "Alice" in again
    assert "already recorded" in other
    assert "TB-002" in second and "+88 points" in second
    alice, bob = await shop.member(ALICE), await shop.member(BOB)
    assert (alice.balance, alice.lifetime_spent_cents, alice.tier) == (299, 29950, "VIP1")
    assert (bob.balance, bob.lifetime_spent_cents, bob.tier) == (88, 8880, "VIP1")
    assert await shop.orders() == 2
    assert await shop.invariant_ok()


async def test_an_order_without_number_is_keyed_by_its_message(shop: Shop) -> None:
    """Redelivered after a restart (new update ids, the same message): recorded once and
    answered once; a second command is a second order."""
    msg = shop.op.message("/order @alice_b 12.34")
    for _ in range(3):
        await shop.op.resend(msg, shop.h.next_update_id())
    await shop.op.send("/order @alice_b 12.34")
    await shop.h.settle()
    answers = [t for t in shop.said() if "Order recorded" in t]
    assert len(answers) == 2 and all("¥12.34" in t and "+12 points" in t for t in answers)
    assert not any("already" in t for t in shop.said())
    assert (await shop.member(ALICE)).lifetime_spent_cents == 2468
    async with shop.db.transaction(readonly=True) as s:
        found = await orders.find_order(s, f"msg:{GROUP_ID}:{msg.message_id}")
    assert found is not None and found.cents == 1234


async def test_tiers_move_at_the_thresholds_with_a_dm(shop: Shop) -> None:
    dm_before = len(shop.h.replies(ALICE))
    await shop.op.send("/order @alice_b 0.01 T1")  # member -> VIP1
    await shop.op.send("/order @alice_b 299.98 T2")  # ¥299.99: still VIP1
    await shop.op.send("/order @alice_b 0.01 T3")  # ¥300.00: VIP2
    await shop.op.send("/order @bobby 500 T4")  # VIP2 at once, but no DM linked
    await shop.alice.send("/points")
    await shop.h.settle()
    t1, t2, t3, t4, points = shop.said()[-5:]
    assert "+0 points" in t1 and "New tier: VIP1 (9.8折" in t1
    assert "Tier: VIP1" in t2 and "New tier" not in t2
    assert "New tier: VIP2 (9.5折" in t3
    assert "New tier: VIP2" in t4
    assert "VIP2 (9.5折" in points and "¥300.00" in points
    dms = shop.h.replies(ALICE)[dm_before:]
    assert len(dms) == 2
    assert "VIP1 (9.8折" in dms[0] and "¥0.01" in dms[0]
    assert "VIP2 (9.5折" in dms[1] and "¥300.00" in dms[1]
    assert shop.h.replies(BOB) == []
    assert (await shop.member(ALICE)).tier == "VIP2"


async def test_bad_arguments_change_nothing(shop: Shop) -> None:
    before = len(shop.said())
    bad = [
        "/order",
        "/order @alice_b",
        "/order @alice_b abc",
        "/order @alice_b 0",
        "/order @alice_b -5",
        "/order @alice_b 1.999",
        "/order @alice_b 99999999",
        "/order @alice_b 5 msg:1:2",
        "/order @alice_b 5 A1 extra",
        "/order alice 5",
    ]
    for text in bad:
        await shop.op.send(text)
    await shop.op.send("/order @nobody_here 5")
    await shop.op.send("/order 777 5")
    await shop.alice.send("/order @alice_b 1000 FREE")  # a member: refused
    await shop.h.settle()
    answers = shop.said()[before:]
    assert len(answers) == len(bad) + 3
    assert all("Usage: /order" in a for a in answers[: len(bad)])
    assert "don't know @nobody_here" in answers[-3] and "don't know 777" in answers[-2]
    assert "⛔" in answers[-1]
    assert await shop.orders() == 0
    assert (await shop.member(ALICE)).balance == 0


async def test_reply_form_and_pond_settings(shop: Shop) -> None:
    async with shop.db.transaction() as s:
        await repo.change_pond_settings(
            s, GROUP_ID, points_per_yuan=1.5, tiers="银卡:100:9.9,金卡:1000:9"
        )
    hers = await shop.alice.send("I paid ¥120")
    adm = shop.h.member(shop.group, person(ADMIN_ID, "Admin", "shop_admin"))
    await adm.send("/order 120 W-7", reply_to=hers)
    await shop.alice.send("/points")
    await shop.h.settle()
    recorded, points = shop.said()[-2:]
    assert "+180 points" in recorded and "New tier: 银卡 (9.9折" in recorded
    assert "银卡 (9.9折" in points
    assert (await shop.member(ALICE)).tier == "银卡"


async def test_help_lists_order_for_operators(shop: Shop) -> None:
    await shop.op.send("/help")
    await shop.alice.send("/help")
    await shop.h.settle()
    op_help, member_help = shop.said()[-2:]
    assert "/order" in op_help and "/order" not in member_help


async def test_an_imports_tier_notice_reaches_the_member(shop: Shop) -> None:
    """The import runs without a bot: it leaves a task that the bot's scheduler runs."""
    async with shop.db.transaction() as s:
        result = await orders.import_orders(
            s,
            [OrderRow(2, "I-1", ALICE, 35000, None), OrderRow(3, "I-2", BOB, 100, None)],
            points_per_yuan=1.0,
            tiers=parse_tiers("VIP1:0.01:9.8,VIP2:300:9.5"),
        )
    assert (result.imported, result.promoted, result.notices) == (2, 2, 1)
    dm_before = len(shop.h.replies(ALICE))
    await shop.scheduler.sweep()
    await shop.h.settle()
    [dm] = shop.h.replies(ALICE)[dm_before:]
    assert "VIP2 (9.5折" in dm and "¥350.00" in dm
    assert shop.h.replies(BOB) == []
    await shop.scheduler.sweep()  # done: never told twice
    await shop.h.settle()
    assert len(shop.h.replies(ALICE)) == dm_before + 1


async def test_a_global_operator_records_an_order_in_a_private_chat(shop: Shop) -> None:
    op_user = person(OPERATOR_ID, "Op")
    dm = shop.h.member(private_chat(op_user), op_user)
    await dm.send("/order 1 19.90 DM-1")
    await shop.h.settle()
    [answer] = shop.h.replies(OPERATOR_ID)[-1:]
    # the operator's own language here (none given: Chinese, the default)
    assert "DM-1" in answer and "+19 积分" in answer and "VIP1（9.8折）" in answer
    async with shop.db.transaction(readonly=True) as s:
        found = await orders.find_order(s, "DM-1")
        chat = await s.scalar(select(col(Order.chat_id)).where(col(Order.order_no) == "DM-1"))
    assert found is not None and found.user_id == ALICE and chat is None
