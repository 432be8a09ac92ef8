"""`/me` through the real Dispatcher: a `web_app` button in the private chat; from a pond,
the button goes to the member's private chat (a `web_app` button is for private chats
only) with the pond's id in its address, and the pond gets one short line."""

from __future__ import annotations

from aiogram.methods import SendMessage

from tests.rig.client import private_chat
from tests.webapp.conftest import MEMBER_ID, WEBAPP_URL, Page, link_dm


def web_app_urls(m: SendMessage) -> list[str]:
    markup = m.reply_markup
    if markup is None or not hasattr(markup, "inline_keyboard"):
        return []
    return [b.web_app.url for row in markup.inline_keyboard for b in row if b.web_app]


async def test_me_in_the_private_chat_answers_with_the_page_button(page: Page) -> None:
    await page.h.member(private_chat(page.member), page.member).send("/me")
    await page.h.settle()
    sent = [m for m in page.h.session.requests_of(SendMessage) if m.chat_id == MEMBER_ID]
    assert [web_app_urls(m) for m in sent] == [[WEBAPP_URL]]


async def test_me_in_a_pond_sends_the_button_to_the_private_chat(page: Page) -> None:
    await link_dm(page)
    before = len(page.h.session.requests_of(SendMessage))
    await page.h.member(page.group, page.member).send("/me")
    await page.h.settle()
    sent = page.h.session.requests_of(SendMessage)[before:]
    in_group = [m for m in sent if m.chat_id == page.group.id]
    in_dm = [m for m in sent if m.chat_id == MEMBER_ID]
    assert [web_app_urls(m) for m in in_dm] == [[f"{WEBAPP_URL}?chat={page.group.id}"]]
    assert len(in_group) == 1 and web_app_urls(in_group[0]) == []
    assert "私信" in in_group[0].text and "小鱼" in in_group[0].text


async def test_me_in_a_pond_without_a_linked_private_chat_says_start_first(page: Page) -> None:
    await page.h.member(page.group, page.member).send("/me")
    await page.h.settle()
    sent = page.h.session.requests_of(SendMessage)
    assert not [m for m in sent if m.chat_id == MEMBER_ID]
    assert "/start" in page.h.replies(page.group.id)[-1]


async def test_me_without_a_page_configured_says_so(page: Page) -> None:
    page.h.dp["webapp_url"] = None
    await page.h.member(private_chat(page.member), page.member).send("/me")
    await page.h.settle()
    assert "会员页" in page.h.replies(MEMBER_ID)[-1]
    assert not any(web_app_urls(m) for m in page.h.session.requests_of(SendMessage))
