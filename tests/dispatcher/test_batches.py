"""Long-polling batches: who may run concurrently, and what is durable before a batch is
acknowledged (bot.polling.handle_batch, the tracking middleware's written-behind records)."""

from __future__ import annotations

import asyncio

import pytest
from aiogram.types import CallbackQuery, Chat, Message, Update, User
from sqlalchemy import func, select

from bot.polling import handle_batch, plan
from storage.batch import SeenOp
from storage.models import Member, Membership
from tests.dispatcher.conftest import OPERATOR_ID
from tests.rig.client import Harness, person
from tests.rig.fake_session import BOT_ID


def _updates(h: Harness, group: Chat, items: list[tuple[int, str]]) -> list[Update]:
    out = []
    for uid, text in items:
        msg = h.member(group, person(uid, f"U{uid}", f"user{uid}")).message(text)
        out.append(Update(update_id=h.next_update_id(), message=msg))
    return out


def _ids(steps: list[list[list[Update]]]) -> list[list[list[int]]]:
    return [[[u.message.from_user.id for u in lane] for lane in step]  # type: ignore[union-attr]
            for step in steps]


def test_plan_members_concurrent_commands_in_place(harness: Harness, group: Chat) -> None:
    updates = _updates(harness, group, [
        (1, "hi"), (2, "hello"), (1, "again"), (3, "/checkin"),
        (OPERATOR_ID, "/give @user1 5"), (2, "after"), (4, "签到"),
    ])
    other = harness.member(Chat(id=-100999, type="supergroup", title="Other"), person(5, "E"))
    updates.append(Update(update_id=harness.next_update_id(), message=other.message("x")))
    press = CallbackQuery(id="q1", from_user=person(6, "F"), chat_instance="c",
                          message=updates[0].message, data="x")
    updates.append(Update(update_id=harness.next_update_id(), callback_query=press))

    round_post = Message(message_id=1, date=harness.now, chat=group,
                         from_user=User(id=BOT_ID, is_bot=True, first_name="Bot"), text="?")
    for uid in (7, 8):
        guess = harness.member(group, person(uid, "G")).message("88", reply_to=round_post)
        updates.append(Update(update_id=harness.next_update_id(), message=guess))

    chats = plan(updates)
    assert len(chats) == 2
    first = chats[0]
    # 1's two messages in order in one lane; /checkin is personal; /give is a step of
    # its own; after it, 2, 4 and the button press (6) run side by side.
    assert _ids(first[:2]) == [[[1, 1], [2], [3]], [[OPERATOR_ID]]]
    assert [[u.update_id for u in lane] for lane in first[2]] == [
        [updates[5].update_id], [updates[6].update_id], [updates[8].update_id]
    ]
    # Answers to the bot (guesses) keep their order: each is a step of its own.
    assert _ids(first[3:]) == [[[7]], [[8]]]
    assert _ids(chats[1]) == [[[5]]]


async def test_command_sees_a_member_first_seen_earlier_in_the_batch(
    harness: Harness, group: Chat
) -> None:
    # The operator is known already, so nothing makes their command wait for a write.
    await handle_batch(harness.dp, harness.bot, _updates(harness, group, [(OPERATOR_ID, "hi")]))
    batch = _updates(harness, group, [(11, "大家好"), (OPERATOR_ID, "/give @user11 7 welcome")])
    await handle_batch(harness.dp, harness.bot, batch)
    await harness.settle()
    assert any("+7" in t for t in harness.replies(group.id)), harness.replies(group.id)
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        assert await s.scalar(select(Member.balance).where(Member.user_id == 11)) == 7


async def test_batch_is_durable_when_handled(harness: Harness, group: Chat) -> None:
    batch = _updates(harness, group, [(100 + i, "早") for i in range(60)])
    await handle_batch(harness.dp, harness.bot, batch)
    # No waiting for the writer here: handle_batch returned, so the records are committed.
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        seats = await s.scalar(
            select(func.count()).select_from(Membership).where(Membership.chat_id == group.id)
        )
    assert seats == 60


async def test_failed_member_record_is_retried_by_the_next_update(
    harness: Harness, group: Chat, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_run = SeenOp.run
    failures = 0

    async def failing(self: SeenOp, session: object, requests: object) -> object:
        nonlocal failures
        failures += 1
        raise RuntimeError("disk full")

    monkeypatch.setattr(SeenOp, "run", failing)
    dora = harness.member(group, person(21, "Dora", "dora"))
    await dora.send("hello")
    assert failures >= 1 and "recording member 21 failed" in caplog.text
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        assert await s.get(Member, 21) is None

    monkeypatch.setattr(SeenOp, "run", real_run)
    await dora.send("hello again")
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        assert await s.get(Member, 21) is not None


async def test_flushed_waits_only_for_what_was_queued(harness: Harness) -> None:
    writer = harness.dp["writer"]
    gate = asyncio.Event()
    order: list[str] = []

    class Slow:
        order = 5

        async def run(self, session: object, requests: list[str]) -> list[None]:
            order.extend(requests)
            if "late" not in requests:
                await gate.wait()
            return [None] * len(requests)

    op = Slow()
    early = writer.enqueue(op, "early")
    flushed = asyncio.ensure_future(writer.flushed())
    await asyncio.sleep(0.05)
    assert not flushed.done()
    late = writer.enqueue(op, "late")
    gate.set()
    await flushed
    assert early.done()
    await late
    assert order == ["early", "late"]


class _Echo:
    order = 5

    async def run(self, session: object, requests: list[str]) -> list[str]:
        return list(requests)


async def test_then_runs_as_the_write_settles_before_anything_else_sees_it(
    harness: Harness,
) -> None:
    """What a caller caches about a write is updated as it commits: a done-callback would
    run a loop turn later, after a `flushed` that found nothing left to wait for had
    already returned (and an update handled then wrote the same member again)."""
    writer = harness.dp["writer"]
    events: list[object] = []
    settled = asyncio.Event()

    def then(error: BaseException | None) -> None:
        events.append(("then", error))
        settled.set()

    first = writer.enqueue(_Echo(), "a", then=then)
    first.add_done_callback(lambda _: events.append("callback"))
    await settled.wait()
    assert first.done() and events == [("then", None)]  # its callbacks have not run yet
    await writer.flushed()  # nothing queued: returns without a turn of the loop
    assert events == [("then", None)]

    gone = writer.enqueue(_Echo(), "b", then=lambda error: events.append(("then b", error)))
    gone.cancel()  # its caller went away; the write still happens and is still reported
    await writer.idle()
    assert events[-1] == ("then b", None)



async def test_a_new_pond_is_registered_once_by_a_burst(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage import repo

    calls = 0
    real = repo.upsert_pond

    async def counting(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(repo, "upsert_pond", counting)
    fresh = Chat(id=-100555, type="supergroup", title="Busy new pond")
    await handle_batch(harness.dp, harness.bot, _updates(harness, fresh, [
        (300 + i, "签到") for i in range(50)
    ]))
    assert calls == 1
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        seats = await s.scalar(
            select(func.count()).select_from(Membership).where(Membership.chat_id == fresh.id)
        )
    assert seats == 50
