"""Referral credit (F9) through the real Dispatcher: the newcomer's check-in must be made
after they joined, by the messages' own dates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiogram.types import ChatInviteLink, ChatMemberLeft, ChatMemberMember, ChatMemberUpdated, User
from sqlalchemy import func
from sqlmodel import col, select

from scheduler.core import Scheduler
from storage import invites
from storage.db import Database
from storage.models import Member, Referral
from tests.dispatcher.conftest import GROUP_ID, OPERATOR_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person
from tests.rig.fake_session import BOT_ID, BOT_USERNAME, admin

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
BOT = User(id=BOT_ID, is_bot=True, first_name="PondBot", username=BOT_USERNAME)
POND_B = -1009000000005


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def shop(bot_db: Database) -> AsyncIterator[tuple[Harness, Clock]]:
    clock = Clock()
    async with running(bot_db, Scheduler(bot_db, clock=clock)) as h:
        h.dp["clock"] = clock
        for chat_id in (GROUP_ID, POND_B):  # both groups are ponds of the shop
            h.session.admins.setdefault(chat_id, []).append(admin(person(OPERATOR_ID, "Op")))
        yield h, clock


async def typed(client: GroupClient, text: str, when: datetime) -> None:
    msg = client.message(text).model_copy(update={"date": when})
    await client.h.feed_event(message=msg)


async def join(h: Harness, user: User, link: str, when: datetime) -> None:
    await h.feed_event(chat_member=ChatMemberUpdated(
        chat=group_chat(GROUP_ID), from_user=user, date=when,
        old_chat_member=ChatMemberLeft(user=user), new_chat_member=ChatMemberMember(user=user),
        invite_link=ChatInviteLink(invite_link=link, creator=BOT, creates_join_request=False,
                                   is_primary=False, is_revoked=False),
    ))


async def credit(h: Harness, clock: Clock) -> None:
    """What the recurring credit task does."""
    async with h.db.transaction() as s:  # type: ignore[attr-defined]
        await invites.credit_due(s, clock())


async def credited(h: Harness) -> list[int]:
    """The newcomers whose referrer was credited."""
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        rows = await s.execute(
            select(col(Referral.newcomer_id)).where(col(Referral.credited_at).is_not(None))
            .order_by(col(Referral.newcomer_id))
        )
        return [int(r) for r in rows.scalars()]


async def balance(h: Harness, user_id: int) -> int:
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        row = await s.get(Member, user_id)
    return 0 if row is None else row.balance


async def test_referral_needs_a_checkin_made_after_the_join(
    shop: tuple[Harness, Clock],
) -> None:
    h, clock = shop
    pond_a, pond_b = group_chat(GROUP_ID), group_chat(POND_B, "Pond B")
    alice = h.member(pond_a, person(1, "Alice", "alice"))
    await alice.send("/invite")
    await h.settle()
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        link = await invites.get_link(s, GROUP_ID, 1)
    assert link is not None

    # Nina, a customer of pond B, checked in there at 09:00, then joined pond A at 10:00.
    nina = person(60, "Nina")
    await typed(h.member(pond_b, nina), "签到", T0 - timedelta(hours=1))
    await join(h, nina, link, T0)
    # Olga typed 签到 in pond B at 10:00:00 and joined pond A at 10:01; the bot was down
    # and got both at 10:05, the join first.
    olga = person(61, "Olga")
    clock.now = T0 + timedelta(minutes=5)
    await join(h, olga, link, T0 + timedelta(minutes=1))
    await typed(h.member(pond_b, olga), "签到", T0)
    # Pia joined at 10:00 and typed 签到 at 10:00:30; both delivered at 10:05 as well.
    pia = person(62, "Pia")
    await join(h, pia, link, T0)
    await typed(h.member(pond_a, pia), "签到", T0 + timedelta(seconds=30))
    await h.settle()
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        assert (await s.scalar(select(func.count()).select_from(Referral))) == 3

    await credit(h, clock)
    assert await credited(h) == [62]  # Pia's check-in only
    assert await balance(h, 1) == 20

    # The next day Nina and Olga check in (in either pond): now their referrals pay.
    clock.now = T0 + timedelta(days=1)
    await typed(h.member(pond_a, nina), "签到", clock.now)
    await typed(h.member(pond_b, olga), "签到", clock.now)
    await h.settle()
    await credit(h, clock)
    await credit(h, clock)
    assert await credited(h) == [60, 61, 62]
    assert await balance(h, 1) == 60
