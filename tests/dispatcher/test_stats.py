"""/stats, /export and /review through the real Dispatcher over a real SQLite file: the
figures counted in SQL, one PNG whose labels the packaged font covers, the CSV in the
operator's DM byte for byte as `pondbot export` writes it, members refused with nothing
sent."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot
from aiogram.methods import SendDocument, SendPhoto, TelegramMethod
from aiogram.types import BufferedInputFile, Chat, InputFile
from PIL import Image

from games.checkin import local_day
from services import charts
from storage import export, repo
from storage.db import Database
from storage.stats import LocalSpan, pond_stats, review
from tests.dispatcher.conftest import GROUP_ID, OPERATOR_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person, private_chat
from tests.rig.fake_session import FakeSession

ALICE, BOB = 11, 12
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FileSession(FakeSession):
    """Keeps the bytes of every file the bot uploads (read as aiogram would send them)."""

    def __init__(self) -> None:
        super().__init__()
        self.uploads: dict[int, bytes] = {}

    async def make_request(self, bot: Bot, method: TelegramMethod[Any], timeout: int | None = None  # noqa: ASYNC109
                           ) -> Any:
        for name in ("document", "photo"):
            value = getattr(method, name, None)
            if isinstance(value, InputFile):
                self.uploads[id(method)] = b"".join([c async for c in value.read(bot)])
        return await super().make_request(bot, method, timeout)

    def upload(self, method: TelegramMethod[Any]) -> bytes:
        return self.uploads[id(method)]


@dataclass
class Pond:
    h: Harness
    session: FileSession
    db: Database
    group: Chat
    alice: GroupClient
    bob: GroupClient
    op: GroupClient

    def photos(self) -> list[SendPhoto]:
        return [m for m in self.session.delivered_of(SendPhoto) if m.chat_id == GROUP_ID]

    def documents(self) -> list[SendDocument]:
        return self.session.delivered_of(SendDocument)


async def make_pond(db: Database, language: str) -> AsyncIterator[Pond]:
    session = FileSession()
    async with running(db, session=session) as h:
        async with db.transaction() as s:
            await repo.upsert_pond(s, GROUP_ID, title="Pond", chat_type="supergroup",
                                   default_language=language)
        group = group_chat(GROUP_ID, "Pond")
        pond = Pond(h, session, db, group, h.member(group, person(ALICE, "Alice", "alice")),
                    h.member(group, person(BOB, "Bob", "bobby")),
                    h.member(group, person(OPERATOR_ID, "Op")))
        await pond.alice.send("/checkin")
        await pond.bob.send("hello")
        await pond.op.send("/give @alice 50 welcome")
        await pond.op.send("/order @bobby 200 S-1")
        await h.settle()
        yield pond


@pytest.fixture
async def pond(bot_db: Database) -> AsyncIterator[Pond]:
    async for p in make_pond(bot_db, "en"):
        yield p


@pytest.fixture
async def zh_pond(bot_db: Database) -> AsyncIterator[Pond]:
    async for p in make_pond(bot_db, "zh"):
        yield p


def png_ok(data: bytes) -> bool:
    image = Image.open(io.BytesIO(data))
    image.verify()
    return data.startswith(PNG_MAGIC) and image.format == "PNG"


async def test_stats_counts_in_sql_and_sends_one_chart(pond: Pond) -> None:
    await pond.op.send("/stats")
    await pond.h.settle()
    [photo] = pond.photos()
    assert png_ok(pond.session.upload(photo))
    caption = photo.caption or ""
    assert "last 7 days" in caption
    assert "Members: 3 · active: 3" in caption
    # check-in 5 + give 50 + purchase 200 = 255 issued; purchases 200/255 = 78 %.
    assert "Points issued: 255 (purchases 200 · operators' adjustments 50 · check-in 5)" in caption
    assert "Purchases' share of points issued: 78% (aim: about 70%)" in caption
    assert "today 33%" in caption  # one check-in among three members

    now = pond.h.now
    async with pond.db.transaction(readonly=True) as s:
        figures = await pond_stats(
            s, GROUP_ID, LocalSpan.ending(local_day(now, "Asia/Shanghai"), 30, "Asia/Shanghai"))
    assert len(figures.days) == 30 and figures.days[-1].checkins == 1
    assert figures.days[-1].members == 3 and figures.days[0].members == 0
    assert figures.points.spent == {} and figures.games == {
        "votes": 0, "guesses": 0, "grabs": 0, "draws": 0}


async def test_stats_in_chinese_draws_every_label_with_the_packaged_font(
    zh_pond: Pond, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[charts.Chart] = []
    real = charts.render_png

    def spy(chart: charts.Chart) -> bytes:
        drawn.append(chart)
        return real(chart)

    monkeypatch.setattr(charts, "render_png", spy)
    await zh_pond.op.send("/stats 30d")
    await zh_pond.h.settle()
    [photo] = zh_pond.photos()
    assert png_ok(zh_pond.session.upload(photo))
    assert "近 30 天" in (photo.caption or "")
    [chart] = drawn
    texts = [chart.title] + [p.title for p in chart.panels]
    texts += [label for p in chart.panels for label in p.labels]
    assert "每日签到率" in texts and "购物" in texts
    assert all(charts.has_glyphs(text) for text in texts), texts


async def test_members_are_refused_and_bad_spans_get_the_usage(pond: Pond) -> None:
    for command in ("/stats", "/export", "/export members", "/review x"):
        await pond.alice.send(command)
    await pond.op.send("/stats 90d")
    await pond.h.settle()
    said = pond.h.replies(GROUP_ID)
    assert said[-5:-1] == ["⛔ Only the pond's operators can do that."] * 4
    assert said[-1].startswith("Usage: /stats [7d|30d]")
    assert pond.photos() == [] and pond.documents() == []


async def test_export_members_reaches_the_dm_as_pondbot_export_writes_it(
    pond: Pond, tmp_path: Path
) -> None:
    op_user = person(OPERATOR_ID, "Op")
    await pond.h.member(private_chat(op_user), op_user).send("/start")
    await pond.op.send("/export members")
    await pond.h.settle()
    [doc] = pond.documents()
    assert doc.chat_id == OPERATOR_ID
    assert isinstance(doc.document, InputFile) and not isinstance(doc.document,
                                                                  BufferedInputFile)
    assert doc.document.filename is not None
    assert doc.document.filename.startswith("members-") and doc.document.filename.endswith(".csv")
    expected = tmp_path / "members.csv"
    rows = export.export_to_path(pond.db.url, "members", expected)
    assert rows == 3
    assert pond.session.upload(doc) == expected.read_bytes()
    assert pond.h.replies(GROUP_ID)[-1] == "📤 Sent to your private chat."
    # The temporary file is gone once Telegram answered.
    assert not list(Path(str(doc.document.path)).parent.glob("*"))  # type: ignore[attr-defined]

    await pond.op.send("/export ledger")
    await pond.op.send("/export nonsense")
    await pond.h.settle()
    ledger = tmp_path / "ledger.csv"
    export.export_to_path(pond.db.url, "ledger", ledger)
    assert pond.session.upload(pond.documents()[-1]) == ledger.read_bytes()
    assert any(text.startswith(
        "Usage: /export [members|ledger|votes|redemptions|orders|draws|profiles|segments]")
               for text in pond.h.replies(GROUP_ID))


async def test_a_global_operator_exports_in_the_private_chat(pond: Pond, tmp_path: Path
                                                              ) -> None:
    op_user = person(OPERATOR_ID, "Op")
    dm = pond.h.member(private_chat(op_user), op_user)
    await dm.send("/export orders")
    await dm.send("/stats")
    await pond.h.settle()
    [doc] = pond.documents()
    assert doc.chat_id == OPERATOR_ID and doc.caption == "📄 orders：1 行"  # a DM speaks Chinese
    expected = tmp_path / "orders.csv"
    export.export_to_path(pond.db.url, "orders", expected)
    assert pond.session.upload(doc) == expected.read_bytes()
    said = pond.h.replies(OPERATOR_ID)
    assert said[-1] == "⚠️ 请在要查看的鱼塘群里使用。"
    assert not any("私聊" in text for text in said)  # no note: the file is right here


async def test_a_large_export_is_written_off_the_event_loop(pond: Pond, tmp_path: Path
                                                             ) -> None:
    import asyncio

    from storage.models import Member

    many = 20_000
    async with pond.db.transaction() as s:
        rows = [repo.member_row(repo.UserInfo(10**6 + i, f"会员{i}", username=f"m{i:06d}"),
                                pond.h.now) for i in range(many)]
        await s.execute(Member.__table__.insert(), rows)  # type: ignore[attr-defined]
    op_user = person(OPERATOR_ID, "Op")
    await pond.h.member(private_chat(op_user), op_user).send("/start")
    await pond.h.settle()
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.005)
            gaps.append(loop.time() - last)
            last = loop.time()

    beat = asyncio.create_task(heartbeat())
    await pond.op.send("/export members")
    await pond.h.settle(within=60)
    done.set()
    await beat
    [doc] = pond.documents()
    data = pond.session.upload(doc)
    assert data.count(b"\n") == many + 3 + 1
    expected = tmp_path / "members.csv"
    export.export_to_path(pond.db.url, "members", expected)
    assert data == expected.read_bytes()
    # The loop kept turning while the CSV was written (in a worker thread, streamed
    # to a file): no stall anywhere near the export's own duration.
    assert len(gaps) > 10 and max(gaps) < 1.0, (len(gaps), max(gaps))


async def test_export_without_a_linked_dm_sends_only_a_note(pond: Pond) -> None:
    await pond.op.send("/export")
    await pond.h.settle()
    assert pond.documents() == []
    assert pond.h.replies(GROUP_ID)[-1].startswith("📤 Open a private chat with me")


async def test_export_refused_by_the_dm_says_so_once(pond: Pond) -> None:
    op_user = person(OPERATOR_ID, "Op")
    await pond.h.member(private_chat(op_user), op_user).send("/start")
    await pond.h.settle()
    before = len(pond.h.replies(GROUP_ID))
    pond.session.fail_next("sendDocument", error_code=403,
                           description="Forbidden: bot was blocked by the user")
    await pond.op.send("/export votes")
    await pond.h.settle()
    assert pond.documents() == []
    notes = pond.h.replies(GROUP_ID)[before:]
    assert len(notes) == 1 and notes[0].startswith("📤 Open a private chat with me")


async def test_review_counts_new_and_returning_buyers_against_the_target(pond: Pond) -> None:
    today = local_day(pond.h.now, "Asia/Shanghai")
    sale = today + timedelta(days=3)  # today is in the campaign's warm-up
    # Bob bought before the campaign: a returning buyer; Alice buys for the first time.
    async with pond.db.transaction() as s:
        from storage.models import Order

        row = (await s.execute(Order.__table__.select())).one()  # type: ignore[attr-defined]
        await s.execute(Order.__table__.update().values(  # type: ignore[attr-defined]
            paid_at=row.paid_at - timedelta(days=200)))
    await pond.op.send(f"/campaign 双十一 {sale:%m-%d}")
    await pond.op.send("/order @bobby 100 S-2")
    await pond.op.send("/order @alice 50.50 S-3")
    await pond.op.send("/review 双十一 10 2")
    await pond.op.send("/review 618")
    await pond.op.send("/review")
    await pond.h.settle()
    [photo] = pond.photos()
    assert png_ok(pond.session.upload(photo))
    caption = photo.caption or ""
    assert "Orders: 2 · amount ¥150.50" in caption
    assert "Buyers: 2 — new 1, returning 1" in caption
    assert ("🎯 Against the target given: 10 sales, 2 per buyer → 5 buyers\n"
            "Orders 2 of 10 (20%), amount ¥150.50 · buyers 2 of 5 (40%)") in caption
    assert "warm-up: 2 orders, ¥150.50" in caption
    said = pond.h.replies(GROUP_ID)
    assert "No campaign named 618" in said[-2]
    assert said[-1].startswith("Usage: /review")


class Charts:
    """The charts drawn, as the handler built them (drawn for real as well)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.drawn: list[charts.Chart] = []
        draw = charts.render_png

        def recording(chart: charts.Chart) -> bytes:
            self.drawn.append(chart)
            return draw(chart)

        monkeypatch.setattr(charts, "render_png", recording)


async def _plans(db: Database) -> list[tuple[int, int, int]]:
    from sqlalchemy import select

    from storage.models import SalesPlan

    async with db.transaction(readonly=True) as s:
        rows = (await s.execute(select(SalesPlan).order_by(SalesPlan.id))).scalars()  # type: ignore[arg-type]
        return [(r.chat_id, r.sales, r.per_buyer) for r in rows]


async def _review(pond: Pond, command: str = "/review 双十一") -> str:
    await pond.op.send(command)
    await pond.h.settle()
    return pond.photos()[-1].caption or ""


async def test_review_compares_with_the_last_plan_of_the_pond_else_the_shop(
    pond: Pond, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = Charts(monkeypatch).drawn
    today = local_day(pond.h.now, "Asia/Shanghai")
    await pond.op.send(f"/campaign 双十一 {today + timedelta(days=3):%m-%d}")
    await pond.op.send("/order @alice 50.50 S-3")  # with Bob's ¥200: 2 orders, 2 buyers
    caption = await _review(pond)
    assert ("No target yet: set one with /plan SALES PER_BUYER (e.g. /plan 200 5), "
            "or give it here: /review 双十一 200 5") in caption
    assert drawn[-1].panels[0].target is None and drawn[-1].panels[1].target is None

    # A global operator's /plan in their private chat is the shop's: a pond without its
    # own follows it.
    op_user = person(OPERATOR_ID, "Op")
    dm = pond.h.member(private_chat(op_user), op_user)
    await dm.send("/plan 300 3")
    caption = await _review(pond)
    assert (f"🎯 Against the shop's last /plan ({today:%m-%d}): 300 sales, 3 per buyer → "
            "100 buyers\nOrders 2 of 300 (1%), amount ¥250.50 · buyers 2 of 100 (2%)") in caption

    # The pond's own /plan answers as it always did, and is what /review compares with.
    first = await pond.op.send("/plan 200 5")
    await pond.h.settle()
    assert "<b>40</b> buyers" in pond.h.replies(GROUP_ID)[-1]
    caption = await _review(pond)
    assert (f"🎯 Against the pond's last /plan ({today:%m-%d}): 200 sales, 5 per buyer → "
            "40 buyers\nOrders 2 of 200 (1%), amount ¥250.50 · buyers 2 of 40 (5%)") in caption
    orders, buyers = drawn[-1].panels[0], drawn[-1].panels[1]
    assert (orders.target, orders.target_label) == (200.0, f"last /plan ({today:%m-%d}): 200 sales")
    assert orders.values[0] == 2 and "¥250.50" in orders.title
    assert (buyers.target, buyers.target_label) == (40.0, f"last /plan ({today:%m-%d}): 40 buyers")

    # A later /plan replaces it; the first one delivered again (after a restart, with a
    # new update id) stores nothing and does not win back.
    await pond.op.send("/plan 100 4")
    await pond.h.settle()
    await pond.op.resend(first, pond.h.next_update_id())
    await pond.h.settle()
    assert "<b>40</b> buyers" in pond.h.replies(GROUP_ID)[-1]  # answered as before
    assert await _plans(pond.db) == [(0, 300, 3), (GROUP_ID, 200, 5), (GROUP_ID, 100, 4)]
    caption = await _review(pond)
    assert "pond's last /plan" in caption and "100 sales, 4 per buyer → 25 buyers" in caption
    assert "buyers 2 of 25 (8%)" in caption
    assert drawn[-1].panels[1].target == 25.0

    # A target typed after the name still wins over the stored plan.
    caption = await _review(pond, "/review 双十一 10 2")
    assert "🎯 Against the target given: 10 sales, 2 per buyer → 5 buyers" in caption
    assert drawn[-1].panels[1].target_label == "target: 5 buyers"
    assert png_ok(pond.session.upload(pond.photos()[-1]))


async def test_a_bad_or_refused_plan_stores_nothing(pond: Pond) -> None:
    for command in ("/plan", "/plan 200", "/plan 0 5", "/plan 200 5 7"):
        await pond.op.send(command)
    await pond.alice.send("/plan 200 5")
    await pond.h.settle()
    said = pond.h.replies(GROUP_ID)
    assert all(text.startswith("Usage: /plan") for text in said[-5:-1])
    assert said[-1] == "⛔ Only the pond's operators can do that."
    assert await _plans(pond.db) == []


async def test_review_in_chinese_names_the_last_plan(zh_pond: Pond) -> None:
    today = local_day(zh_pond.h.now, "Asia/Shanghai")
    await zh_pond.op.send(f"/campaign 双十一 {today + timedelta(days=3):%m-%d}")
    await zh_pond.op.send("/plan 200 5")
    caption = await _review(zh_pond)
    assert f"🎯 对比本群最近一次 /plan（{today:%m-%d}）：200 件，人均 5 件 → 40 位买家" in caption
    assert "买家 1/40（2%）" in caption


# -- the queries on both databases ---------------------------------------------------------

POND_ID, OTHER = -100777, -100888
U1, U2, U3, U4, BOT_U, U8, U9 = 101, 102, 103, 104, 105, 108, 109
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)  # 20:00 in Shanghai
TZ = "Asia/Shanghai"


async def seed(db: Database) -> None:
    from games.settings import PondSettings
    from games.tiers import parse_tiers
    from storage import ledger, orders
    from storage.models import Checkin, Draw, LedgerKind, Vote, VoteBallot

    day = timedelta(days=1)
    tiers = parse_tiers(PondSettings().tiers)
    async with db.transaction() as s:
        for uid in (U1, U2, U3, U4, U8, U9):
            await repo.upsert_member(s, repo.UserInfo(uid, f"U{uid}"), NOW - 30 * day)
        await repo.upsert_member(s, repo.UserInfo(BOT_U, "Bot", is_bot=True), NOW - 30 * day)
        seats = {U1: (10, 0.05), U2: (12, 9), U3: (20, 20), U4: (20, 20), BOT_U: (5, 0)}
        for uid, (first, last) in seats.items():
            await repo.touch_membership(s, POND_ID, uid, now=NOW - first * day)
            await repo.touch_membership(s, POND_ID, uid, now=NOW - last * day)
        await repo.touch_membership(s, POND_ID, U4, status="left", now=NOW - 3 * day)
        await repo.touch_membership(s, OTHER, U8, now=NOW)
        s.add(Checkin(user_id=U1, chat_id=POND_ID, day=date(2026, 12, 6), created_at=NOW))
        s.add(Checkin(user_id=U2, chat_id=POND_ID, day=date(2026, 12, 5), created_at=NOW - day))
        s.add(Checkin(user_id=U1, chat_id=POND_ID, day=date(2026, 12, 5), makeup=True,
                      created_at=NOW))
        await ledger.award(s, user_id=U1, amount=5, kind=LedgerKind.checkin, key="c1",
                           chat_id=POND_ID, now=NOW)
        await ledger.award(s, user_id=U1, amount=25, kind=LedgerKind.admin_adjust, key="a1",
                           chat_id=POND_ID, now=NOW - 2 * day)
        await ledger.award(s, user_id=U8, amount=100, kind=LedgerKind.admin_adjust, key="a2",
                           chat_id=OTHER, now=NOW)
        await ledger.award(s, user_id=U1, amount=999, kind=LedgerKind.admin_adjust, key="a3",
                           chat_id=POND_ID, now=NOW - 8 * day)  # before the 7 days
        await ledger.spend(s, user_id=U1, amount=10, kind=LedgerKind.redeem, key="r1",
                           chat_id=POND_ID, now=NOW)
        await ledger.award(s, user_id=U1, amount=10, kind=LedgerKind.refund, key="f1",
                           chat_id=POND_ID, now=NOW)
        for no, uid, cents, paid, chat in (
            ("O-1", U1, 7000, NOW, POND_ID),  # first ever, in the span: new
            ("O-2", U2, 9900, NOW - 35 * day, None),  # before the span
            ("O-3", U2, 5000, NOW - 4 * day, None),  # returning
            ("O-4", U9, 2000, NOW - 3 * day, POND_ID),  # no seat, but typed in the pond
            ("O-5", U8, 3000, NOW - 3 * day, None),  # another pond's member
        ):
            await orders.record_order(s, order_no=no, user_id=uid, cents=cents,
                                      points_per_yuan=1, tiers=tiers, chat_id=chat,
                                      paid_at=paid, now=paid)
        vote = Vote(chat_id=POND_ID, source_key="v", question="?", options=["a", "b"],
                    opened_at=NOW - day, closes_at=NOW + day)
        s.add(vote)
        await s.flush()
        assert vote.id is not None
        s.add(VoteBallot(vote_id=vote.id, user_id=U1, cast_at=NOW - day))
        s.add(VoteBallot(vote_id=vote.id, user_id=U2, cast_at=NOW - day))
        s.add(Draw(user_id=U1, chat_id=POND_ID, day=date(2026, 12, 6), source_key="d",
                   created_at=NOW))
        s.add(Draw(user_id=U1, chat_id=OTHER, day=date(2026, 12, 6), source_key="d2",
                   created_at=NOW))


async def test_pond_stats_and_review_on_sqlite_and_postgresql(db: Database) -> None:
    await seed(db)
    span = LocalSpan.ending(date(2026, 12, 6), 7, TZ)
    async with db.transaction(readonly=True) as s:
        figures = await pond_stats(s, POND_ID, span)
    assert (figures.members, figures.active) == (3, 2)  # U3 neither seen nor acting
    assert [(d.day.day, d.checkins, d.members) for d in figures.days] == [
        (30, 0, 4), (1, 0, 4), (2, 0, 4), (3, 0, 3), (4, 0, 3), (5, 1, 3), (6, 1, 3)]
    assert figures.points.issued == {"checkin": 5, "admin_adjust": 25, "purchase": 90}
    assert figures.points.returned == {"refund": 10}
    assert figures.points.spent == {"redeem": 10}
    assert figures.points.purchase_share == 0.75
    assert figures.games == {"votes": 2, "guesses": 0, "grabs": 0, "draws": 1}

    campaign = LocalSpan(date(2026, 12, 1), date(2026, 12, 6), TZ)
    phases = {
        "warmup": [(campaign.start_of(date(2026, 12, 1)), campaign.start_of(date(2026, 12, 6)))],
        "sprint": [(campaign.start_of(date(2026, 12, 6)), campaign.until)],
        "afterglow": [],
    }
    async with db.transaction(readonly=True) as s:
        r = await review(s, POND_ID, campaign, phases)
    assert (r.sales.orders, r.sales.cents, r.sales.buyers, r.sales.new_buyers) == (
        3, 14000, 3, 2)
    assert r.sales.returning_buyers == 1
    assert {k: (v.orders, v.cents) for k, v in r.by_phase.items()} == {
        "warmup": (2, 7000), "sprint": (1, 7000), "afterglow": (0, 0)}
    assert r.points.spent == {"redeem": 10} and r.points.total_issued == 120
    assert r.games["votes"] == 2 and r.games["draws"] == 1


async def test_stored_plans_on_sqlite_and_postgresql(db: Database) -> None:
    from storage.plans import SHOP_WIDE, last_plan, save_plan

    async def save(scope: int, sales: int, key: str) -> bool:
        async with db.transaction() as s:
            return await save_plan(s, scope, sales, 5, set_by=U1, source_key=key, now=NOW)

    async def last(chat_id: int) -> tuple[int, bool] | None:
        async with db.transaction(readonly=True) as s:
            found = await last_plan(s, chat_id)
        return (found.sales, found.shop_wide) if found else None

    assert await last(POND_ID) is None
    assert await save(SHOP_WIDE, 300, "plan:1:1")
    assert await last(POND_ID) == (300, True)
    assert await save(POND_ID, 200, "plan:2:1") and await save(POND_ID, 100, "plan:2:2")
    assert await save(SHOP_WIDE, 400, "plan:1:2")  # newer, but the pond has its own
    assert not await save(POND_ID, 200, "plan:2:1")  # a replay stores nothing
    assert await last(POND_ID) == (100, False)
    assert await last(OTHER) == (400, True)


async def test_a_chart_that_cannot_be_drawn_leaves_the_text(
    pond: Pond, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(chart: charts.Chart) -> bytes:
        raise RuntimeError("no drawing today")

    monkeypatch.setattr(charts, "render_png", broken)
    await pond.op.send("/stats 30d")
    await pond.h.settle()
    assert pond.photos() == []
    assert pond.h.replies(GROUP_ID)[-1].startswith("📊 <b>Pond stats, last 30 days</b>")


async def test_stats_and_review_keep_what_a_pond_did_before_it_became_a_supergroup(
    db: Database,
) -> None:
    """The upgrade moves the memberships to the new chat id; the history (ledger,
    check-ins, votes, draws, orders) stays under the old one and still counts."""
    await seed(db)
    span = LocalSpan.ending(date(2026, 12, 6), 7, TZ)
    campaign = LocalSpan(date(2026, 12, 1), date(2026, 12, 6), TZ)
    phases = {"sprint": [(campaign.since, campaign.until)]}
    async with db.transaction() as s:
        await repo.upsert_pond(s, POND_ID, title="Pond", chat_type="group")
    async with db.transaction(readonly=True) as s:
        before = (await pond_stats(s, POND_ID, span), await review(s, POND_ID, campaign, phases))
    new_id = -1009000000001
    async with db.transaction() as s:
        await repo.migrate_pond(s, POND_ID, new_id, now=NOW)
    async with db.transaction(readonly=True) as s:
        after = (await pond_stats(s, new_id, span), await review(s, new_id, campaign, phases))
        assert await repo.pond_chat_ids(s, new_id) == (new_id, POND_ID)
    assert after == before
    assert after[0].points.issued["checkin"] == 5 and after[1].sales.orders == 3
