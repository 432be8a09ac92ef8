"""`/export` across the trust boundary (SPEC F1, F12), through the real Dispatcher: two
ponds with different members, ledger entries, votes, orders, redemptions and draws. A
pond's own admin gets, in their DM, the file of their pond only — the same columns and
format, exactly the shop-wide file's rows that belong to the pond; the shop's staff
(`OPERATOR_IDS`) get the shop-wide file, byte for byte as `pondbot export` writes it."""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiogram.methods import SendDocument
from aiogram.types import Chat, InputFile, Message
from sqlalchemy import select
from sqlmodel import col

from handlers.votes import VoteButton
from scheduler.core import Scheduler
from storage import export, repo
from storage.db import Database
from storage.models import Draw, LedgerEntry, Membership, Order, Redemption, Vote
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, OPERATOR_ID, running
from tests.dispatcher.test_stats import FileSession
from tests.rig.client import GroupClient, Harness, group_chat, person, private_chat
from tests.rig.fake_session import BOT_ID, admin

OTHER_ID = -1009876543210
ADMIN_B = 900_010  # an administrator of the other pond only
ALICE, BOB, CAROL = 11, 12, 13  # Alice in pond A, Bob in pond B, Carol in both
KINDS = ("members", "ledger", "votes", "orders", "redemptions", "draws")


@dataclass
class Shop:
    h: Harness
    session: FileSession
    db: Database
    a: Chat
    b: Chat

    def client(self, chat: Chat, user_id: int, name: str, username: str | None = None
               ) -> GroupClient:
        return self.h.member(chat, person(user_id, name, username))

    def dm(self, user_id: int, name: str) -> GroupClient:
        user = person(user_id, name)
        return self.h.member(private_chat(user), user)

    def documents(self) -> list[SendDocument]:
        return self.session.delivered_of(SendDocument)

    async def export(self, client: GroupClient, what: str) -> tuple[SendDocument, list[list[str]]]:
        """`client` sends `/export <what>`; the one document that reached a DM, parsed."""
        before = len(self.documents())
        await client.send(f"/export {what}")
        await self.h.settle()
        [doc] = self.documents()[before:]
        data = self.session.upload(doc)
        assert data.startswith("\ufeff".encode())  # the BOM spreadsheet programs need
        return doc, list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))

    async def ids(self, stmt: Any) -> set[int]:
        async with self.db.transaction(readonly=True) as s:
            return {int(i) for i in (await s.scalars(stmt)).all()}


async def vote(shop: Shop, chat: Chat, opener: GroupClient, voter: GroupClient) -> None:
    await opener.send("/vote 1h Colour? | red | blue")
    await shop.h.settle()
    async with shop.db.transaction(readonly=True) as s:
        v = (await s.scalars(select(Vote).where(col(Vote.chat_id) == chat.id))).one()
    assert v.id is not None and v.message_id is not None
    post = Message(message_id=v.message_id, date=shop.h.now, chat=chat,
                   from_user=person(BOT_ID, "PondBot"), text=v.question)
    await voter.click(post, VoteButton(vote_id=v.id, option=1).pack())


@pytest.fixture
async def shop(bot_db: Database) -> AsyncIterator[Shop]:
    session = FileSession()
    async with running(bot_db, Scheduler(bot_db), session=session) as h:
        session.admins[OTHER_ID] = [admin(person(ADMIN_B, "AdminB", "admin_b")),
                                    admin(person(OPERATOR_ID, "Op"))]
        h.dp["lottery_board"].interval = 0.0
        h.dp["lottery_rng"] = random.Random(7)
        async with bot_db.transaction() as s:
            for chat_id, title in ((GROUP_ID, "Pond A"), (OTHER_ID, "Pond B")):
                await repo.upsert_pond(s, chat_id, title=title, chat_type="supergroup",
                                       default_language="en")
        shop = Shop(h, session, bot_db, group_chat(GROUP_ID, "Pond A"),
                    group_chat(OTHER_ID, "Pond <B>"))
        a, b = shop.a, shop.b
        alice = shop.client(a, ALICE, "Alice", "alice")
        bob = shop.client(b, BOB, "Bob", "bobby")
        carol_a, carol_b = (shop.client(a, CAROL, "Carol", "carol"),
                            shop.client(b, CAROL, "Carol", "carol"))
        admin_a, admin_b = shop.client(a, ADMIN_ID, "Admin"), shop.client(b, ADMIN_B, "AdminB")
        op_a, op_b = shop.client(a, OPERATOR_ID, "Op"), shop.client(b, OPERATOR_ID, "Op")
        for c in (shop.dm(ADMIN_ID, "Admin"), shop.dm(ADMIN_B, "AdminB"),
                  shop.dm(OPERATOR_ID, "Op"), shop.dm(CAROL, "Carol")):
            await c.send("/start")
        await alice.send("/checkin")
        await bob.send("/checkin")
        await carol_a.send("/checkin")
        await carol_b.send("hello")
        await admin_a.send("/give @alice 30 welcome")
        await admin_b.send("/give @bobby 20 welcome")
        await admin_a.send("/order @alice 100 A-1")
        await admin_b.send("/order @carol 50 B-1")  # Carol is in both ponds: bought in B
        await shop.dm(OPERATOR_ID, "Op").send("/order @bobby 10 DM-1")  # in no pond
        await op_a.send("/item add 10 5 满50减5")
        await h.settle()
        found = re.search(r"#(\d+)", h.replies(GROUP_ID)[-1])
        assert found, h.replies(GROUP_ID)[-1]
        item = int(found.group(1))
        await alice.send(f"/redeem {item}")
        await bob.send(f"/redeem {item}")
        await shop.dm(CAROL, "Carol").send(f"/redeem {item}")  # in the DM: no pond
        await op_a.send("/prize add 1 - points=5 Five")
        await op_a.send("/lottery")
        await op_b.send("/lottery")
        await alice.send("/draw")
        await bob.send("/draw")
        await vote(shop, a, admin_a, alice)
        await vote(shop, b, admin_b, bob)
        for _ in range(3):
            await h.dp["lottery_board"].idle()
            await h.settle()
        yield shop


async def test_a_pond_admin_gets_only_their_ponds_rows_of_every_export(
    shop: Shop, tmp_path: Path
) -> None:
    admins = {GROUP_ID: shop.client(shop.a, ADMIN_ID, "Admin"),
              OTHER_ID: shop.client(shop.b, ADMIN_B, "AdminB")}
    glob = shop.dm(OPERATOR_ID, "Op")
    for what in KINDS:
        _, whole = await shop.export(glob, what)
        expected = tmp_path / f"{what}.csv"
        export.export_to_path(shop.db.url, what, expected)
        assert shop.session.upload(shop.documents()[-1]) == expected.read_bytes()
        header, rows = whole[0], whole[1:]
        parts: dict[int, list[list[str]]] = {}
        for chat_id, client in admins.items():
            doc, got = await shop.export(client, what)
            assert doc.chat_id == client.user.id  # to the admin's DM
            assert got[0] == header  # the same columns
            parts[chat_id] = got[1:]
            keep = await belongs(shop, what, chat_id, header)
            assert got[1:] == [r for r in rows if keep(r)], what  # the pond's rows, in order
            assert got[1:], what  # every kind has rows in both ponds
            if what == "votes":  # each pond's vote with its own ballot
                assert [r[2:] for r in got[1:]] == [["Colour?", "red", "0"],
                                                    ["Colour?", "blue", "1"]]
            assert (doc.caption or "").startswith(f"📄 {what} of the pond ")
            title = "Pond A" if chat_id == GROUP_ID else "Pond &lt;B&gt;"  # HTML-quoted
            assert doc.caption == f"📄 {what} of the pond {title} only: {len(got) - 1} rows"
            assert isinstance(doc.document, InputFile) and doc.document.filename
            assert doc.document.filename.startswith(f"{what}-pond{chat_id}-")
        # Nothing of one pond is in the other's file; the shop's file holds both.
        a, b = parts[GROUP_ID], parts[OTHER_ID]
        if what != "members":  # Carol is a member of both ponds
            assert not [r for r in a if r in b], what
        assert all(r in rows for r in a + b)
    assert shop.h.replies(GROUP_ID)[-1] == "📤 Sent to your private chat."
    assert shop.h.replies(OTHER_ID)[-1] == "📤 Sent to your private chat."


async def belongs(shop: Shop, what: str, chat_id: int, header: list[str]) -> Any:
    """Which rows of the shop-wide file are the pond's, from the database."""
    column = header.index
    if what == "members":
        ids = await shop.ids(select(col(Membership.user_id))
                             .where(col(Membership.chat_id) == chat_id))
        assert {ALICE, CAROL} <= ids or {BOB, CAROL} <= ids
        assert not ({ALICE, BOB} <= ids)
        return lambda r: int(r[column("user_id")]) in ids
    if what == "orders":
        orders = await shop.ids(select(col(Order.id)).where(col(Order.chat_id) == chat_id))
        assert len(orders) == 1
        numbers = {"A-1"} if chat_id == GROUP_ID else {"B-1"}
        return lambda r: r[column("order_no")] in numbers
    if what == "redemptions":
        ids = await shop.ids(select(col(Redemption.id))
                             .where(col(Redemption.chat_id) == chat_id))
        assert len(ids) == 1
        return lambda r: int(r[column("id")]) in ids
    if what == "ledger":
        n = await shop.ids(select(col(LedgerEntry.id)).where(col(LedgerEntry.chat_id) == chat_id))
        assert len(n) >= 3  # check-in, /give, the order, …
    if what == "draws":
        assert await shop.ids(select(col(Draw.id)).where(col(Draw.chat_id) == chat_id))
    return lambda r: r[column("chat_id")] == str(chat_id)


async def test_the_shop_wide_files_hold_what_no_pond_does(shop: Shop) -> None:
    glob = shop.dm(OPERATOR_ID, "Op")
    _, orders = await shop.export(glob, "orders")
    assert [r[0] for r in orders[1:]] == ["A-1", "B-1", "DM-1"]
    doc, members = await shop.export(shop.client(shop.a, OPERATOR_ID, "Op"), "members")
    assert doc.caption == f"📄 members: {len(members) - 1} rows"  # in a pond: still the shop's
    assert {ALICE, BOB, CAROL, ADMIN_B} <= {int(r[0]) for r in members[1:]}
    _, redemptions = await shop.export(glob, "redemptions")
    assert {int(r[3]) for r in redemptions[1:]} == {ALICE, BOB, CAROL}
    _, admins_orders = await shop.export(shop.client(shop.a, ADMIN_ID, "Admin"), "orders")
    assert [r[0] for r in admins_orders[1:]] == ["A-1"]


async def test_a_pond_admin_is_refused_elsewhere_and_shop_wide_exports(shop: Shop) -> None:
    admin_a = shop.client(shop.a, ADMIN_ID, "Admin")
    for what in ("profiles", "segments"):
        await admin_a.send(f"/export {what}")
    await admin_a.send("/export nonsense")
    await shop.client(shop.b, ADMIN_ID, "Admin").send("/export members")  # not B's admin
    await shop.dm(ADMIN_ID, "Admin").send("/export members")  # a DM: the shop's staff only
    await shop.dm(ADMIN_B, "AdminB").send("/export")
    await shop.h.settle()
    assert shop.documents() == []
    said = shop.h.replies(GROUP_ID)[-3:]
    assert [s.split(" is about")[0] for s in said[:2]] == ["⛔ profiles", "⛔ segments"]
    assert "OPERATOR_IDS" in said[0]
    assert said[2].startswith(
        "Usage: /export [members|ledger|votes|redemptions|orders|draws] —")
    assert shop.h.replies(OTHER_ID)[-1] == "⛔ Only the pond's operators can do that."
    assert shop.h.replies(ADMIN_ID)[-1] == shop.h.replies(ADMIN_B)[-1]
    assert "⛔" in shop.h.replies(ADMIN_ID)[-1]


async def test_a_file_over_telegrams_limit_names_the_command_that_writes_it(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("handlers.stats_export.MAX_DOCUMENT_BYTES", 10)
    before = len(shop.documents())
    await shop.client(shop.a, ADMIN_ID, "Admin").send("/export ledger")
    await shop.dm(OPERATOR_ID, "Op").send("/export ledger")
    await shop.h.settle()
    assert len(shop.documents()) == before  # nothing sent
    # A pond's admin cannot reach the server: they are told what to ask the staff for.
    assert shop.h.replies(GROUP_ID)[-1] == (
        "⚠️ That export is larger than Telegram lets a bot send (50 MB): ask the shop's staff "
        f"to run <code>pondbot export ledger --pond {GROUP_ID}</code> on the server."
    )
    assert shop.h.replies(OPERATOR_ID)[-1] == (  # (the staff's DM speaks the shop's Chinese)
        "⚠️ 导出文件超过 Telegram 允许机器人发送的大小（50 MB）：请在服务器上运行 "
        "<code>pondbot export ledger</code>。"
    )
