"""services/guess.py against the real outbox and a fake Telegram in virtual time: where
the answer to a guess goes (DM, group, or the group after a failed DM), when the pond's
quiet decides, and the round post's count edits coalescing into one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiogram.methods import EditMessageCaption, EditMessageText, SendMessage, SendPhoto
from aiogram.types import Message

from games.guess import Mode, Verdict
from services.clock import FakeClock
from services.guess import answer_guess, board_edit, refresh_post, round_method, tell
from services.i18n import make_i18n
from services.outbox import Limits, Outbox
from storage.guess import GuessOutcome, RoundView
from storage.repo import UserInfo
from tests.rig.client import group_chat, person
from tests.rig.fake_session import FakeSession, make_bot

GROUP = -1001234567890
ALICE = 101
T0 = datetime(2026, 10, 20, 12, tzinfo=UTC)

Rig = tuple[Outbox, FakeSession, FakeClock]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = FakeClock()
    session = FakeSession(clock=clock)
    outbox = Outbox(make_bot(session), limits=Limits(), clock=clock)
    await outbox.start()
    i18n = make_i18n("en")
    with i18n.context(), i18n.use_locale("en"):
        try:
            yield outbox, session, clock
        finally:
            await outbox.stop(drain_timeout=0)


def guess_message(text: str = "199") -> Message:
    return Message(
        message_id=77,
        date=T0,
        chat=group_chat(GROUP),
        from_user=person(ALICE, "Alice"),
        text=text,
    )


def view(*, photo: str | None = None, message_id: int | None = 5, guessers: int = 1) -> RoundView:
    return RoundView(
        1, GROUP, "Tea", photo, 10, Mode.closest, 1, 1, guessers, message_id, T0, "open"
    )


def alice(first: str = "Alice", last: str = "", username: str | None = None) -> UserInfo:
    return UserInfo(ALICE, first, last, username)


def group_texts(session: FakeSession) -> list[str]:
    return [m.text for m in session.requests_of(SendMessage) if m.chat_id == GROUP]


def dm_texts(session: FakeSession) -> list[str]:
    return [m.text for m in session.requests_of(SendMessage) if m.chat_id == ALICE]


async def settle(clock: FakeClock) -> None:
    await clock.sleep(30)


# -- tell: DM or group -------------------------------------------------------------------


async def test_no_dm_replies_in_the_group_only_when_allowed(rig: Rig) -> None:
    outbox, session, clock = rig
    tell(outbox, guess_message(), ALICE, "Alice", "hello", dm=False, group=True)
    tell(outbox, guess_message(), ALICE, "Alice", "not here", dm=False, group=False)
    await settle(clock)
    assert group_texts(session) == ["Alice: hello"]
    assert dm_texts(session) == []


async def test_a_linked_dm_is_told_privately_and_the_group_stays_quiet(rig: Rig) -> None:
    outbox, session, clock = rig
    tell(outbox, guess_message(), ALICE, "Alice", "higher", dm=True, group=True)
    await settle(clock)
    assert dm_texts(session) == ["higher"]
    assert group_texts(session) == []


async def test_a_blocked_dm_falls_back_to_the_group_when_allowed(rig: Rig) -> None:
    outbox, session, clock = rig
    session.fail_next(
        SendMessage,
        chat_id=ALICE,
        error_code=403,
        description="Forbidden: bot was blocked by the user",
    )
    tell(outbox, guess_message(), ALICE, "Alice", "higher", dm=True, group=True)
    await settle(clock)
    assert group_texts(session) == ["Alice: higher"]
    # Not allowed in the group (a busy pond, not a verdict): the failed DM is all.
    session.fail_next(
        SendMessage,
        chat_id=ALICE,
        error_code=403,
        description="Forbidden: bot was blocked by the user",
    )
    outbox.reactivate(ALICE)
    tell(outbox, guess_message(), ALICE, "Alice", "received", dm=True, group=False)
    await settle(clock)
    assert group_texts(session) == ["Alice: higher"]


# -- answer_guess: what reaches the group ------------------------------------------------


async def test_a_verdict_reaches_the_group_even_when_the_pond_is_busy(rig: Rig) -> None:
    outbox, session, clock = rig
    out = GuessOutcome("judged", view(), verdict=Verdict.too_low, attempts_left=2)
    answer_guess(outbox, guess_message(), alice(), out, quiet=False, timezone="Asia/Shanghai")
    await settle(clock)
    [said] = group_texts(session)
    assert said.startswith("Alice: ")


async def test_an_acknowledgement_reaches_the_group_only_while_quiet(rig: Rig) -> None:
    outbox, session, clock = rig
    out = GuessOutcome("accepted", view(), allowed=1)
    answer_guess(outbox, guess_message(), alice(), out, quiet=False, timezone="Asia/Shanghai")
    await settle(clock)
    assert group_texts(session) == []
    answer_guess(outbox, guess_message(), alice(), out, quiet=True, timezone="Asia/Shanghai")
    await settle(clock)
    assert len(group_texts(session)) == 1


async def test_the_name_falls_back_to_the_username(rig: Rig) -> None:
    outbox, session, clock = rig
    out = GuessOutcome("judged", view(), verdict=Verdict.too_high, attempts_left=1)
    answer_guess(outbox, guess_message(), alice(" ", "", "ali"), out, quiet=True, timezone="UTC")
    await settle(clock)
    [said] = group_texts(session)
    assert said.startswith("@ali: ")


async def test_a_first_guess_edits_the_round_post_once_for_a_burst(rig: Rig) -> None:
    outbox, session, clock = rig
    for n in range(1, 6):
        out = GuessOutcome("accepted", view(guessers=n), allowed=1, first_guess=True)
        answer_guess(outbox, guess_message(), alice(), out, quiet=False, timezone="UTC")
    await settle(clock)
    edits = session.requests_of(EditMessageText)
    assert 1 <= len(edits) < 5  # coalesced, and the last count is the one shown
    assert "5 taking part" in (edits[-1].text or "")
    # A round whose post is not out yet is not edited.
    out = GuessOutcome("accepted", view(message_id=None), allowed=1, first_guess=True)
    answer_guess(outbox, guess_message(), alice(), out, quiet=False, timezone="UTC")
    await settle(clock)
    assert len(session.requests_of(EditMessageText)) == len(edits)


def test_a_round_with_a_photo_is_a_photo_and_its_edits_edit_the_caption() -> None:
    assert isinstance(round_method(view(photo="F"), "x"), SendPhoto)
    assert isinstance(round_method(view(), "x"), SendMessage)
    assert isinstance(board_edit(view(photo="F"), "x"), EditMessageCaption)
    assert isinstance(board_edit(view(), "x"), EditMessageText)


async def test_refresh_post_targets_the_stored_post(rig: Rig) -> None:
    outbox, session, clock = rig
    refresh_post(outbox, view(message_id=9), "UTC")
    await settle(clock)
    [edit] = session.requests_of(EditMessageText)
    assert (edit.chat_id, edit.message_id) == (GROUP, 9)
