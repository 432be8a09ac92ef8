"""The members' page in a real browser: Debian's Chromium, headless, driven by Playwright
(its own browser download is never used). The page gets its initData the way a Telegram
client hands it over — in the launch URL's `#tgWebAppData=` — so it needs nothing from
the network.

Each test prints its steps' timings. Screenshots go to `$SCREENSHOTS_DIR` (the test's
temporary folder by default; `SCREENSHOTS_DIR=docs` refreshes the ones in the repo).

Chromium missing: skipped on a developer's machine, a failure in CI (`CI` set), where
`scripts/test` installs it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import select

from storage.export import export_members
from storage.models import Redemption
from tests.rig.client import person
from tests.webapp.chromium import STEP_LIMIT, Steps, shots
from tests.webapp.conftest import MEMBER_ID, OPERATOR_ID, Page, init_data, link_dm


async def exported_balance(p: Page) -> int:
    out = io.StringIO()
    await export_members(p.db, out)
    rows = {int(r["user_id"]): r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    return int(rows[MEMBER_ID]["balance"])


THEME = '{"bg_color":"#f0f4f8","button_color":"#2a9d8f"}'  # as a Telegram client passes it


def page_url(p: Page, data: str) -> str:
    return str(p.client.make_url("/app/")) + "#tgWebAppData=" + quote(data, safe="") + (
        "&tgWebAppVersion=7.0&tgWebAppPlatform=tdesktop&tgWebAppThemeParams=" + quote(THEME)
    )


async def open_tab(browser: Any) -> Any:
    context = await browser.new_context(viewport={"width": 400, "height": 760}, locale="zh-CN")
    tab = await context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())  # the redeem confirmation
    return tab


async def test_the_page_shows_the_balance_and_redeems(page: Page, browser: Any,
                                                      tmp_path: Path) -> None:
    steps = Steps("members' page")
    await page.h.member(page.group, page.member).send("/checkin")
    await page.h.member(page.group, person(OPERATOR_ID, "Op")).send("/give @fish 120 欢迎")
    await page.h.member(page.group, person(OPERATOR_ID, "Op")).send("/order @fish 10 A-1")
    await link_dm(page)
    item = await page.add_item("30 3 limit=0 满100减10券")
    await page.add_item("50 1 limit=0 kind=goods 鱼塘帆布袋")
    balance = await exported_balance(page)
    steps.done("seeded")

    tab = await open_tab(browser)
    await tab.goto(page_url(page, init_data()))
    await tab.wait_for_selector("body[data-ready='1']", timeout=STEP_LIMIT * 1000)
    steps.done("page loaded")
    assert await tab.inner_text("#balance") == str(balance)
    assert await tab.inner_text("#rank") == "#1"
    assert await tab.inner_text("#tier") == "VIP1"  # the default tiers: VIP1 from ¥0.01, 9.8折
    assert await tab.inner_text("#discount") == "9.8折"
    assert await tab.locator("#mine li").count() == 0
    assert await tab.inner_text("#no-mine") == "还没有兑换或抽奖记录"
    assert await tab.evaluate("getComputedStyle(document.body).backgroundColor") == (
        "rgb(240, 244, 248)")  # the client's theme
    assert await tab.locator("#calendar .done").count() == 1
    assert await tab.locator("#history li").count() >= 2
    await tab.screenshot(path=str(shots(tmp_path) / "members-page.png"), full_page=True)
    steps.done("balance checked, screenshot")

    await tab.click(f"li[data-item='{item}'] button")
    await tab.wait_for_selector("#result code", timeout=STEP_LIMIT * 1000)
    steps.done("redeemed")
    shown = await tab.inner_text("#result code")
    async with page.db.transaction(readonly=True) as s:
        redemptions = list((await s.execute(select(Redemption.id, Redemption.code))).all())
    assert [code for _id, code in redemptions] == [shown]
    # "My coupons" (我的兑换) is refreshed: the new coupon, with its code
    coupon = f"#mine li[data-mine='redemption:{redemptions[0][0]}']"
    await tab.wait_for_selector(f"{coupon} code", timeout=STEP_LIMIT * 1000)
    assert await tab.inner_text(f"{coupon} code") == shown
    assert "满100减10券" in await tab.inner_text(coupon)
    assert await tab.locator("#mine li").count() == 1 and await tab.is_hidden("#no-mine")
    await tab.locator("section", has=tab.locator("#mine")).screenshot(
        path=str(shots(tmp_path) / "members-page-mine.png"))
    assert await tab.inner_text("#balance") == str(balance - 30) == str(
        await exported_balance(page))
    await tab.wait_for_function(
        f"document.querySelector(`li[data-item='{item}'] small`).textContent.includes('剩余 2')",
        timeout=STEP_LIMIT * 1000)
    await tab.screenshot(path=str(shots(tmp_path) / "members-page-redeemed.png"))
    steps.done("code and new balance shown")
    steps.report()


async def test_a_forged_init_data_shows_the_401_error(page: Page, browser: Any,
                                                      tmp_path: Path) -> None:
    steps = Steps("forged initData")
    await page.h.member(page.group, page.member).send("/checkin")
    await page.h.settle()
    before = await exported_balance(page)
    genuine = init_data()
    forged = genuine.replace(str(MEMBER_ID), str(MEMBER_ID + 1))
    tab = await open_tab(browser)
    await tab.goto(page_url(page, forged))
    await tab.wait_for_selector("#error:not([hidden])", timeout=STEP_LIMIT * 1000)
    steps.done("error shown")
    assert "身份验证失败" in await tab.inner_text("#error")
    assert await tab.is_hidden("#page")
    await tab.screenshot(path=str(shots(tmp_path) / "members-page-401.png"))
    assert await exported_balance(page) == before
    steps.done("screenshot")
    steps.report()
