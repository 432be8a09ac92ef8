"""Surveys (问卷, F10) through the real Dispatcher on a fake clock: answers go to the
members' profiles (the latest wins), the points are paid once per member and survey
however often they change their answer or the press arrives again, the close posts the
counts like a vote's, and `pondbot export profiles` writes what the profiles hold."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import CallbackQuery, Message, Update
from sqlalchemy import func, select

from bot.app import build_dispatcher
from handlers.survey import SurveyButton
from scheduler.core import Scheduler
from services.outbox import Outbox
from storage import surveys as store
from storage.models import LedgerEntry, LedgerKind, MemberProfile, Survey, SurveyAnswer
from tests.dispatcher.conftest import FAST, GROUP_ID
from tests.dispatcher.test_games import T0, Clock, Pond, pond  # noqa: F401 (the fixture)


async def survey_post(p: Pond) -> tuple[int, Message]:
    async with p.db.transaction(readonly=True) as s:
        row = (await s.execute(select(Survey).order_by(Survey.id.desc()))).scalars().first()  # type: ignore[union-attr]
    assert row is not None and row.id is not None and row.message_id is not None
    return row.id, p.post(row.message_id, row.question)


async def profiles(p: Pond) -> dict[tuple[int, str], str]:
    async with p.db.transaction(readonly=True) as s:
        rows = (await s.execute(select(MemberProfile.user_id, MemberProfile.key,
                                       MemberProfile.value))).all()
    return {(u, k): v for u, k, v in rows}


async def test_fifty_answers_with_ten_changes_keep_the_latest_and_pay_once(pond: Pond) -> None:  # noqa: F811
    await pond.op.send("/survey 1h skin Your skin type? | Dry | Oily | Combination <b>")
    await pond.h.settle()
    post = pond.session.requests_of(SendMessage)[-1]
    assert post.reply_markup is not None and "Combination &lt;b&gt;" in post.text
    survey_id, msg = await survey_post(pond)
    members = [pond.member(100 + i, f"M{i}") for i in range(50)]
    for i, m in enumerate(members):
        await m.click(msg, SurveyButton(survey_id=survey_id, option=i % 3).pack())
    latest = {100 + i: i % 3 for i in range(50)}
    for i, m in enumerate(members[:10]):  # ten change their mind
        await m.click(msg, SurveyButton(survey_id=survey_id, option=(i + 1) % 3).pack())
        latest[100 + i] = (i + 1) % 3
    # A press delivered twice (the same callback query in a new update) and a press on
    # the answer already given: no payment, no change.
    query = CallbackQuery(
        id="again", from_user=members[20].user, chat_instance="c", message=msg,
        data=SurveyButton(survey_id=survey_id, option=latest[120]).pack(),
    )
    for _ in range(2):
        await pond.h.feed(Update(update_id=pond.h.next_update_id(), callback_query=query))
    await pond.h.settle()

    options = ["Dry", "Oily", "Combination <b>"]
    assert await profiles(pond) == {(u, "skin"): options[o] for u, o in latest.items()}
    async with pond.db.transaction(readonly=True) as s:
        answers = (await s.execute(select(SurveyAnswer.user_id, SurveyAnswer.option))).all()
        paid = (await s.execute(
            select(LedgerEntry.user_id, func.count(), func.sum(LedgerEntry.delta))
            .where(LedgerEntry.kind == str(LedgerKind.survey))  # type: ignore[arg-type]
            .group_by(LedgerEntry.user_id)
        )).all()
    assert dict(answers) == latest
    assert sorted(paid) == [(u, 1, 2) for u in range(100, 150)]
    for u in range(100, 150):
        assert await pond.balance(u) == 2
    toasts = [a.text or "" for a in pond.session.requests_of(AnswerCallbackQuery)]
    # Every press answered, once: the query delivered twice is answered the first time only.
    assert len(toasts) == 61
    assert sum(t.startswith("+2 points") for t in toasts) == 50
    assert sum("changed" in t for t in toasts) == 10
    # The post's live counts: board edits, coalesced (far fewer than the presses).
    edits = [e for e in pond.session.requests_of(EditMessageText) if e.message_id == msg.message_id]
    assert edits and len(edits) < 61
    counts = [sum(1 for o in latest.values() if o == k) for k in range(3)]
    assert f"<b>{counts[0]}</b>" in edits[-1].text

    await pond.later(3600)
    assert await pond.scalar(select(Survey.state)) == "closed"
    result = pond.replies()[-1]
    assert f"Dry — <b>{counts[0]}</b>" in result and "50 answered" in result
    assert "Combination &lt;b&gt;" in result
    frozen = pond.session.requests_of(EditMessageText)[-1]
    assert frozen.reply_markup is None
    await members[0].click(msg, SurveyButton(survey_id=survey_id, option=0).pack())
    await pond.h.settle()
    assert "closed" in (pond.session.requests_of(AnswerCallbackQuery)[-1].text or "")
    assert await profiles(pond) == {(u, "skin"): options[o] for u, o in latest.items()}
    assert await pond.invariant_ok()

    # A later survey with the same key: its answer is the profile's latest.
    await pond.op.send("/survey 1h skin Again? | Sensitive | Normal")
    await pond.h.settle()
    second, msg2 = await survey_post(pond)
    await members[0].click(msg2, SurveyButton(survey_id=second, option=0).pack())
    await pond.h.settle()
    assert (await profiles(pond))[(100, "skin")] == "Sensitive"
    assert await pond.balance(100) == 4

    out = io.StringIO()
    assert await store.export_profiles(pond.db, out) == 50
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["user_id", "key", "value", "answered_at"]
    assert rows[1][:3] == ["100", "skin", "Sensitive"] and rows[1][3].endswith("+00:00")


async def test_bad_survey_commands_get_short_errors_and_open_nothing(pond: Pond) -> None:  # noqa: F811
    bad = [
        "/survey 1h Only | A | B",  # no key: "Only" is taken as the key, no question
        "/survey 1h sk!n Q | A | B",
        "/survey 1h skin Q | A",
        "/survey never skin Q | A | B",
        "/survey",
        "/survey 1h skin Q | A | a",
    ]
    for text in bad:
        before = len(pond.replies())
        await pond.op.send(text)
        await pond.h.settle()
        assert len(pond.replies()) == before + 1, text
        assert pond.replies()[-1].startswith("⚠️") and len(pond.replies()[-1]) < 400
    assert await pond.scalar(select(func.count()).select_from(Survey)) == 0
    await pond.member(1, "Alice").send("/survey 1h skin Q | A | B")
    await pond.h.settle()
    assert pond.replies()[-1].startswith("⛔")


async def test_forged_survey_buttons_change_nothing(pond: Pond) -> None:  # noqa: F811
    alice = pond.member(1, "Alice")
    await pond.op.send("/survey 1h style Q | A | B")
    await pond.h.settle()
    survey_id, msg = await survey_post(pond)
    await alice.click(pond.post(msg.message_id + 100), SurveyButton(survey_id=survey_id,
                                                                    option=0).pack())
    await alice.click(msg, SurveyButton(survey_id=survey_id, option=7).pack())
    await alice.click(msg, SurveyButton(survey_id=survey_id + 1, option=0).pack())
    await alice.click(msg, "sv:garbage")
    await pond.h.settle()
    assert await pond.scalar(select(func.count()).select_from(SurveyAnswer)) == 0
    assert await profiles(pond) == {}
    assert await pond.balance(1) == 0
    assert len(pond.session.requests_of(AnswerCallbackQuery)) == 4


async def test_a_survey_closes_late_once_after_a_restart(pond: Pond, bot_db: Any) -> None:  # noqa: F811
    await pond.op.send("/survey 1m style Your style? | Classic | Street")
    await pond.h.settle()
    survey_id, msg = await survey_post(pond)
    await pond.member(1, "Alice").click(msg, SurveyButton(survey_id=survey_id, option=1).pack())
    await pond.h.settle()
    # A new process (new scheduler, new dispatcher) comes up an hour after the deadline.
    clock = Clock(T0 + timedelta(hours=1))
    fresh = Scheduler(bot_db, clock=clock)
    outbox = Outbox(pond.h.bot, limits=FAST)
    build_dispatcher(db=bot_db, outbox=outbox, scheduler=fresh)
    await outbox.start()
    try:
        assert await fresh.start()
        await fresh.sweep()
        await fresh.sweep()
    finally:
        await fresh.stop()
    await outbox.stop()
    assert await pond.scalar(select(Survey.state)) == "closed"
    results = [t for t in pond.session.sent_texts(GROUP_ID) if "Survey result" in t]
    assert len(results) == 1 and "Street — <b>1</b>" in results[0]
    assert await pond.scalar(select(Survey.announced_at)) is not None
