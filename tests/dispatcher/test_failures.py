"""Faults while handling: a database error leaves the update unconfirmed (handled again,
credited once), a poison update is skipped after a few tries, and an operator check that
Telegram cannot answer asks the person to try again.

The real polling loop (`bot.polling.poll`) and the production Dispatcher over a real
SQLite file; the fake Bot API keeps updates until a later `offset` confirms them, as
Telegram does. Database errors are raised by the engine itself, from a statement hook.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiogram import Bot
from aiogram.methods import AnswerCallbackQuery, GetUpdates, SendMessage, TelegramMethod
from aiogram.types import CallbackQuery, Message, Update, User
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, InterfaceError
from sqlmodel import col

from bot.emulator.server import HTML_502
from bot.polling import handle_batch, poll
from services.checkin_board import CheckinButton
from services.i18n import make_i18n
from services.texts import weather as weather_texts
from storage.db import Database
from storage.models import LedgerEntry, LedgerKind
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, running
from tests.rig.client import Harness, group_chat, person
from tests.rig.fake_session import BOT_ID, FakeSession
from tests.rig.outage import Outage

ALICE, BOB, CAROL = 7001, 7002, 7003


def try_again() -> str:
    """The "Telegram is not answering, try again in a minute" reply, in the pond's
    language (Chinese by default)."""
    i18n = make_i18n("zh")
    with i18n.context(), i18n.use_locale("zh"):
        return weather_texts.telegram_not_answering()


class Telegram(FakeSession):
    """The fake Bot API plus Telegram's update queue: `getUpdates` returns what is queued
    from `offset` on and forgets what comes before it (a confirmation). `html502(m)`:
    the next request to API method `m` gets an HTML "502 Bad Gateway" page."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[Update] = []
        self.offsets: list[int | None] = []
        self.pages: list[str] = []
        self.idle = asyncio.Event()

    def deliver(self, *updates: Update) -> None:
        self.queue.extend(updates)
        self.idle.clear()

    def html502(self, method: str, times: int = 1) -> None:
        self.pages += [method] * times

    async def make_request(
        self, bot: Bot, method: TelegramMethod[Any], timeout: int | None = None  # noqa: ASYNC109
    ) -> Any:
        if isinstance(method, GetUpdates):
            self.offsets.append(method.offset)
            if method.offset is not None:
                self.queue = [u for u in self.queue if u.update_id >= method.offset]
            if not self.queue:
                self.idle.set()
                await asyncio.sleep(0.01)  # a long poll with nothing new
                return []
            return list(self.queue[: method.limit or 100])
        return await super().make_request(bot, method, timeout)

    def _respond(self, bot: Bot, method: TelegramMethod[Any]) -> tuple[str, int]:
        if method.__api_method__ in self.pages:
            self.pages.remove(method.__api_method__)
            return HTML_502, 502
        return super()._respond(bot, method)


@asynccontextmanager
async def polling(db: Database) -> AsyncIterator[tuple[Harness, Telegram]]:
    telegram = Telegram()
    async with running(db, session=telegram) as h:
        stop = asyncio.Event()
        task = asyncio.create_task(
            poll(h.dp, h.bot, allowed_updates=["message"], stop=stop, poll_timeout=1,
                 backoff=0.01, refetch_backoff=0.01)
        )
        try:
            yield h, telegram
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def confirmed(telegram: Telegram, within: float = 15.0) -> None:
    """Wait until Telegram holds no unconfirmed update."""
    async def drained() -> None:
        while True:
            await telegram.idle.wait()
            if not telegram.queue:
                return
            telegram.idle.clear()

    await asyncio.wait_for(drained(), within)


def said(h: Harness, h_text: str, chat_id: int = GROUP_ID) -> list[SendMessage]:
    return [
        m for m in h.session.delivered_of(SendMessage)
        if m.chat_id == chat_id and h_text in m.text
    ]


def replies_to(h: Harness, message: Message) -> list[SendMessage]:
    return [
        m for m in h.session.delivered_of(SendMessage)
        if m.reply_parameters is not None
        and m.reply_parameters.message_id == message.message_id
        and m.chat_id == message.chat.id
    ]


async def checkins(db: Database, user_id: int) -> int:
    async with db.transaction(readonly=True) as s:
        return int((await s.execute(
            select(func.count()).select_from(LedgerEntry).where(
                col(LedgerEntry.user_id) == user_id, col(LedgerEntry.kind) == LedgerKind.checkin
            )
        )).scalar_one())


async def meet(h: Harness, telegram: Telegram, *users: int) -> dict[int, Any]:
    """Members speak once first (their records are written), so the test batch holds
    only the writes the test is about."""
    chat = group_chat(GROUP_ID, "Pond")
    clients = {u: h.member(chat, person(u, f"U{u}")) for u in users}
    telegram.deliver(*(
        Update(update_id=h.next_update_id(), message=c.message("大家好"))
        for c in clients.values()
    ))
    await confirmed(telegram)
    await h.dp["writer"].idle()
    return clients


async def test_a_database_error_leaves_the_update_to_be_handled_again(
    bot_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async with polling(bot_db) as (h, telegram):
        c = await meet(h, telegram, ALICE, BOB, CAROL)
        with Outage(bot_db).installed() as outage:
            # Twice: when her check-in shares a write with Carol's, the writer itself
            # retries each alone once before it gives up on hers.
            outage.fail(ALICE, times=2)
            checkin = c[ALICE].message("/checkin")
            after = c[ALICE].message("/points")  # in Alice's lane: must not overtake
            bob_help = c[BOB].message("/help")
            carol = c[CAROL].message("/checkin")
            first = h.next_update_id()
            telegram.deliver(
                Update(update_id=first, message=checkin),
                Update(update_id=h.next_update_id(), message=bob_help),
                Update(update_id=h.next_update_id(), message=after),
                Update(update_id=h.next_update_id(), message=carol),
            )
            await confirmed(telegram)
            await h.settle()
        assert outage.raised == 2
    # Handled again and credited once; nobody else paid or answered twice.
    assert await checkins(bot_db, ALICE) == 1
    assert await checkins(bot_db, CAROL) == 1
    assert len(replies_to(h, bob_help)) == 1
    assert len(replies_to(h, after)) == 1
    # The batch was confirmed up to the failed update, then fetched again from it.
    assert first in telegram.offsets
    warnings = [r for r in caplog.records if r.name == "services.dedup"]
    assert 1 <= len(warnings) <= 2 and {r.levelno for r in warnings} == {logging.WARNING}
    assert all(f"update {first} hit a database error" in r.getMessage() for r in warnings)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_poison_update_is_skipped_after_a_few_tries_with_one_error_line(
    bot_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async with polling(bot_db) as (h, telegram):
        c = await meet(h, telegram, ALICE, BOB)
        with Outage(bot_db).installed() as outage:
            outage.fail(ALICE, times=1_000)
            poison = h.next_update_id()
            bob_help = c[BOB].message("/help")
            telegram.deliver(
                Update(update_id=poison, message=c[ALICE].message("/checkin")),
                Update(update_id=h.next_update_id(), message=bob_help),
            )
            await confirmed(telegram)
            await h.settle()
            tries = outage.raised
        # The pond goes on: a later check-in of Alice's is credited.
        telegram.deliver(Update(update_id=h.next_update_id(), message=c[ALICE].message("签到")))
        await confirmed(telegram)
    assert tries == 5  # bot.dedup.MAX_ATTEMPTS
    assert await checkins(bot_db, ALICE) == 1
    assert len(replies_to(h, bob_help)) == 1  # answered once, however often refetched
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert f"update {poison}" in errors[0].getMessage() and "skipped" in errors[0].getMessage()
    assert "Traceback" not in errors[0].getMessage()


async def test_other_exceptions_are_logged_and_skipped_as_before(
    bot_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async with polling(bot_db) as (h, telegram):
        c = await meet(h, telegram, ALICE)
        with Outage(bot_db).installed() as outage:
            outage.error = lambda sql: IntegrityError(sql, None, Exception("a bug, not weather"))
            outage.fail(ALICE, times=1)
            bad = h.next_update_id()
            telegram.deliver(Update(update_id=bad, message=c[ALICE].message("/checkin")))
            await confirmed(telegram)
        assert outage.raised == 1  # not handled again
    assert await checkins(bot_db, ALICE) == 0
    assert bad + 1 in telegram.offsets  # confirmed with its batch
    assert any(f"update {bad} failed" in r.getMessage() for r in caplog.records)


async def test_handle_batch_reports_what_is_left_in_order(bot_db: Database) -> None:
    """Without the loop: the failed update and what must not overtake it are left; the
    chat's later steps too; other chats go on."""
    async with running(bot_db) as h:
        chat = group_chat(GROUP_ID, "Pond")
        alice, bob = h.member(chat, person(ALICE, "A")), h.member(chat, person(BOB, "B"))
        await alice.send("hi")
        await bob.send("hi")
        with Outage(bot_db).installed() as outage:
            outage.fail(ALICE, times=1)
            ids = [h.next_update_id() for _ in range(4)]
            batch = [
                Update(update_id=ids[0], message=alice.message("/checkin")),
                Update(update_id=ids[1], message=bob.message("/points")),
                Update(update_id=ids[2], message=alice.message("/points")),
                Update(update_id=ids[3], message=bob.message("/give @x 1")),  # a step
            ]
            left = await handle_batch(h.dp, h.bot, batch)
        assert left == {ids[0], ids[2], ids[3]}
        again = await handle_batch(h.dp, h.bot, batch)  # fetched again
        assert again == set()
        await h.settle()
    assert await checkins(bot_db, ALICE) == 1
    assert len(replies_to(h, batch[1].message)) == 1  # type: ignore[arg-type]


async def test_an_operator_check_telegram_cannot_answer_asks_to_try_again(
    bot_db: Database,
) -> None:
    async with polling(bot_db) as (h, telegram):
        c = await meet(h, telegram, ALICE)
        admin = h.member(group_chat(GROUP_ID, "Pond"), person(ADMIN_ID, "Admin", "shop_admin"))
        h.dp["admins"].invalidate(GROUP_ID)  # no list known
        telegram.html502("getChatAdministrators")
        give = admin.message(f"/give {ALICE} 10")
        telegram.deliver(Update(update_id=h.next_update_id(), message=give))
        await confirmed(telegram)
        await h.settle()
        [answer] = replies_to(h, give)
        assert answer.text == try_again()
        # Telegram is back: the same command works, paid once.
        again = admin.message(f"/give {ALICE} 10")
        telegram.deliver(Update(update_id=h.next_update_id(), message=again))
        await confirmed(telegram)
        await h.settle()
        [done] = replies_to(h, again)
        assert done.text != try_again()
        # A list known before is kept while Telegram does not answer.
        h.dp["admins"].put(GROUP_ID, frozenset({ADMIN_ID}))
        h.dp["admins"]._entries[GROUP_ID] = (0.0, frozenset({ADMIN_ID}))  # due for refresh
        telegram.html502("getChatAdministrators")
        third = admin.message(f"/give {ALICE} 5")
        telegram.deliver(Update(update_id=h.next_update_id(), message=third))
        await confirmed(telegram)
        await h.settle()
        [kept] = replies_to(h, third)
        assert kept.text != try_again()
        assert c  # Alice was met
    async with bot_db.transaction(readonly=True) as s:
        total = (await s.execute(
            select(func.coalesce(func.sum(LedgerEntry.delta), 0)).where(
                col(LedgerEntry.user_id) == ALICE, col(LedgerEntry.kind) != LedgerKind.checkin
            )
        )).scalar_one()
    assert total == 15


async def test_a_button_press_the_database_failed_is_answered_on_the_retry_once(
    bot_db: Database,
) -> None:
    async with polling(bot_db) as (h, telegram):
        await meet(h, telegram, ALICE)
        chat = group_chat(GROUP_ID, "Pond")
        board = Message(
            message_id=h.next_message_id(GROUP_ID), date=h.now, chat=chat, text="签到榜",
            from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"),
        )
        press = CallbackQuery(
            id="press-1", from_user=person(ALICE, f"U{ALICE}"), chat_instance="1",
            message=board, data=CheckinButton(chat_id=GROUP_ID).pack(),
        )
        with Outage(bot_db).installed() as outage:
            outage.fail(ALICE, times=1)
            telegram.deliver(Update(update_id=h.next_update_id(), callback_query=press))
            await confirmed(telegram)
            await h.settle()
        assert outage.raised == 1
    answers = [
        a for a in h.session.requests_of(AnswerCallbackQuery) if a.callback_query_id == "press-1"
    ]
    assert len(answers) == 1  # not on the failed try, once on the retry
    assert await checkins(bot_db, ALICE) == 1


async def test_an_invite_link_telegram_cannot_make_asks_to_try_again(bot_db: Database) -> None:
    async with polling(bot_db) as (h, telegram):
        c = await meet(h, telegram, ALICE)
        telegram.html502("createChatInviteLink")
        first = c[ALICE].message("/invite")
        telegram.deliver(Update(update_id=h.next_update_id(), message=first))
        await confirmed(telegram)
        await h.settle()
        [answer] = replies_to(h, first)
        assert answer.text == try_again()
        second = c[ALICE].message("/invite")  # a minute later: Telegram is back
        telegram.deliver(Update(update_id=h.next_update_id(), message=second))
        await confirmed(telegram)
        await h.settle()
        [link] = replies_to(h, second)
        assert "https://t.me/" in link.text


async def test_a_long_outage_is_not_taken_for_a_poison_update(
    bot_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection itself is gone, again and again (a failover): the update waits for
    the database however many tries it takes, and is credited once it is back."""
    async with polling(bot_db) as (h, telegram):
        c = await meet(h, telegram, ALICE)
        with Outage(bot_db).installed() as outage:
            outage.error = lambda sql: InterfaceError(sql, None, Exception("connection is closed"))
            outage.fail(ALICE, times=8)  # more than bot.dedup.MAX_ATTEMPTS
            telegram.deliver(Update(update_id=h.next_update_id(),
                                    message=c[ALICE].message("/checkin")))
            await confirmed(telegram, within=30)
        assert outage.raised == 8
    assert await checkins(bot_db, ALICE) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all("the database is away" in r.getMessage()
               for r in caplog.records if r.name == "services.dedup")
