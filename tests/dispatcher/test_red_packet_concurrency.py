"""1,000 members grab one 100-share packet at the same moment, through the real
Dispatcher, on SQLite and on PostgreSQL: exactly 100 winners, the sum exact, every
callback answered exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import Message, User
from sqlalchemy import func, select

from bot.app import build_dispatcher
from services.outbox import Outbox
from storage import ledger
from storage.db import Database
from storage.models import LedgerEntry, Member, RedPacket, RedPacketShare
from tests.dispatcher.conftest import FAST, GROUP_ID, OPERATOR_ID, serve_groups
from tests.rig.client import Harness, group_chat, person
from tests.rig.fake_session import BOT_ID, FakeSession, make_bot

GRABBERS = 1000
SHARES = 100
TOTAL = 10_000


async def test_a_thousand_concurrent_grabs_of_a_hundred_shares(db: Database) -> None:
    session = FakeSession()
    serve_groups(session)  # the test group is a pond of the shop
    bot = make_bot(session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))
    outbox = Outbox(bot, limits=FAST)
    dp = build_dispatcher(db=db, outbox=outbox, operator_ids=frozenset({OPERATOR_ID}))
    await outbox.start()
    try:
        h = Harness(dp, bot, session, outbox)
        chat = group_chat(GROUP_ID, "Rush hour")
        op = h.member(chat, person(OPERATOR_ID, "Op"))
        await op.send(f"/redpacket {TOTAL} {SHARES}")
        await h.settle()
        async with db.transaction(readonly=True) as s:
            packet = (await s.execute(select(RedPacket))).scalars().one()
        assert packet.message_id is not None
        post = Message(
            message_id=packet.message_id, date=h.now, chat=chat,
            from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"), text="🧧",
        )
        members = [h.member(chat, person(100_000 + i, f"M{i}")) for i in range(GRABBERS)]
        # Several clicks of one member arrive at once too (a double tap).
        clickers = [*members, *members[:20], *members[:20]]
        query_ids = await asyncio.gather(*(m.click(post, f"rp:{packet.id}") for m in clickers))
        await h.settle()
    finally:
        await outbox.stop()
        await bot.session.close()
    session.assert_no_violations()

    answers = Counter(a.callback_query_id for a in session.requests_of(AnswerCallbackQuery))
    assert set(answers) == set(query_ids) and set(answers.values()) == {1}

    async with db.transaction(readonly=True) as s:
        gains = dict(
            (
                await s.execute(
                    select(LedgerEntry.user_id, func.sum(LedgerEntry.delta))  # type: ignore[call-overload]
                    .where(LedgerEntry.kind == "red_packet")
                    .group_by(LedgerEntry.user_id)
                )
            ).all()
        )
        taken = await s.scalar(
            select(func.count()).select_from(RedPacketShare).where(
                RedPacketShare.user_id.is_not(None)  # type: ignore[union-attr]
            )
        )
        state = await s.scalar(select(RedPacket.state))
        balances = await s.scalar(select(func.sum(Member.balance)))
        assert (await ledger.check_invariant(s)).ok
    assert len(gains) == SHARES and taken == SHARES
    assert sum(gains.values()) == TOTAL == balances
    assert all(v >= 1 for v in gains.values())
    assert state == "finished"
    toasts = Counter(a.text for a in session.requests_of(AnswerCallbackQuery))
    assert sum(n for t, n in toasts.items() if t and t.startswith("🎉")) == SHARES
