"""The members' page's API (F15) through its aiohttp app, over the production dispatcher
and a real migrated SQLite file: the figures `/points` and `pondbot export members` give,
history pages, the month's check-ins, the shop and `/redeem`'s transaction from the page
(a replayed request paid once), and every call refused with 401 without a genuine,
fresh initData — with nothing changed."""

from __future__ import annotations

import csv
import io
from typing import Any

from aiogram.methods import SendMessage
from sqlalchemy import func, select

from handlers.webapp_api import PAGE_DEPS
from storage import ledger
from storage.export import export_members
from storage.models import LedgerEntry, LedgerKind, Redemption, ShopItem
from tests.rig.client import group_chat, person
from tests.webapp.conftest import (
    GROUP_ID,
    MEMBER_ID,
    OPERATOR_ID,
    TOKEN,
    Page,
    days_ago,
    init_data,
    link_dm,
)


async def exported_balance(p: Page, user_id: int) -> int:
    out = io.StringIO()
    await export_members(p.db, out)
    rows = {int(r["user_id"]): r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    return int(rows[user_id]["balance"])


async def count(p: Page, what: Any) -> int:
    async with p.db.transaction(readonly=True) as s:
        return int(await s.scalar(select(func.count()).select_from(what)) or 0)


async def checked_in_member(p: Page, points: int = 100) -> None:
    await p.h.member(p.group, p.member).send("/checkin")
    await p.h.member(p.group, person(OPERATOR_ID, "Op")).send(f"/give @fish {points} welcome")
    await p.h.settle()


async def test_me_tells_what_points_and_the_export_tell(page: Page) -> None:
    await checked_in_member(page)
    status, me = await page.get("me")
    assert status == 200, me
    assert me["user_id"] == MEMBER_ID
    assert me["balance"] == await exported_balance(page, MEMBER_ID) > 100
    assert (me["tier"], me["streak"], me["rank"]) == ("member", 1, 1)
    assert me["chat_id"] == page.group.id
    assert me["ponds"] == [{"chat_id": page.group.id, "title": "测试鱼塘"}]
    assert me["lang"] == "zh"
    _, en = await page.get("me", data=init_data(language="en"))
    assert en["lang"] == "en"


async def test_a_pond_the_member_is_not_in_is_refused(page: Page) -> None:
    await checked_in_member(page)
    status, body = await page.get("me", chat="-100999")
    assert (status, body["error"]) == (404, "unknown_pond")
    status, body = await page.get("me", chat="x")
    assert (status, body["error"]) == (400, "bad_chat")


async def test_history_pages_newest_first_fifty_at_a_time(page: Page) -> None:
    await checked_in_member(page)
    async with page.db.transaction() as s:
        for i in range(118):
            await ledger.award(s, user_id=MEMBER_ID, amount=1, kind=LedgerKind.admin_adjust,
                               key=f"test:{i}")
    seen: list[int] = []
    before: int | None = None
    sizes = []
    while True:
        status, body = await page.get("history", **({"before": before} if before else {}))
        assert status == 200, body
        sizes.append(len(body["entries"]))
        seen += [e["id"] for e in body["entries"]]
        before = body["next"]
        if before is None:
            break
    total = await count(page, LedgerEntry)
    assert sizes == [50, 50, total - 100]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == total
    status, body = await page.get("history", before="abc")
    assert (status, body["error"]) == (400, "bad_before")


async def test_the_month_shows_todays_check_in(page: Page) -> None:
    await checked_in_member(page)
    status, cal = await page.get("calendar")
    assert status == 200, cal
    assert cal["month"] == cal["today"][:7]
    assert cal["days"] == [int(cal["today"][8:])] and cal["makeup"] == []
    _, other = await page.get("calendar", month="2020-01")
    assert other["days"] == [] and other["month"] == "2020-01"
    status, bad = await page.get("calendar", month="2020-13")
    assert (status, bad["error"]) == (400, "bad_month")


async def test_redeem_from_the_page_is_redeem_exactly_once(page: Page) -> None:
    await checked_in_member(page)
    await link_dm(page)
    item = await page.add_item("30 2 limit=0 满100减10")
    _, shop = await page.get("shop")
    assert [(i["id"], i["price"], i["stock"]) for i in shop["items"]] == [(item, 30, 2)]
    before = await exported_balance(page, MEMBER_ID)

    status, r = await page.post("redeem", {"item_id": item, "request_id": "req-0001"})
    assert status == 200, r
    assert r["balance"] == before - 30 == await exported_balance(page, MEMBER_ID)
    assert r["code"] and r["code_sent"] and not r["replayed"]
    await page.h.settle()
    dms = [m for m in page.h.session.requests_of(SendMessage)
           if m.chat_id == MEMBER_ID and r["code"] in m.text]
    assert len(dms) == 1  # the code also went to the DM, through the outbox

    again = await page.post("redeem", {"item_id": item, "request_id": "req-0001"})
    assert again[0] == 200 and again[1]["replayed"]
    assert again[1]["redemption_id"] == r["redemption_id"] and again[1]["code"] == r["code"]
    assert await exported_balance(page, MEMBER_ID) == before - 30
    await page.h.settle()
    assert len([m for m in page.h.session.requests_of(SendMessage)
                if m.chat_id == MEMBER_ID and r["code"] in m.text]) == 1

    status, second = await page.post("redeem", {"item_id": item, "request_id": "req-0002"})
    assert status == 200 and second["code"] != r["code"]
    status, third = await page.post("redeem", {"item_id": item, "request_id": "req-0003"})
    assert (status, third["error"]) == (409, "sold_out")
    assert await count(page, Redemption) == 2
    assert await exported_balance(page, MEMBER_ID) == before - 60
    async with page.db.transaction(readonly=True) as s:
        debits = await s.scalar(select(func.count()).select_from(LedgerEntry).where(
            LedgerEntry.kind == LedgerKind.redeem.value))  # type: ignore[arg-type]
    assert debits == 2


async def test_redeem_refusals_change_nothing(page: Page) -> None:
    await checked_in_member(page, points=10)
    item = await page.add_item("500 3 Big prize")
    before = await exported_balance(page, MEMBER_ID)
    status, body = await page.post("redeem", {"item_id": item, "request_id": "req-0001"})
    assert (status, body["error"], body["needed"]) == (409, "not_enough_points", 500)
    for bad, code in [({"item_id": "1", "request_id": "req-0002"}, "bad_item"),
                      ({"item_id": item}, "bad_request_id"),
                      ({"item_id": item, "request_id": "x"}, "bad_request_id"),
                      ([1], "bad_body")]:
        status, body = await page.post("redeem", bad)
        assert (status, body["error"]) == (400, code)
    status, body = await page.post("redeem", {"item_id": 999, "request_id": "req-0003"})
    assert (status, body["error"]) == (409, "unknown_item")
    assert await exported_balance(page, MEMBER_ID) == before
    assert await count(page, Redemption) == 0


async def test_forged_stale_or_missing_init_data_is_401_and_changes_nothing(page: Page) -> None:
    await checked_in_member(page)
    await link_dm(page)
    item = await page.add_item("30 5 Coupon")
    before = (await exported_balance(page, MEMBER_ID), await count(page, LedgerEntry))
    genuine = init_data()
    forged = genuine[:-1] + ("0" if genuine[-1] != "0" else "1")
    other_bot = init_data(token="43:" + TOKEN.split(":")[1])
    stale = init_data(at=days_ago(2))
    someone_else = genuine.replace(str(MEMBER_ID), "700002")
    cases = {"forged": forged, "forged ": other_bot, "stale": stale, "missing": "",
             "forged  ": someone_else, "malformed": "hash=abc&user=1"}
    for reason, data in cases.items():
        for method, path in [("get", "me"), ("get", "history"), ("get", "calendar"),
                             ("get", "shop"), ("get", "mine"), ("post", "redeem")]:
            if method == "get":
                status, body = await page.get(path, data=data)
            else:
                status, body = await page.post(
                    path, {"item_id": item, "request_id": "req-0001"}, data=data)
            assert status == 401, (reason, path, body)
            assert body == {"error": "unauthorized", "reason": reason.strip()}
            assert TOKEN not in str(body)
    assert (await exported_balance(page, MEMBER_ID), await count(page, LedgerEntry)) == before
    assert await count(page, Redemption) == 0
    async with page.db.transaction(readonly=True) as s:
        stock = await s.scalar(select(ShopItem.stock).where(ShopItem.id == item))  # type: ignore[arg-type]
    assert stock == 5


async def test_the_page_and_its_files_are_served(page: Page) -> None:
    r = await page.client.get("/app/")
    assert r.status == 200 and "text/html" in r.headers["Content-Type"]
    assert "/app/app.js" in await r.text()
    for name, kind in [("app.js", "javascript"), ("app.css", "css")]:
        r = await page.client.get(f"/app/{name}")
        assert r.status == 200 and kind in r.headers["Content-Type"]
    assert (await page.client.get("/app/missing.js")).status == 404
    assert (await page.client.get("/app/..%2fwebapp.py")).status == 404


async def test_several_ponds_the_latest_by_default_and_chat_picks_one(page: Page) -> None:
    other = group_chat(GROUP_ID - 1, "第二个鱼塘")
    await checked_in_member(page)
    await page.h.member(other, page.member).send("大家好")  # seen here last
    await page.h.settle()
    _, me = await page.get("me")
    assert me["chat_id"] == other.id
    assert [p["chat_id"] for p in me["ponds"]] == [other.id, page.group.id]
    _, first = await page.get("me", chat=str(page.group.id))
    assert first["chat_id"] == page.group.id and first["balance"] == me["balance"]


async def test_a_member_calling_too_fast_gets_429_and_changes_nothing(page: Page) -> None:
    """Past the burst a member's calls are refused with 429 and a Retry-After, before
    anything is read or written (a redeem is not made); another member is not held up;
    once the bucket refills the member is served again."""
    await checked_in_member(page)
    await link_dm(page)
    item = await page.add_item("30 5 Coupon")
    limits = page.client.server.app[PAGE_DEPS].limits
    now = [1000.0]
    limits.monotonic = lambda: now[0]
    for _ in range(limits.burst):
        status, _body = await page.get("me")
        assert status == 200
    before = (await exported_balance(page, MEMBER_ID), await count(page, Redemption))
    status, body = await page.post("redeem", {"item_id": item, "request_id": "req-0001"})
    assert (status, body["error"], body["retry_after"]) == (429, "too_many_requests", 1)
    r = await page.client.get("/app/api/me", headers={"X-Telegram-Init-Data": init_data()})
    assert r.status == 429 and r.headers["Retry-After"] == "1"
    assert (await exported_balance(page, MEMBER_ID), await count(page, Redemption)) == before
    other = init_data(OPERATOR_ID, first_name="Op")
    assert (await page.get("shop", data=other))[0] == 200  # a bucket per member
    now[0] += 1 / limits.rate  # one call's worth refilled
    status, body = await page.post("redeem", {"item_id": item, "request_id": "req-0001"})
    assert status == 200, body
    assert await count(page, Redemption) == 1
