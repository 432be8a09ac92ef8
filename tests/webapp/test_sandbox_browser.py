"""`pondbot demo --web` in headless Chromium: the emulator, the real bot and the sandbox
page; a member checks in by typing, the board appears with its button, another member
presses it, the toast shows and the board is edited in place; `/me` in a private chat
gives the members' page's button, which opens the page signed for that member; the quick
actions work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.demo.web import sandbox
from tests.webapp.chromium import STEP_LIMIT, Steps, shots

WAIT = STEP_LIMIT * 1000


async def test_the_sandbox_plays_a_check_in_in_the_browser(browser: Any,
                                                           tmp_path: Path) -> None:
    steps = Steps("sandbox")
    async with sandbox(port=0) as (sb, url):
        steps.done("emulator, bot and page started")
        context = await browser.new_context(viewport={"width": 1100, "height": 640})
        tab = await context.new_page()
        await tab.goto(url)
        await tab.wait_for_selector("body[data-ready='1']", timeout=WAIT)
        steps.done("page loaded")

        await tab.fill("form[data-target='pond'] input", "签到")  # as Alice
        await tab.press("form[data-target='pond'] input", "Enter")
        board = tab.locator("#pond .msg.bot", has=tab.locator(".buttons button")).last
        await board.wait_for(timeout=WAIT)
        steps.done("typed check-in: the board appears")
        before = await board.inner_text()

        await tab.select_option("#who", str(sb.cast.bob))
        await tab.wait_for_function(
            f"document.getElementById('who').value === '{sb.cast.bob}'", timeout=WAIT)
        await board.locator(".buttons button").first.click()
        await tab.wait_for_selector("#toast:not([hidden])", timeout=WAIT)
        toast = await tab.inner_text("#toast")
        assert toast.strip()
        steps.done("button pressed: toast shown")
        await tab.wait_for_function(
            "(before) => { const b = [...document.querySelectorAll('#pond .msg.bot')]"
            ".filter(m => m.querySelector('.buttons button')).pop();"
            " return b && b.innerText !== before && b.querySelector('.edited'); }",
            arg=before, timeout=WAIT)
        steps.done("board edited in place")
        await tab.screenshot(path=str(shots(tmp_path) / "sandbox.png"))

        await tab.select_option("#who", str(sb.cast.alice))
        await tab.wait_for_function(
            f"document.getElementById('who').value === '{sb.cast.alice}'", timeout=WAIT)
        await tab.fill("form[data-target='dm'] input", "/me")
        await tab.press("form[data-target='dm'] input", "Enter")
        link = tab.locator("#dm .buttons a").last
        await link.wait_for(timeout=WAIT)
        async with context.expect_page(timeout=WAIT) as opened:
            await link.click()
        member_page = await opened.value
        await member_page.wait_for_selector("body[data-ready='1']", timeout=WAIT)
        assert int(await member_page.inner_text("#balance")) > 0
        assert await member_page.locator("#calendar .done").count() == 1
        steps.done("/me in the DM: the members' page opens signed for Alice")

        await tab.click("[data-action='join']")
        await tab.wait_for_function(
            "[...document.querySelectorAll('#who option')].some(o => o.text.includes('新朋友'))",
            timeout=WAIT)
        await tab.click("[data-action='supergroup']")
        await tab.wait_for_function(
            "document.getElementById('pond-title').textContent.includes('-1001000000999')",
            timeout=WAIT)
        steps.done("quick actions: join, supergroup")
        assert sb.emu.violations == []
    steps.report()
