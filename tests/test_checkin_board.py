"""The check-in board keeper in virtual time: paced edits, one post a day, fresh content."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram.methods import EditMessageText, SendMessage

from services.checkin_board import POST_WAIT, BoardKeeper
from services.i18n import make_i18n
from services.middlewares import PondInfo
from services.outbox import FakeClock, Limits, Outbox
from storage import batch, checkin, repo
from storage.db import Database
from tests.rig.fake_session import FakeSession, make_bot

POND = PondInfo(-1001, "zh", "Asia/Shanghai", "active")
DAY = dt.date(2025, 3, 1)
OPERATOR = 42


async def test_board_edits_are_paced_and_show_the_latest(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    clock = FakeClock()
    session = FakeSession(clock=clock)
    outbox = Outbox(make_bot(session), limits=Limits(), clock=clock)
    await outbox.start()
    keeper = BoardKeeper(db, outbox, make_i18n("zh"), clock=clock, interval=6.0)
    try:
        async with db.transaction() as s:
            await repo.upsert_pond(s, POND.chat_id, title="P", chat_type="supergroup")
        now = dt.datetime(2025, 3, 1, 1, tzinfo=dt.UTC)
        for i in range(60):  # a check-in every half second for 30 s
            async with db.transaction() as s:
                await batch.SEEN.run(s, [batch.SeenRequest(i + 1, repo.UserInfo(i + 1, f"M{i}"))])
                await checkin.CHECKIN_OP.run(s, [checkin.CheckinRequest(i + 1, POND.chat_id,
                                                                        DAY, now)])
            keeper.touch(POND, DAY)
            await clock.sleep(0.5)
        await keeper.idle()
        await outbox.stop(drain_timeout=120)
    finally:
        await keeper.aclose()
        await db.dispose()
    posts = session.requests_of(SendMessage)
    edits = session.requests_of(EditMessageText)
    assert len(posts) == 1  # the day's board, posted once
    times = [t for r, t in zip(session.requests, session.request_times, strict=True)
             if isinstance(r, EditMessageText | SendMessage)]
    assert all(b - a >= 6.0 - 1e-6 for a, b in itertools.pairwise(times))
    # (Virtual time also runs on while the database works, so compare with what passed.)
    assert len(times) <= (times[-1] - times[0]) / 6.0 + 1
    # How many check-ins one refresh absorbs depends on how much virtual time the database
    # work let pass (the fake clock runs on while the loop waits for SQLite's thread), so
    # the bound above — never more often than every 6 s — is the property; coalescing
    # itself is shown exactly by the outbox's board tests.
    assert len(edits) <= 60
    assert "60" in edits[-1].text and "M59" in edits[-1].text
    session.assert_no_violations()


class Rig:
    """A keeper over a real SQLite file and a fake Bot API in virtual time, counting the
    keeper's database reads of the board."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.db = db
        self.clock = FakeClock()
        self.session = FakeSession(clock=self.clock)
        self.outbox = Outbox(make_bot(self.session), limits=Limits(), clock=self.clock)
        self.keeper = BoardKeeper(db, self.outbox, make_i18n("zh"), clock=self.clock,
                                  interval=6.0)
        self.reads = 0
        view, claim = checkin.board_view, checkin.claim_board

        async def counted_view(*a: Any, **kw: Any) -> Any:
            self.reads += 1
            return await view(*a, **kw)

        async def counted_claim(*a: Any, **kw: Any) -> Any:
            self.reads += 1
            return await claim(*a, **kw)

        monkeypatch.setattr(checkin, "board_view", counted_view)
        monkeypatch.setattr(checkin, "claim_board", counted_claim)

    @property
    def requests(self) -> int:
        return len(self.session.requests_of(SendMessage)) + len(
            self.session.requests_of(EditMessageText))

    async def checkins(self, n: int, day: dt.date = DAY, pond: PondInfo = POND) -> None:
        """`n` check-ins touching the board, one every 2 s."""
        for _ in range(n):
            self.keeper.touch(pond, day)
            await self.clock.sleep(2.0)
        await self.keeper.idle()


@pytest.fixture
async def rig(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    db = Database(sqlite_url)
    r = Rig(db, monkeypatch)
    await r.outbox.start()
    async with db.transaction() as s:
        await repo.upsert_pond(s, POND.chat_id, title="P", chat_type="supergroup")
    try:
        yield r
    finally:
        await r.keeper.aclose()
        await r.outbox.stop(drain_timeout=1)
        await db.dispose()
    r.session.assert_no_violations()


NO_RIGHTS = "Bad Request: not enough rights to send text messages to the chat"


async def test_a_refused_board_is_left_alone_until_a_new_day(rig: Rig) -> None:
    rig.session.fail_next(SendMessage, error_code=400, description=NO_RIGHTS)
    await rig.checkins(1)
    assert rig.requests == 1 and rig.keeper.refused(POND.chat_id)
    reads = rig.reads
    await rig.checkins(60)  # two minutes of check-ins: no read, no request
    assert (rig.requests, rig.reads) == (1, reads)
    await rig.checkins(1, DAY + dt.timedelta(days=1))  # a new day: tried again
    assert len(rig.session.delivered_of(SendMessage)) == 1
    assert not rig.keeper.refused(POND.chat_id)
    await rig.checkins(3, DAY + dt.timedelta(days=1))
    assert rig.session.delivered_of(EditMessageText)  # and kept fresh again


async def test_an_operators_board_or_a_fresh_pond_tries_again(rig: Rig) -> None:
    rig.session.fail_next(SendMessage, error_code=400, description=NO_RIGHTS, times=2)
    await rig.checkins(1)
    rig.keeper.post(POND, DAY, by=OPERATOR)  # /board: tried again (and refused again)
    await rig.keeper.idle()
    assert rig.requests == 2 and rig.keeper.refused(POND.chat_id)
    await rig.checkins(10)
    assert rig.requests == 2
    # The bot was promoted: the tracking middleware reads the pond afresh.
    await rig.checkins(1, pond=dataclasses.replace(POND))
    assert len(rig.session.delivered_of(SendMessage)) == 1


async def test_a_forbidden_pond_waits_until_it_is_reactivated(rig: Rig) -> None:
    rig.session.fail_next(SendMessage, error_code=403,
                          description="Forbidden: bot was kicked from the supergroup chat")
    await rig.checkins(1)
    assert rig.outbox.is_forbidden(POND.chat_id) and rig.keeper.refused(POND.chat_id)
    reads = rig.reads
    await rig.checkins(30)
    await rig.checkins(1, DAY + dt.timedelta(days=1))  # not even a new day: still kicked
    assert (rig.requests, rig.reads) == (1, reads)
    rig.outbox.reactivate(POND.chat_id)  # the bot was added again
    await rig.checkins(1, DAY + dt.timedelta(days=1))
    assert len(rig.session.delivered_of(SendMessage)) == 1


async def test_edits_refused_or_a_deleted_board_that_cannot_be_replaced(rig: Rig) -> None:
    await rig.checkins(1)  # the day's board
    rig.session.fail_next(EditMessageText, error_code=400,
                          description="Bad Request: message can't be edited")
    await rig.checkins(4)
    assert len(rig.session.requests_of(EditMessageText)) == 1
    assert rig.keeper.refused(POND.chat_id)
    before = (rig.requests, rig.reads)
    await rig.checkins(20)
    assert (rig.requests, rig.reads) == before
    # Next day: the board message was deleted and the bot may no longer post.
    tomorrow = DAY + dt.timedelta(days=1)
    await rig.checkins(1, tomorrow)  # tomorrow's board
    rig.session.fail_next(EditMessageText, error_code=400,
                          description="Bad Request: message to edit not found")
    rig.session.fail_next(SendMessage, error_code=400, description=NO_RIGHTS)
    await rig.checkins(4, tomorrow)
    assert rig.keeper.refused(POND.chat_id)
    before = (rig.requests, rig.reads)
    await rig.checkins(20, tomorrow)
    assert (rig.requests, rig.reads) == before


async def test_a_claimed_board_never_posted_is_taken_over(rig: Rig) -> None:
    # A process claimed today's board and died before Telegram answered.
    async with rig.db.transaction() as s:
        await checkin.claim_board(s, POND.chat_id, DAY, posted_by=None,
                                  now=dt.datetime(2025, 3, 1, 1, tzinfo=dt.UTC))
    start = rig.clock.monotonic()
    await rig.checkins(1)
    assert len(rig.session.delivered_of(SendMessage)) == 1
    assert rig.clock.monotonic() - start <= POST_WAIT + 30
    assert rig.reads <= POST_WAIT / 6.0 + 5  # it looked every 6 s meanwhile, then posted
