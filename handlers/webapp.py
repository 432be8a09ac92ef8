"""The members' page (F15): `/me` (its JSON API under `/app/api/` is `handlers.webapp_api`,
loaded only where the page is served).

`/me` in the private chat answers with a `web_app` button; in a pond — where Telegram
allows no `web_app` button — the button goes to the member's private chat (through the
outbox, like every message) and the pond gets one short line; a member whose private
chat is not linked is told to `/start` it first. The button opens the page on the pond
where `/me` was typed (`?chat=`).
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from aiogram import Router
from aiogram.filters import Command
from aiogram.methods import SendMessage
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message, WebAppInfo

from services.messaging import reply
from services.middlewares import PondInfo
from services.outbox import Outbox
from services.texts import webapp as texts
from storage import member_page as page_store
from storage import repo
from storage.db import Database


def setup() -> Router:
    router = Router(name="webapp")
    router.message.register(open_page, Command("me"))
    return router


def page_url(base: str, chat_id: int | None) -> str:
    """The page's address, on pond `chat_id` when given."""
    if chat_id is None:
        return base
    parts = urlsplit(base)
    query = "&".join(q for q in (parts.query, urlencode({"chat": chat_id})) if q)
    return urlunsplit(parts._replace(query=query))


def page_button(url: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=texts.button(), web_app=WebAppInfo(url=url))]]
    )


async def open_page(
    message: Message,
    db: Database,
    outbox: Outbox,
    person: repo.UserInfo | None,
    pond: PondInfo | None = None,
    webapp_url: str | None = None,
) -> None:
    in_dm = message.chat.type == "private"
    if person is None or (not in_dm and pond is None):
        return  # a bot, an anonymous admin, or a group that is not a pond
    if not webapp_url:
        reply(outbox, message, texts.not_set_up())
        return
    url = page_url(webapp_url, None if in_dm else message.chat.id)
    if in_dm:
        async with db.transaction() as session:  # writing here proves the chat is open
            await repo.upsert_member(session, person)
            await repo.link_dm(session, person.id)
        outbox.reactivate(person.id)
        reply(outbox, message, texts.opened(), markup=page_button(url))
        return
    async with db.transaction(readonly=True) as session:
        linked = await page_store.dm_linked(session, person.id)
    if not linked or outbox.is_forbidden(person.id):
        reply(outbox, message, texts.start_first(person.display_name))
        return
    outbox.send(SendMessage(chat_id=person.id, text=texts.opened(), reply_markup=page_button(url)))
    reply(outbox, message, texts.sent_to_dm(person.display_name))
