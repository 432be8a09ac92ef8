"""The shop through the real Dispatcher: a storm of /redeem on the last units, codes only
in their owners' DMs, /start delivering waiting codes, refunds once, replays, uploaded
codes (a message or a file), goods, operators' usage lines."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncGenerator
from typing import Any

from aiogram.methods import SendMessage
from aiogram.types import Chat, Document, File, Message
from sqlalchemy import select

from services.shop_memo import ClosedItems
from storage import ledger, repo
from storage import shop as shop_store
from storage.db import Database
from storage.models import (
    CodeState,
    LedgerEntry,
    LedgerKind,
    Member,
    Redemption,
    RedemptionStatus,
    ShopCode,
    ShopItem,
)
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, OPERATOR_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person, private_chat
from tests.rig.fake_session import FakeSession

MEMBERS = 100
STOCK = 5


def op(h: Harness, chat: Chat) -> GroupClient:
    return h.member(chat, person(OPERATOR_ID, "Op"))


async def seed(db: Database, user_ids: list[int], *, points: int = 100,
               linked: set[int] | None = None) -> None:
    linked = set(user_ids) if linked is None else linked
    async with db.transaction() as s:
        for uid in user_ids:
            await repo.upsert_member(s, repo.UserInfo(id=uid, first_name=f"M{uid}"))
            await repo.link_dm(s, uid, linked=uid in linked)
            if points:
                await ledger.award(s, user_id=uid, amount=points, kind=LedgerKind.admin_adjust,
                                   key=f"seed:{uid}")


async def add_item(h: Harness, chat: Chat, args: str) -> int:
    await op(h, chat).send(f"/item add {args}")
    await h.settle()
    found = re.search(r"#(\d+)", h.replies(chat.id)[-1])
    assert found, h.replies(chat.id)[-1]
    return int(found.group(1))


async def rows(db: Database, model: Any) -> list[Any]:
    async with db.transaction(readonly=True) as s:
        return list((await s.execute(select(model))).scalars())


async def balance(db: Database, user_id: int) -> int:
    return int({m.user_id: m.balance for m in await rows(db, Member)}[user_id])


def texts_with(session: FakeSession, needle: str) -> list[Any]:
    """Every request (answered or not) whose text or caption holds `needle`."""
    return [
        r for r in session.requests
        if needle in str(getattr(r, "text", "") or "") + str(getattr(r, "caption", "") or "")
    ]


async def test_a_hundred_members_storm_the_last_five_units(bot_db: Database) -> None:
    group = group_chat(GROUP_ID, "Rush")
    users = [200_000 + i for i in range(MEMBERS)]
    linked = {u for u in users if u % 2 == 0}
    await seed(bot_db, users, linked=linked)
    async with running(bot_db) as h:
        item_id = await add_item(h, group, f"10 {STOCK} limit=1 满100减10")
        clients = [h.member(group, person(u, f"M{u}")) for u in users]
        # One batch: everyone at once, and the first 20 twice (a double send).
        await asyncio.gather(
            *(c.send(f"/redeem {item_id}") for c in [*clients, *clients[:20]])
        )
        await h.settle()
        reds = await rows(bot_db, Redemption)
        winners = {r.user_id for r in reds}
        assert len(reds) == STOCK and len(winners) == STOCK  # the limit held
        assert len({r.code for r in reds}) == STOCK
        items = await rows(bot_db, ShopItem)
        assert (items[0].stock, items[0].redeemed) == (0, STOCK)
        entries = [e for e in await rows(bot_db, LedgerEntry) if e.kind == LedgerKind.redeem]
        assert Counter(e.user_id for e in entries) == Counter({u: 1 for u in winners})
        balances = {m.user_id: m.balance for m in await rows(bot_db, Member)}
        assert all(balances[u] == (90 if u in winners else 100) for u in users)
        # Each code so far only in its owner's DM, and only if linked.
        for r in reds:
            assert r.code is not None
            carriers = texts_with(h.session, r.code)
            assert all(isinstance(m, SendMessage) and m.chat_id == r.user_id for m in carriers)
            assert len(carriers) == (1 if r.user_id in linked else 0)
            expected = RedemptionStatus.delivered if r.user_id in linked else (
                RedemptionStatus.undelivered
            )
            assert r.status == expected
        group_texts = h.replies(GROUP_ID)
        assert sum("/start" in t for t in group_texts) == len(winners - linked)
        # The unlinked winners open a private chat: /start delivers their codes.
        for uid in sorted(winners - linked):
            u = person(uid, f"M{uid}")
            await h.member(private_chat(u), u).send("/start")
        await h.settle()
        for r in await rows(bot_db, Redemption):
            assert r.status == RedemptionStatus.delivered
            assert r.code is not None
            carriers = texts_with(h.session, r.code)
            assert len(carriers) == 1 and carriers[0].chat_id == r.user_id
        async with bot_db.transaction(readonly=True) as s:
            assert (await ledger.check_invariant(s)).ok


async def test_refund_twice_refunds_once_and_a_replayed_redeem_pays_once(
    bot_db: Database,
) -> None:
    group = group_chat(GROUP_ID, "Pond")
    await seed(bot_db, [301])
    async with running(bot_db) as h:
        item_id = await add_item(h, group, "30 3 limit=2 奶茶券")
        alice = h.member(group, person(301, "Alice"))
        msg = await alice.send(f"/redeem {item_id}")
        await h.settle()
        answers = len(h.replies(GROUP_ID))
        await alice.resend(msg, h.next_update_id())  # the same command delivered again
        await h.settle()
        assert len(h.replies(GROUP_ID)) == answers  # answered once
        assert await balance(bot_db, 301) == 70
        (red,) = await rows(bot_db, Redemption)
        await op(h, group).send(f"/refund {red.id} 顾客退款")
        await op(h, group).send(f"/refund {red.id}")
        await h.settle()
        first, second = h.replies(GROUP_ID)[-2:]
        assert "30" in first
        assert "已" in second or "already" in second
        (red,) = await rows(bot_db, Redemption)
        assert red.status == RedemptionStatus.refunded
        assert await balance(bot_db, 301) == 100
        (code,) = await rows(bot_db, ShopCode)
        assert code.state == CodeState.void
        (item,) = await rows(bot_db, ShopItem)
        assert (item.stock, item.redeemed) == (3, 0)
        kinds = Counter(e.kind for e in await rows(bot_db, LedgerEntry))
        assert kinds == Counter({"admin_adjust": 1, "redeem": 1, "refund": 1})
        # The member heard of it in their DM; the void code never reached the group.
        assert any("30" in t for t in h.replies(301)[-1:])
        assert all(m.chat_id == 301 for m in texts_with(h.session, code.code))


class FilesSession(FakeSession):
    """A fake Bot API that also serves files (getFile and the file download)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, bytes] = {}

    async def stream_content(
        self, url: str, headers: dict[str, Any] | None = None, timeout: int = 30,  # noqa: ASYNC109
        chunk_size: int = 65536, raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        yield self.files[url.rsplit("/", 1)[-1]]


async def test_item_codes_from_a_message_and_a_file_skip_duplicates(bot_db: Database) -> None:
    session = FilesSession()
    await seed(bot_db, [401])
    async with running(bot_db, session=session) as h:
        me = person(OPERATOR_ID, "Op")
        dm = private_chat(me)
        boss = h.member(dm, me)
        item_id = await add_item(h, dm, "20 0 limit=0 京东卡")
        upload = boss.message("CODE-A\nCODE-B\nCODE-A\n\nCODE-C")
        await boss.send(f"/item codes {item_id}", reply_to=upload)
        await h.settle()
        report = h.replies(OPERATOR_ID)[-1]
        assert "3" in report and "CODE-A" in report  # the repeated one is named in the DM
        data = "code\nCODE-C,10元\nCODE-D,10元\nCODE-D,10元\nbad code here\n".encode()
        session.files["codes.csv"] = data
        session.add_result(
            File(file_id="f1", file_unique_id="u1", file_size=len(data),
                 file_path="documents/codes.csv"),
            method="getFile",
        )
        doc = Message(
            message_id=h.next_message_id(OPERATOR_ID), date=h.now, chat=dm, from_user=me,
            document=Document(file_id="f1", file_unique_id="u1", file_name="codes.csv",
                              mime_type="text/csv", file_size=len(data)),
        )
        await boss.send(f"/item codes {item_id}", reply_to=doc)
        await h.settle()
        report = h.replies(OPERATOR_ID)[-1]
        assert "CODE-C" in report and "CODE-D" in report and "5" in report
        codes = {c.code: c.state for c in await rows(bot_db, ShopCode)}
        assert codes == {c: CodeState.free for c in ("CODE-A", "CODE-B", "CODE-C", "CODE-D")}
        (item,) = await rows(bot_db, ShopItem)
        assert item.pool and item.stock == 4
        # A member redeems: the pool's first code, in their DM only.
        group = group_chat(GROUP_ID, "Pond")
        await h.member(group, person(401, "Bea")).send(f"/redeem {item_id}")
        await h.settle()
        assert [m.chat_id for m in texts_with(h.session, "CODE-A") if m.chat_id != OPERATOR_ID
                ] == [401]
        assert "CODE-A" not in "".join(h.replies(GROUP_ID))


async def test_goods_mine_shop_and_usage_lines(bot_db: Database) -> None:
    group = group_chat(GROUP_ID, "Pond")
    await seed(bot_db, [501])
    async with running(bot_db) as h:
        boss = op(h, group)
        before = len(h.replies(GROUP_ID))
        for bad in ("/item", "/item add 10", "/item add x 5 name", "/item add 10 5 kind=car X",
                    "/item off", "/item frobnicate", "/refund", "/refund abc", "/fulfil x",
                    "/redemptions zz"):
            await boss.send(bad)
        await h.settle()
        answers = h.replies(GROUP_ID)[before:]
        assert len(answers) == 10 and all("/" in a for a in answers)
        assert await rows(bot_db, ShopItem) == []
        mug = await add_item(h, group, "500 1 kind=goods 马克杯")
        assert "💡" in h.replies(GROUP_ID)[-1]  # above what a newcomer earns
        cheap = await add_item(h, group, "10 5 满50减5")
        assert "💡" not in h.replies(GROUP_ID)[-1]
        bea = h.member(group, person(501, "Bea"))
        await bea.send("/item list")  # members are refused
        await bea.send("/shop")
        await bea.send(f"/redeem {cheap}")
        await bea.send(f"/redeem {mug}")  # too expensive
        await bea.send("/mine")
        await h.settle()
        refused, shop_text, done, poor, mine = h.replies(GROUP_ID)[-5:]
        assert "⛔" in refused
        assert f"#{mug}" in shop_text and f"#{cheap}" in shop_text
        assert "500" in poor and "90" in poor
        (red,) = await rows(bot_db, Redemption)
        assert red.code is not None and red.code not in mine and red.code not in done
        dm_user = person(501, "Bea")
        await h.member(private_chat(dm_user), dm_user).send("/mine")
        await h.settle()
        assert red.code in h.replies(501)[-1]
        await repo_give(bot_db, 501, 500)
        await bea.send(f"/redeem {mug}")
        await h.settle()
        goods = [r for r in await rows(bot_db, Redemption) if r.item_id == mug]
        assert [(g.code, g.status) for g in goods] == [(None, RedemptionStatus.pending)]
        await boss.send(f"/fulfil {goods[0].id}")
        await boss.send(f"/fulfil {goods[0].id}")
        await h.settle()
        assert [r.status for r in await rows(bot_db, Redemption) if r.item_id == mug] == [
            RedemptionStatus.fulfilled
        ]
        await bea.send(f"/redeem {mug}")  # sold out now
        await h.settle()
        assert h.replies(GROUP_ID)[-1].startswith("😢")
        await boss.send(f"/item off {cheap}")
        await bea.send("/shop")
        await h.settle()
        assert f"#{cheap}" not in h.replies(GROUP_ID)[-1]


async def repo_give(db: Database, user_id: int, points: int) -> None:
    async with db.transaction() as s:
        await ledger.award(s, user_id=user_id, amount=points, kind=LedgerKind.admin_adjust,
                           key=f"more:{user_id}")


async def test_a_blocked_dm_keeps_the_code_waiting_until_start(bot_db: Database) -> None:
    group = group_chat(GROUP_ID, "Pond")
    await seed(bot_db, [601])  # linked, but has blocked the bot since
    async with running(bot_db) as h:
        item_id = await add_item(h, group, "10 5 limit=0 满30减3")
        h.session.fail_next("sendMessage", chat_id=601, error_code=403,
                            description="Forbidden: bot was blocked by the user")
        cleo = h.member(group, person(601, "Cleo"))
        await cleo.send(f"/redeem {item_id}")
        await h.settle()
        (red,) = await rows(bot_db, Redemption)
        assert red.status == RedemptionStatus.undelivered
        assert [m.dm_linked for m in await rows(bot_db, Member) if m.user_id == 601] == [False]
        assert h.replies(601) == []  # the refused DM was not delivered
        await cleo.send(f"/redeem {item_id}")  # now known unlinked: told to /start
        await h.settle()
        assert "/start" in h.replies(GROUP_ID)[-1]
        u = person(601, "Cleo")
        dm = h.member(private_chat(u), u)
        await dm.send("/start")
        await h.settle()
        codes = [r.code for r in await rows(bot_db, Redemption)]
        assert all(any(c and c in t for t in h.replies(601)) for c in codes)
        assert all(r.status == RedemptionStatus.delivered for r in await rows(bot_db, Redemption))
        # Redeeming in the private chat: the answer and the code come there.
        await dm.send(f"/redeem {item_id}")
        await h.settle()
        reds = await rows(bot_db, Redemption)
        assert len(reds) == 3 and reds[-1].code in h.replies(601)[-1]
        assert reds[-1].chat_id is None
        for r in reds:
            assert r.code is not None
            assert {m.chat_id for m in texts_with(h.session, r.code)} == {601}


async def test_only_global_operators_change_the_shop_wide_catalogue(bot_db: Database) -> None:
    """A pond's own admin lists the items but cannot add, stock or switch them: items
    are shop-wide, so a pond admin could otherwise sell the shop's stock for nothing."""
    group = group_chat(GROUP_ID, "Catalogue")
    async with running(bot_db) as h:
        item_id = await add_item(h, group, "30 5 小样券")
        pond_admin = h.member(group, person(ADMIN_ID, "Admin", "shop_admin"))
        for args in ("add 0 100 free stuff", f"off {item_id}", f"on {item_id}",
                     f"codes {item_id}"):
            await pond_admin.send(f"/item {args}")
            await h.settle()
            assert "OPERATOR_IDS" in h.replies(GROUP_ID)[-1], args
        await pond_admin.send("/item list")
        await h.settle()
        assert "小样券" in h.replies(GROUP_ID)[-1]
    items = await rows(bot_db, ShopItem)
    assert [(i.name, i.on_sale, i.stock) for i in items] == [("小样券", True, 5)]


async def test_a_sold_out_storm_is_refused_from_memory_until_a_unit_comes_back(
    bot_db: Database,
) -> None:
    """After the first "sold out", later /redeem of the item are refused without any
    database work; a refund (or new codes, or /item on) in this process forgets it, so
    the unit that came back is sold at once."""
    group = group_chat(GROUP_ID, "Rush")
    await seed(bot_db, [401, 402, 403])
    async with running(bot_db) as h:
        item_id = await add_item(h, group, "30 1 奶茶券")
        first, second, third = (h.member(group, person(u, f"M{u}")) for u in (401, 402, 403))
        await first.send(f"/redeem {item_id}")
        await second.send(f"/redeem {item_id}")  # sold out: remembered
        await h.settle()
        assert h.dp["closed_items"].refusal(item_id) == "sold_out"
        looks = 0
        original = shop_store.refusal

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal looks
            looks += 1
            return await original(*args, **kwargs)

        shop_store.refusal = counting  # type: ignore[assignment]
        try:
            await third.send(f"/redeem {item_id}")
            await h.settle()
        finally:
            shop_store.refusal = original  # type: ignore[assignment]
        assert looks == 0  # answered from memory, no database look
        assert h.replies(GROUP_ID)[-1] == h.replies(GROUP_ID)[-2]  # the same refusal
        (red,) = await rows(bot_db, Redemption)
        await op(h, group).send(f"/refund {red.id}")
        await h.settle()
        assert h.dp["closed_items"].refusal(item_id) is None
        await third.send(f"/redeem {item_id}")
        await h.settle()
    sold = [r for r in await rows(bot_db, Redemption) if r.status != RedemptionStatus.refunded]
    assert [r.user_id for r in sold] == [403]
    assert await balance(bot_db, 402) == 100 and await balance(bot_db, 403) == 70


def test_remembered_refusals_run_out() -> None:
    now = [0.0]
    memo = ClosedItems(ttl=2.0, clock=lambda: now[0])
    memo.remember(7, "sold_out")
    memo.remember(8, "limit")  # a member's own limit is theirs, not the item's
    assert memo.refusal(7) == "sold_out" and memo.refusal(8) is None
    now[0] = 2.5
    assert memo.refusal(7) is None


async def test_a_crowd_arriving_together_shares_one_look_at_a_sold_out_item() -> None:
    """Those who ask while a look runs take its "sold out"; a look that finds the item on
    sale (or a replay) is each command's own, so the others look for themselves."""
    memo = ClosedItems()
    reads: list[int] = []

    def reader(n: int, answer: str | None) -> Any:
        async def read() -> str | None:
            reads.append(n)
            await asyncio.sleep(0.01)
            return answer
        return read

    sold = await asyncio.gather(*(memo.look(7, reader(n, "sold_out")) for n in range(5)))
    assert sold == ["sold_out"] * 5 and reads == [0]
    reads.clear()
    open_ = await asyncio.gather(*(memo.look(8, reader(n, None)) for n in range(3)))
    assert open_ == [None] * 3 and sorted(reads) == [0, 1, 2]
