"""The check-in board keeper in virtual time: paced edits, one post a day, fresh content."""

from __future__ import annotations

import datetime as dt
import itertools

from aiogram.methods import EditMessageText, SendMessage

from bot.checkin_board import BoardKeeper
from bot.i18n import make_i18n
from bot.middlewares import PondInfo
from bot.outbox import FakeClock, Limits, Outbox
from storage import batch, checkin, repo
from storage.db import Database
from tests.rig.fake_session import FakeSession, make_bot

POND = PondInfo(-1001, "zh", "Asia/Shanghai", "active")
DAY = dt.date(2025, 3, 1)


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
