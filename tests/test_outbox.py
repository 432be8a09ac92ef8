"""The outbox against a fake Telegram in virtual time: budgets, fairness, faults."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramServerError,
)
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageText,
    PinChatMessage,
    SendMessage,
    SendPhoto,
    TelegramMethod,
)
from aiogram.types import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.emulator.server import HTML_502
from services.outbox import FakeClock, Limits, Outbox, OutboxClosedError
from tests.rig.fake_session import TEST_TOKEN, FakeSession, make_bot

GROUP_A, GROUP_B, GROUP_C = -1001, -1002, -1003
SUPERGROUP = -1001234567890
EPS = 1e-6
DEFAULT_LIMITS = Limits()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def __call__(self, *args: Any) -> None:
        self.calls.append(args)


@asynccontextmanager
async def rig(
    *,
    latency: float = 0.0,
    limits: Limits | None = None,
    concurrency: int = 8,
    on_forbidden: Recorder | None = None,
    on_migrated: Recorder | None = None,
) -> AsyncIterator[tuple[Outbox, FakeSession, FakeClock]]:
    clock = FakeClock()
    session = FakeSession(latency=latency, clock=clock)
    outbox = Outbox(
        make_bot(session),
        limits=limits or Limits(),
        clock=clock,
        on_forbidden=on_forbidden,
        on_migrated=on_migrated,
        concurrency=concurrency,
    )
    await outbox.start()
    try:
        yield outbox, session, clock
    finally:
        await outbox.stop(drain_timeout=0)


def msg(chat_id: int, text: str) -> SendMessage:
    return SendMessage(chat_id=chat_id, text=text)


def edit(chat_id: int, text: str, message_id: int = 1) -> EditMessageText:
    return EditMessageText(chat_id=chat_id, message_id=message_id, text=text)


def times_for(session: FakeSession, chat_id: int | None = None) -> list[float]:
    return [
        t
        for t, r in zip(session.request_times, session.requests, strict=True)
        if chat_id is None or getattr(r, "chat_id", None) == chat_id
    ]


def max_in_window(times: Sequence[float], span: float) -> int:
    """The most requests inside any half-open window [t, t + span)."""
    best, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + span - EPS:
            j += 1
        best = max(best, j - i)
    return best


def bucket_respected(times: Sequence[float], rate: float, burst: int) -> bool:
    """A full token bucket allows n requests in [t_i, t_j] only if n <= burst + rate*dt."""
    return all(
        j - i + 1 <= burst + rate * (times[j] - times[i]) + EPS
        for i in range(len(times))
        for j in range(i, len(times))
    )


def assert_budgets(session: FakeSession, limits: Limits = DEFAULT_LIMITS) -> None:
    assert max_in_window(times_for(session), 1.0) <= limits.global_per_second
    for chat_id in {getattr(r, "chat_id", None) for r in session.requests}:
        assert isinstance(chat_id, int)
        times = times_for(session, chat_id)
        assert bucket_respected(times, limits.per_chat_rate, limits.per_chat_burst), chat_id
        if chat_id < 0:
            assert max_in_window(times, 60.0) <= limits.group_per_minute, chat_id


# -- budgets ---------------------------------------------------------------------------


async def test_hundred_messages_to_one_group_arrive_in_order_at_20_per_minute() -> None:
    async with rig() as (outbox, session, clock):
        texts = [f"m{i}" for i in range(100)]
        results = await asyncio.gather(*(outbox.send(msg(GROUP_A, t)) for t in texts))
        assert session.sent_texts(GROUP_A) == texts
        assert [r.message_id for r in results if isinstance(r, Message)] == list(range(1, 101))
        times = times_for(session, GROUP_A)
        assert max_in_window(times, 60.0) == 20
        assert_budgets(session)
        # Four full minutes of waiting plus the burst-limited last block.
        assert 240.0 <= times[-1] - times[0] <= 300.0
        assert clock.now < 300.0
        assert outbox.stats.sent == 100 and outbox.stats.per_chat == {GROUP_A: 100}
        assert outbox.pending() == 0


async def test_three_busy_groups_interleave_fairly() -> None:
    async with rig() as (outbox, session, _):
        futures = [
            outbox.send(msg(chat, f"{chat}:{i}"))
            for chat in (GROUP_A, GROUP_B, GROUP_C)  # A's 40 are all queued before B's
            for i in range(40)
        ]
        await asyncio.gather(*futures)
        for chat in (GROUP_A, GROUP_B, GROUP_C):
            assert session.sent_texts(chat) == [f"{chat}:{i}" for i in range(40)]
        assert_budgets(session)
        counts = dict.fromkeys((GROUP_A, GROUP_B, GROUP_C), 0)
        for request in session.requests:
            counts[getattr(request, "chat_id")] += 1  # noqa: B009
            assert max(counts.values()) - min(counts.values()) <= 1


async def test_one_busy_pond_does_not_starve_a_quiet_one() -> None:
    async with rig() as (outbox, _, clock):
        busy = [outbox.send(msg(GROUP_A, f"spam {i}")) for i in range(100)]
        quiet = await outbox.call(msg(GROUP_B, "hello"))
        assert isinstance(quiet, Message)
        assert clock.now <= 1.0
        assert outbox.pending(GROUP_A) > 90
        await asyncio.gather(*busy)


async def test_budgets_hold_when_each_send_is_awaited_before_the_next() -> None:
    async with rig() as (outbox, session, clock):
        for i in range(25):
            await outbox.call(msg(GROUP_A, f"g{i}"))
        for i in range(6):
            await outbox.call(msg(5, f"p{i}"))
        assert max_in_window(times_for(session, GROUP_A), 60.0) == 20
        assert_budgets(session)
        # Long idle: state is forgotten, a fresh burst is allowed again.
        await clock.sleep(3600)
        start = clock.now
        await asyncio.gather(*(outbox.send(msg(GROUP_A, f"h{i}")) for i in range(3)))
        assert times_for(session, GROUP_A)[-3:] == [start] * 3


async def test_global_budget_caps_at_30_per_rolling_second() -> None:
    async with rig() as (outbox, session, clock):
        chats = list(range(1, 201))
        await asyncio.gather(*(outbox.send(msg(c, f"dm {c}")) for c in chats))
        assert sorted(getattr(r, "chat_id") for r in session.requests) == chats  # noqa: B009
        assert max_in_window(times_for(session), 1.0) == 30
        assert_budgets(session)
        assert 6.0 <= clock.now < 7.0  # 200 / 30 per second


async def test_concurrency_bounds_requests_in_flight_and_chat_order_is_kept() -> None:
    async with rig(latency=0.5, concurrency=4) as (outbox, session, _):
        futures = [outbox.send(msg(c, f"{c}:{i}")) for i in range(3) for c in range(1, 21)]
        await asyncio.gather(*futures)
        assert session.max_in_flight == 4
        for c in range(1, 21):
            assert session.sent_texts(c) == [f"{c}:{i}" for i in range(3)]


async def test_a_chat_waits_for_its_previous_request_to_finish() -> None:
    async with rig(latency=2.0) as (outbox, session, _):
        await asyncio.gather(*(outbox.send(msg(5, str(i))) for i in range(4)))
        assert session.max_in_flight == 1
        # The burst of 3 is spent by the third request; the bucket refills from that
        # request's answer (6.0), not its issue, so the fourth waits one more second.
        assert times_for(session, 5) == [0.0, 2.0, 4.0, 7.0]


async def test_a_request_counts_against_the_global_window_until_its_answer() -> None:
    """Telegram counts a request at some instant between its issue and its answer, so no
    rolling second may touch more than 30 requests' flights, however slow the answers."""
    async with rig(latency=0.4, concurrency=64) as (outbox, session, _):
        await asyncio.gather(*(outbox.send(msg(c, f"dm {c}")) for c in range(1, 91)))
        flights = [(t, t + 0.4) for t in times_for(session)]
        starts = [answer for _, answer in flights] + [issue - 1.0 + EPS for issue, _ in flights]
        touching = max(
            sum(1 for issue, answer in flights if issue < s + 1.0 and answer >= s) for s in starts
        )
        assert touching == 30
        # Each 30 go out a second after the previous 30 were answered.
        assert sorted({round(t, 6) for t in times_for(session)}) == [0.0, 1.4, 2.8]


async def test_edits_and_other_methods_count_against_the_group_budget() -> None:
    async with rig() as (outbox, session, _):
        futures: list[asyncio.Future[Any]] = []
        for i in range(15):
            futures.append(outbox.send(msg(GROUP_A, f"m{i}")))
            futures.append(outbox.send(edit(GROUP_A, f"e{i}", message_id=i + 1)))
        futures.append(outbox.send(SendPhoto(chat_id=GROUP_A, photo="file-id", caption="c")))
        await asyncio.gather(*futures)
        assert len(session.requests) == 31
        assert max_in_window(times_for(session, GROUP_A), 60.0) == 20
        assert_budgets(session)


# -- faults ----------------------------------------------------------------------------


async def test_429_parks_the_chat_and_resends_exactly_once() -> None:
    async with rig() as (outbox, session, _):
        session.fail_next("sendMessage", chat_id=GROUP_A, retry_after=7)
        first = outbox.send(msg(GROUP_A, "a"))
        second = outbox.send(msg(GROUP_A, "b"))
        other = outbox.send(msg(GROUP_B, "c"))
        await asyncio.gather(first, second, other)
        times = times_for(session, GROUP_A)
        assert len(times) == 3  # a (429), a, b
        assert times[1] - times[0] >= 7.0
        assert session.sent_texts(GROUP_A) == ["a", "b"]
        assert times_for(session, GROUP_B) == [0.0]  # not parked by A's 429
        assert outbox.stats.retried_429 == 1 and outbox.stats.sent == 3


async def test_429_on_a_chatless_method_parks_everything() -> None:
    async with rig() as (outbox, session, _):
        session.fail_next("editMessageText", retry_after=4)
        inline = outbox.send(EditMessageText(inline_message_id="inl-1", text="x"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        later = outbox.send(msg(9, "after"))
        assert await inline is True
        await later
        assert times_for(session, 9)[0] >= 4.0


async def test_403_drops_that_group_and_keeps_serving_others() -> None:
    forbidden = Recorder()
    async with rig(on_forbidden=forbidden) as (outbox, session, _):
        session.fail_next(chat_id=GROUP_A, error_code=403)
        a = [outbox.send(msg(GROUP_A, f"a{i}")) for i in range(10)]
        b = [outbox.send(msg(GROUP_B, f"b{i}")) for i in range(10)]
        assert await asyncio.gather(*a) == [None] * 10
        assert all(isinstance(r, Message) for r in await asyncio.gather(*b))
        assert forbidden.calls == [(GROUP_A, "Forbidden: bot was kicked from the group chat")]
        assert len(times_for(session, GROUP_A)) == 1
        assert session.sent_texts(GROUP_B) == [f"b{i}" for i in range(10)]

        # Later sends are dropped without a request, until the bot is re-added.
        assert await outbox.call(msg(GROUP_A, "late")) is None
        assert len(times_for(session, GROUP_A)) == 1
        assert outbox.is_forbidden(GROUP_A)
        outbox.reactivate(GROUP_A)
        back = await outbox.call(msg(GROUP_A, "welcome back"))
        assert isinstance(back, Message)
        assert outbox.stats.dropped_forbidden == 11
        assert len(forbidden.calls) == 1


async def test_migration_retargets_the_failed_and_queued_messages() -> None:
    migrated = Recorder()
    async with rig(on_migrated=migrated) as (outbox, session, _):
        session.fail_next(chat_id=GROUP_A, migrate_to_chat_id=SUPERGROUP)
        futures = [outbox.send(msg(GROUP_A, f"m{i}")) for i in range(5)]
        results = await asyncio.gather(*futures)
        assert migrated.calls == [(GROUP_A, SUPERGROUP)]
        assert all(isinstance(r, Message) and r.chat.id == SUPERGROUP for r in results)
        assert session.sent_texts(SUPERGROUP) == [f"m{i}" for i in range(5)]
        assert session.sent_texts(GROUP_A) == []
        # The old id keeps working for callers that have not caught up.
        await outbox.call(msg(GROUP_A, "later"))
        assert session.sent_texts(SUPERGROUP)[-1] == "later"
        assert outbox.stats.migrated == 1


async def test_server_errors_back_off_then_succeed() -> None:
    async with rig() as (outbox, session, _):
        session.fail_next(chat_id=7, error_code=500, times=2)
        session.fail_next(chat_id=8, network=True)
        x, y = outbox.send(msg(7, "x")), outbox.send(msg(8, "y"))
        ok = await asyncio.gather(x, y)
        assert all(isinstance(r, Message) for r in ok)
        assert times_for(session, 7) == [0.0, 1.0, 3.0]  # backoff 1 s, 2 s
        assert times_for(session, 8) == [0.0, 1.0]
        assert outbox.stats.retried_errors == 3 and outbox.stats.failed == 0


async def test_server_errors_give_up_after_max_attempts(caplog: pytest.LogCaptureFixture) -> None:
    async with rig(limits=Limits(max_attempts=3)) as (outbox, session, _):
        session.fail_next(chat_id=7, error_code=502, times=3)
        doomed = outbox.send(msg(7, "x"))
        after = outbox.send(msg(7, "y"))
        with pytest.raises(TelegramServerError):
            await doomed
        assert isinstance(await after, Message)
        assert len(times_for(session, 7)) == 4
        assert outbox.stats.failed == 1
    assert TEST_TOKEN not in caplog.text
    assert TEST_TOKEN.split(":")[1] not in caplog.text


async def test_bad_request_fails_only_that_message() -> None:
    async with rig() as (outbox, session, _):
        session.fail_next(chat_id=7, error_code=400, description="Bad Request: can't parse")
        bad = outbox.send(msg(7, "<b"))
        good = outbox.send(msg(7, "fine"))
        with pytest.raises(TelegramBadRequest, match="can't parse"):
            await bad
        assert isinstance(await good, Message)
        assert len(session.requests) == 2


async def test_the_worker_survives_unexpected_errors() -> None:
    async def explode(*args: Any) -> None:
        raise RuntimeError("callback bug")

    clock = FakeClock()
    session = FakeSession(clock=clock)
    outbox = Outbox(make_bot(session), clock=clock, on_forbidden=explode)
    await outbox.start()
    session.fail_next(chat_id=GROUP_A, error_code=403)
    session.add_result("not a message", method="sendMessage", chat_id=5)  # undecodable
    assert await outbox.call(msg(GROUP_A, "x")) is None
    with pytest.raises(Exception, match="deserialize"):
        await outbox.call(msg(5, "y"))
    z = await outbox.call(msg(5, "z"))
    assert isinstance(z, Message)
    await outbox.stop()


# -- boards and callback answers ---------------------------------------------------------


async def test_board_edits_coalesce_while_the_group_is_rate_limited() -> None:
    async with rig() as (outbox, session, clock):
        flood = [outbox.send(msg(GROUP_A, f"m{i}")) for i in range(20)]
        await asyncio.sleep(0)
        boards: list[asyncio.Future[Any]] = []
        for i in range(50):
            boards.append(outbox.board(f"board:{GROUP_A}", edit(GROUP_A, f"v{i}")))
            await clock.sleep(0.5)
        await asyncio.gather(*flood, *boards)
        edits = session.requests_of(EditMessageText)
        assert 1 <= len(edits) <= 5
        assert edits[-1].text == "v49"
        last = boards[-1].result()
        assert isinstance(last, Message) and last.text == "v49"
        assert outbox.stats.coalesced == 50 - len(edits)
        assert_budgets(session)


async def test_board_edit_not_modified_is_swallowed() -> None:
    async with rig() as (outbox, session, _):
        session.fail_next(
            "editMessageText",
            error_code=400,
            description="Bad Request: message is not modified: specified new message content "
            "and reply markup are exactly the same as a current content",
        )
        assert await outbox.board("b", edit(GROUP_A, "same")) is None
        assert outbox.stats.not_modified == 1 and outbox.stats.failed == 0
        result = await outbox.board("b", edit(GROUP_A, "new"))
        assert isinstance(result, Message) and result.text == "new"


async def test_answer_is_immediate_while_the_group_is_parked() -> None:
    async with rig() as (outbox, session, clock):
        session.fail_next(chat_id=GROUP_A, retry_after=30)
        queued = [outbox.send(msg(GROUP_A, f"m{i}")) for i in range(40)]
        await clock.sleep(1.0)  # the first send got its 429; the group is parked until 30 s
        assert outbox.stats.retried_429 == 1
        parked_at = clock.now
        assert await outbox.answer(AnswerCallbackQuery(callback_query_id="q1", text="ok"))
        assert clock.now == parked_at
        assert outbox.pending(GROUP_A) == 40
        assert isinstance(session.requests[-1], AnswerCallbackQuery)

        session.fail_next(
            "answerCallbackQuery",
            error_code=400,
            description="Bad Request: query is too old and response timeout expired",
        )
        assert await outbox.answer(AnswerCallbackQuery(callback_query_id="q0")) is False
        assert outbox.stats.answers == 1 and outbox.stats.answers_failed == 1
        await asyncio.gather(*queued)


# -- lifecycle -------------------------------------------------------------------------


async def test_stop_drains_the_queue_and_is_idempotent() -> None:
    clock = FakeClock()
    session = FakeSession(clock=clock)
    outbox = Outbox(make_bot(session), clock=clock)
    futures = [outbox.send(msg(GROUP_A, f"m{i}")) for i in range(5)]  # queued before start
    await outbox.start()
    await outbox.stop(drain_timeout=10)
    assert all(f.done() and isinstance(f.result(), Message) for f in futures)
    assert session.sent_texts(GROUP_A) == [f"m{i}" for i in range(5)]
    await outbox.stop()
    with pytest.raises(OutboxClosedError):
        outbox.send(msg(GROUP_A, "too late"))


async def test_stop_gives_up_after_the_drain_timeout(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    session = FakeSession(clock=clock)
    outbox = Outbox(make_bot(session), clock=clock)
    await outbox.start()
    futures = [outbox.send(msg(GROUP_A, f"m{i}")) for i in range(30)]
    with caplog.at_level(logging.WARNING):
        await outbox.stop(drain_timeout=5)
    assert 5.0 <= clock.now < 6.0
    delivered = [f for f in futures if not f.cancelled()]
    assert len(delivered) == len(session.requests) < 30
    assert all(f.cancelled() for f in futures[len(delivered) :])
    assert "unsent" in caplog.text


async def test_cancelled_sends_are_withdrawn() -> None:
    async with rig() as (outbox, session, _):
        futures = [outbox.send(msg(GROUP_A, f"m{i}")) for i in range(25)]
        futures[22].cancel()
        await asyncio.gather(*futures, return_exceptions=True)
        assert "m22" not in session.sent_texts(GROUP_A)
        assert len(session.requests) == 24


# -- property ----------------------------------------------------------------------------

CHATS = [GROUP_A, GROUP_B, GROUP_C, 11, 12, 13]
FAULTS = st.sampled_from(["none", "429", "500", "403"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.tuples(st.sampled_from(CHATS), st.booleans()), min_size=1, max_size=80),
    faults=st.lists(st.tuples(st.sampled_from(CHATS), FAULTS, st.integers(1, 20)), max_size=6),
    latency=st.sampled_from([0.0, 0.05, 0.7]),
    concurrency=st.integers(1, 8),
)
def test_property_every_message_once_in_order_within_budgets(
    plan: list[tuple[int, bool]],
    faults: list[tuple[int, str, int]],
    latency: float,
    concurrency: int,
) -> None:
    async def scenario() -> None:
        forbidden = Recorder()
        async with rig(latency=latency, concurrency=concurrency, on_forbidden=forbidden) as (
            outbox,
            session,
            _,
        ):
            kicked: set[int] = set()
            errors: dict[int, int] = {}  # 5xx per chat, kept below max_attempts
            for chat, fault, n in faults:
                if fault == "429":
                    session.fail_next(chat_id=chat, retry_after=n)
                elif fault == "500" and errors.get(chat, 0) + 1 + n % 3 < Limits().max_attempts:
                    errors[chat] = errors.get(chat, 0) + 1 + n % 3
                    session.fail_next(chat_id=chat, error_code=500, times=1 + n % 3)
                elif fault == "403" and chat not in kicked:
                    kicked.add(chat)
                    session.fail_next(chat_id=chat, error_code=403, times=10**6)
            sent: dict[int, list[str]] = {}
            futures: list[asyncio.Future[Any]] = []
            for i, (chat, is_edit) in enumerate(plan):
                method: TelegramMethod[Any] = edit(chat, f"e{i}") if is_edit else msg(chat, f"t{i}")
                futures.append(outbox.send(method))
                if not is_edit:
                    sent.setdefault(chat, []).append(f"t{i}")
            results = await asyncio.gather(*futures)

            for chat in CHATS:
                if chat in kicked:
                    assert session.sent_texts(chat) == []
                else:
                    assert session.sent_texts(chat) == sent.get(chat, [])
            for (chat, _), result in zip(plan, results, strict=True):
                assert (result is None) == (chat in kicked)
            used = {c for c, _ in plan}
            assert sorted(c for c, _ in forbidden.calls) == sorted(kicked & used)
            assert_budgets(session)

    asyncio.run(scenario())


# -- weather: HTML pages, dropped connections ----------------------------------------------


class WeatherSession(FakeSession):
    """A fake Telegram whose front end can answer an HTML "502 Bad Gateway" page (aiogram
    raises `ClientDecodeError`) or drop the connection, as `weather(...)` scripts."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scripted: list[tuple[str, str]] = []  # (API method, kind), in order

    def weather(self, method: str, kind: str, times: int = 1) -> None:
        self.scripted += [(method, kind)] * times

    def _respond(self, bot: Any, method: TelegramMethod[Any]) -> tuple[str, int]:
        for i, (name, kind) in enumerate(self.scripted):
            if name == method.__api_method__:
                del self.scripted[i]
                if kind == "html502":
                    return HTML_502, 502
                if kind == "reset":  # what aiogram's aiohttp session makes of it
                    raise TelegramNetworkError(
                        method=method, message="ServerDisconnectedError: Server disconnected"
                    )
                raise ConnectionResetError(104, "Connection reset by peer")
        return super()._respond(bot, method)


@asynccontextmanager
async def weather_rig(
    limits: Limits | None = None,
) -> AsyncIterator[tuple[Outbox, WeatherSession, FakeClock]]:
    clock = FakeClock()
    session = WeatherSession(clock=clock)
    outbox = Outbox(make_bot(session), limits=limits or Limits(), clock=clock)
    await outbox.start()
    try:
        yield outbox, session, clock
    finally:
        await outbox.stop(drain_timeout=0)


async def test_an_html_502_page_is_retried_like_a_5xx_and_delivered_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.outbox")
    async with weather_rig() as (outbox, session, _):
        session.weather("sendMessage", "html502")
        sent = await outbox.call(msg(GROUP_A, "check-in board"))
        assert isinstance(sent, Message)
        assert session.sent_texts(GROUP_A) == ["check-in board"]  # delivered once
        assert times_for(session, GROUP_A) == [0.0, 1.0]  # retried after the 1 s backoff
        assert outbox.stats.retried_errors == 1 and outbox.stats.failed == 0
    assert "Traceback" not in caplog.text
    assert "<html>" not in caplog.text  # the page itself stays out of the log
    assert TEST_TOKEN.split(":")[1] not in caplog.text


@pytest.mark.parametrize("kind", ["reset", "oserror"])
async def test_a_dropped_connection_is_retried(kind: str) -> None:
    async with weather_rig() as (outbox, session, _):
        session.weather("sendMessage", kind, times=2)
        sent = await outbox.call(msg(7, "hello"))
        assert isinstance(sent, Message)
        assert session.sent_texts(7) == ["hello"]
        assert times_for(session, 7) == [0.0, 1.0, 3.0]
        assert outbox.stats.retried_errors == 2 and outbox.stats.failed == 0


async def test_html_pages_give_up_after_max_attempts_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with weather_rig(Limits(max_attempts=3)) as (outbox, session, _):
        session.weather("sendMessage", "html502", times=3)
        with pytest.raises(ClientDecodeError):
            await outbox.call(msg(7, "x"))
        assert len(times_for(session, 7)) == 3
        assert outbox.stats.failed == 1
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and "Traceback" not in caplog.text


async def test_a_failed_pin_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    async with weather_rig(Limits(max_attempts=2)) as (outbox, session, _):
        session.weather("pinChatMessage", "html502", times=2)
        pin = outbox.send(PinChatMessage(chat_id=GROUP_A, message_id=5))
        with pytest.raises(ClientDecodeError):
            await pin
        session.fail_next("pinChatMessage", error_code=400,
                          description="Bad Request: not enough rights to pin a message")
        with pytest.raises(TelegramBadRequest):
            await outbox.call(PinChatMessage(chat_id=GROUP_A, message_id=6))
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.WARNING]
    assert all("pinChatMessage" in r.getMessage() for r in lines)
    assert "Traceback" not in caplog.text


async def test_a_callback_answer_survives_an_html_page_and_is_sent_once() -> None:
    async with weather_rig() as (outbox, session, _):
        session.weather("answerCallbackQuery", "html502")
        query = AnswerCallbackQuery(callback_query_id="q1", text="✅")
        assert await outbox.answer(query) is True
        # The same press handled again (after a database failure): not answered twice.
        assert await outbox.answer(query) is True
        assert len(session.delivered_of(AnswerCallbackQuery)) == 1
        assert len(session.requests_of(AnswerCallbackQuery)) == 2  # the HTML page, the answer
        assert outbox.stats.answers == 1 and outbox.stats.answers_failed == 0


# -- bounded queues, droppable replies, posts -------------------------------------------

BOUNDED = Limits(max_queue_per_chat=5, stale_after=180.0)


async def test_a_full_queue_sheds_droppable_replies_oldest_first_and_keeps_order() -> None:
    async with rig(limits=BOUNDED) as (outbox, session, _):
        post = outbox.send(msg(GROUP_A, "post"))
        replies = [outbox.send(msg(GROUP_A, f"r{i}"), droppable=True) for i in range(8)]
        results = await asyncio.gather(post, *replies)
        # The queue holds 5: r0..r3 made room for r4..r7; what was kept went out in order.
        assert session.sent_texts(GROUP_A) == ["post", "r4", "r5", "r6", "r7"]
        assert [r is None for r in results[1:]] == [True] * 4 + [False] * 4
        assert outbox.stats.dropped_full == 4 and outbox.stats.dropped_stale == 0
        assert outbox.stats.max_queue_depth == BOUNDED.max_queue_per_chat


async def test_posts_are_never_dropped_and_replies_give_way_to_them() -> None:
    async with rig(limits=BOUNDED) as (outbox, session, _):
        plan = ["r0", "p0", "p1", "p2", "r1", "r2", "r3", *[f"p{i}" for i in range(3, 10)]]
        futures = [outbox.send(msg(GROUP_A, t), droppable=t[0] == "r") for t in plan]
        late = outbox.send(msg(GROUP_A, "r-late"), droppable=True)
        await asyncio.gather(*futures, late)
        # Each new request pushed out the oldest reply; once only posts were queued, the
        # queue grew past its bound for them and refused the next reply instead.
        assert session.sent_texts(GROUP_A) == [f"p{i}" for i in range(10)]
        assert late.result() is None
        assert outbox.stats.dropped_full == 5 and outbox.stats.failed == 0


async def test_a_reply_that_waited_past_its_staleness_is_dropped_not_sent() -> None:
    limits = Limits(stale_after=60.0)  # 20/min: whatever waits behind 44 posts is stale
    async with rig(limits=limits) as (outbox, session, clock):
        posts = [outbox.send(msg(GROUP_A, f"p{i}")) for i in range(44)]
        replies = [outbox.send(msg(GROUP_A, f"r{i}"), droppable=True) for i in range(5)]
        last = outbox.send(msg(GROUP_A, "p44"))  # 50 queued: the bound is not reached
        fresh = outbox.send(msg(GROUP_B, "r-b"), droppable=True)  # another pond: no wait
        await asyncio.gather(*posts, *replies, last, fresh)
        assert session.sent_texts(GROUP_A) == [f"p{i}" for i in range(45)]
        assert session.sent_texts(GROUP_B) == ["r-b"]
        assert all(r.result() is None for r in replies)
        assert outbox.stats.dropped_stale == 5 and outbox.stats.dropped_full == 0
        assert clock.now > 120.0


async def test_non_droppable_sends_wait_however_long() -> None:
    async with rig(limits=Limits(max_queue_per_chat=50)) as (outbox, session, clock):
        futures = [outbox.send(msg(GROUP_A, f"p{i}")) for i in range(70)]
        await asyncio.gather(*futures)
        assert session.sent_texts(GROUP_A) == [f"p{i}" for i in range(70)]
        assert clock.now > 180.0 and outbox.stats.dropped_stale == outbox.stats.dropped_full == 0


async def test_a_post_is_recorded_once_answered_and_not_queued_twice() -> None:
    recorded: list[int] = []
    done = asyncio.Event()

    async def record(sent: Message) -> None:
        recorded.append(sent.message_id)
        done.set()

    async with rig(limits=BOUNDED) as (outbox, session, _):
        filler = [outbox.send(msg(GROUP_A, f"r{i}"), droppable=True) for i in range(4)]
        first = outbox.post(msg(GROUP_A, "post"), key="rp:1", record=record)
        assert first is not None
        assert outbox.posting("rp:1")
        assert outbox.post(msg(GROUP_A, "post again"), key="rp:1", record=record) is None
        assert outbox.pending() == 5
        await asyncio.gather(*filler, first)
        await done.wait()
        await asyncio.sleep(0)  # the record's task is done
        assert outbox.pending() == 0
        # The post went ahead of the replies queued before it, and only once.
        assert recorded == [1] and not outbox.posting("rp:1")
        assert session.sent_texts(GROUP_A) == ["post", "r0", "r1", "r2", "r3"]
        assert outbox.stats.posts_recorded == 1


async def test_a_failed_post_may_be_posted_again_and_stop_waits_for_records() -> None:
    clock = FakeClock()
    session = FakeSession(clock=clock)
    outbox = Outbox(make_bot(session), clock=clock)
    await outbox.start()
    session.fail_next("sendMessage", error_code=400, description="Bad Request: chat not found")
    recorded: list[int] = []

    async def record(sent: Message) -> None:
        await clock.sleep(0.5)  # one short write
        recorded.append(sent.message_id)

    lost = outbox.post(msg(GROUP_A, "post"), key="vote:7", record=record)
    assert lost is not None
    with pytest.raises(TelegramBadRequest):
        await lost
    assert not outbox.posting("vote:7") and recorded == []
    again = outbox.post(msg(GROUP_A, "post"), key="vote:7", record=record)
    assert again is not None
    await again
    await outbox.stop(drain_timeout=2)
    assert recorded == [1] and outbox.stats.posts_recorded == 1


async def test_stop_does_not_wait_for_what_the_budget_holds_back_past_the_deadline() -> None:
    clock = FakeClock()
    session = FakeSession(clock=clock)
    outbox = Outbox(make_bot(session), clock=clock)
    await outbox.start()
    futures = [outbox.send(msg(GROUP_A, f"m{i}")) for i in range(45)]
    await asyncio.gather(*futures[:20])  # this minute's budget of the group is spent
    spent = clock.now
    await outbox.stop(drain_timeout=5)
    # The 21st message may go only a minute after the first: stopping does not wait.
    assert clock.now - spent < 1.0
    assert len(session.requests) == 20
    assert all(f.cancelled() for f in futures[20:])


async def test_stop_drops_queued_replies_and_gives_the_time_to_posts() -> None:
    clock = FakeClock()
    session = FakeSession(clock=clock)
    outbox = Outbox(make_bot(session), clock=clock)
    await outbox.start()
    replies = [outbox.send(msg(GROUP_A, f"r{i}"), droppable=True) for i in range(40)]
    post = outbox.send(msg(GROUP_A, "post"))
    await asyncio.gather(*replies[:3])
    await outbox.stop(drain_timeout=5)
    # The post went ahead of the queued replies.
    assert session.sent_texts(GROUP_A)[0] == "post"
    assert isinstance(post.result(), Message)
    assert all(r.result() is None for r in replies[3:])
    replies_sent = len(session.requests) - 1
    assert outbox.stats.dropped_at_stop == len(replies) - replies_sent


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from([GROUP_A, GROUP_B, 11]),
            st.booleans(),
            st.sampled_from([0, 1, 10, 90]),  # tenths of a second after the previous burst
            st.integers(1, 30),  # a burst of this many
        ),
        min_size=1,
        max_size=12,
    ),
    bound=st.integers(1, 60),
    stale_after=st.sampled_from([5.0, 30.0, 180.0]),
)
def test_property_posts_always_go_out_and_each_kind_keeps_its_order_within_the_bound(
    plan: list[tuple[int, bool, int, int]], bound: int, stale_after: float
) -> None:
    """Bursts of sends arrive over time: every non-droppable one is sent exactly once;
    droppable ones at most once; a chat's posts keep the order they were queued in, and
    so do its replies (posts go ahead of queued replies);
    a chat's queue never holds more than the bound unless posts fill it; no reply is
    sent after waiting longer than `stale_after`."""

    async def scenario() -> None:
        limits = Limits(max_queue_per_chat=bound, stale_after=stale_after)
        async with rig(limits=limits) as (outbox, session, clock):
            queued_at: dict[str, float] = {}
            chat_of: dict[str, int] = {}
            futures: list[tuple[str, bool, asyncio.Future[Any]]] = []
            for i, (chat, droppable, gap, burst) in enumerate(plan):
                await clock.sleep(gap / 10)
                for k in range(burst):
                    text = f"{'r' if droppable else 'p'}{i}.{k}"
                    queued_at[text], chat_of[text] = clock.now, chat
                    sent = outbox.send(msg(chat, text), droppable=droppable)
                    futures.append((text, droppable, sent))
                for lane in (GROUP_A, GROUP_B, 11):
                    posts = sum(
                        1 for t, d, f in futures if not d and not f.done() and chat_of[t] == lane
                    )
                    # Full of posts, a queue grows with posts only (+1: the one in flight).
                    assert outbox.pending(lane) <= max(bound, posts) + 1
            await asyncio.gather(*(f for _, _, f in futures))
            order = {text: n for n, (text, _, _) in enumerate(futures)}
            for chat in (GROUP_A, GROUP_B, 11):
                got = session.sent_texts(chat)
                for kind in "pr":  # posts go ahead of replies; each kind keeps its order
                    mine = [t for t in got if t[0] == kind]
                    assert mine == sorted(mine, key=order.__getitem__)
                assert len(got) == len(set(got))
            for text, droppable, fut in futures:
                if not droppable:
                    assert isinstance(fut.result(), Message), text
            times = dict(zip(session.sent_texts(), session.request_times, strict=True))
            for text, issued in times.items():
                if text.startswith("r"):
                    assert issued - queued_at[text] <= stale_after + 1e-6, text
            assert_budgets(session)

    asyncio.run(scenario())


async def test_a_failed_record_is_tried_again() -> None:
    attempts: list[float] = []

    async with rig() as (outbox, _, clock):

        async def record(sent: Message) -> None:
            attempts.append(clock.now)
            if len(attempts) < 3:
                raise ConnectionError("the database is failing over")

        sent = outbox.post(msg(GROUP_A, "post"), key="rp:9", record=record)
        assert sent is not None
        await sent
        while outbox.posting("rp:9"):
            await clock.sleep(0.5)
        assert len(attempts) == 3 and attempts[2] - attempts[0] == pytest.approx(3.0)
        assert outbox.stats.posts_recorded == 1 and outbox.stats.posts_unrecorded == 0


async def test_a_restarted_outbox_keeps_the_last_minutes_group_budget(tmp_path: Path) -> None:
    clock = FakeClock()
    session = FakeSession(clock=clock)
    journal = tmp_path / "pond.db-outbox.journal"

    def wall() -> float:
        return 1_800_000_000.0 + clock.now

    first = Outbox(make_bot(session), clock=clock, journal=journal, wall=wall)
    await first.start()
    await asyncio.gather(*(first.send(msg(GROUP_A, f"a{i}")) for i in range(20)))
    await first.send(msg(11, "a private chat is not journaled"))
    with journal.open("a") as f:
        f.write("-10")  # the process died in the middle of a line
    await clock.sleep(5)  # the bot is restarted: nothing of the first outbox is used
    second = Outbox(make_bot(session), clock=clock, journal=journal, wall=wall)
    await second.start()
    await first.stop(drain_timeout=0)
    again = second.send(msg(GROUP_A, "a21"))
    other = second.send(msg(GROUP_B, "b0"))
    await asyncio.gather(again, other)
    times = times_for(session, GROUP_A)
    assert len(times) == 21 and times[-1] - times[0] >= 60.0  # 20 a minute, across both
    assert times_for(session, GROUP_B)[0] < times[-2] + 10  # another group: no wait
    await second.stop()
    lines = [line.split() for line in journal.read_text().splitlines()]
    assert len(lines) == 22 and all(len(f) == 2 and f[0] in ("-1001", "-1002") for f in lines)


async def test_a_post_goes_ahead_of_the_replies_queued_in_its_chat() -> None:
    """A busy pond's game post does not wait behind answers to /points: it goes before
    the replies still queued there (after any post queued before it); replies keep
    their order behind it."""
    async with rig(limits=Limits()) as (outbox, session, _):
        replies = [outbox.send(msg(GROUP_A, f"r{i}"), droppable=True) for i in range(6)]
        first = outbox.send(msg(GROUP_A, "p0"))
        second = outbox.send(msg(GROUP_A, "p1"))
        later = outbox.send(msg(GROUP_A, "r6"), droppable=True)
        await asyncio.gather(first, second)
        assert session.sent_texts(GROUP_A)[:2] == ["p0", "p1"]
        await asyncio.gather(*replies, later)
        assert session.sent_texts(GROUP_A) == ["p0", "p1", *[f"r{i}" for i in range(7)]]


# -- the before_issue hook ---------------------------------------------------------------


async def test_the_hook_is_awaited_right_before_its_request_once_the_budget_allows() -> None:
    async with rig() as (outbox, session, clock):
        seen: list[tuple[str, float, int]] = []  # (text, when, requests issued before it)

        def hook(text: str) -> Any:
            async def before_issue() -> bool:
                seen.append((text, clock.monotonic(), len(session.requests)))
                return True

            return before_issue

        session.fail_next("sendMessage", chat_id=GROUP_A, retry_after=7)
        texts = ["a", "b", "c", "d"]
        futures = [outbox.send(msg(GROUP_A, t), before_issue=hook(t)) for t in texts]
        plain = outbox.send(msg(GROUP_B, "plain"))
        await asyncio.gather(*futures, plain)
        assert session.sent_texts(GROUP_A) == texts
        # Each hook ran just before its own request (none ahead of time, in the queue),
        # and once: the 429's retry of "a" went straight out.
        assert [t for t, _at, _n in seen] == texts
        requests = [getattr(r, "text", None) for r in session.requests]
        times = dict(zip(requests, session.request_times, strict=True))
        for text, at, issued_before in seen:
            assert requests[issued_before] == text
            if text != "a":  # (its retry is later)
                assert at == times[text]  # at the moment its budget allowed it
        assert times["d"] >= 7.0 + 1.0 - EPS  # parked by the 429, then the chat's bucket


async def test_a_failing_hook_sends_nothing_and_puts_the_request_back() -> None:
    async with rig(limits=Limits(max_attempts=3)) as (outbox, session, _):
        calls = {"flaky": 0, "down": 0}

        async def flaky() -> bool:
            calls["flaky"] += 1
            if calls["flaky"] <= 2:
                raise ConnectionError("database unavailable")
            return True

        async def down() -> bool:
            calls["down"] += 1
            raise ConnectionError("database unavailable")

        async def not_mine() -> bool:
            return False

        late = outbox.send(msg(7, "late"), before_issue=flaky)
        doomed = outbox.send(msg(8, "doomed"), before_issue=down)
        withdrawn = outbox.send(msg(9, "withdrawn"), before_issue=not_mine)
        after = outbox.send(msg(9, "after"))
        assert isinstance(await late, Message)
        assert times_for(session, 7) == [3.0]  # tried again after 1 s and 2 s; sent once
        with pytest.raises(ConnectionError):
            await doomed
        assert calls["down"] == 3 and times_for(session, 8) == []  # never sent
        assert await withdrawn is None and isinstance(await after, Message)
        assert session.sent_texts(9) == ["after"]
        assert outbox.stats.sent == 2


# -- bulk requests (a broadcast's copies) -------------------------------------------------


def texts_of(session: FakeSession) -> list[str]:
    return [str(getattr(r, "text", "")) for r in session.requests]


async def test_interactive_requests_go_ahead_of_bulk_ones_when_both_are_ready() -> None:
    async with rig() as (outbox, session, clock):
        copies = [outbox.send(msg(c, f"copy {c}"), bulk=True) for c in range(1, 61)]
        replies = [outbox.send(msg(-2001 - i, f"reply {i}")) for i in range(3)]
        await asyncio.gather(*replies)
        # Queued after the 60 copies, the replies were issued first, at once.
        assert texts_of(session)[:3] == ["reply 0", "reply 1", "reply 2"]
        assert session.request_times[:3] == [0.0, 0.0, 0.0]
        # In its chat, a copy waits behind the replies queued there.
        copy = outbox.send(msg(GROUP_B, "copy B"), bulk=True)
        reply = outbox.send(msg(GROUP_B, "reply B"), droppable=True)
        post = outbox.send(msg(GROUP_B, "post B"))
        await asyncio.gather(*copies, copy, reply, post)
        assert session.sent_texts(GROUP_B) == ["post B", "reply B", "copy B"]
        assert_budgets(session)
        assert clock.now < 3.0


async def test_bulk_fills_what_the_interactive_requests_leave_of_the_global_budget() -> None:
    """A broadcast alone runs at the ceiling (less the one place left free), evenly; with
    live ponds talking, it takes what they leave: every second is full, and each reply
    is issued within a few bulk spacings of its send, never behind the broadcast."""
    async with rig() as (outbox, session, clock):
        copies = [outbox.send(msg(c, f"copy {c}"), bulk=True) for c in range(1, 301)]
        asked: dict[str, float] = {}
        replies = []
        for second in range(1, 6):
            await clock.sleep(second + 0.5 - clock.now)
            for i in range(6):
                text = f"reply {second}.{i}"
                asked[text] = clock.now
                replies.append(outbox.send(msg(-2000 - 10 * second - i, text)))
        await asyncio.gather(*copies, *replies)
        assert_budgets(session)
        times = times_for(session)
        issued = dict(zip(texts_of(session), times, strict=True))
        assert max(issued[t] - at for t, at in asked.items()) <= 0.3
        for start in range(1, 9):  # whole seconds of the broadcast: the budget is used
            used = sum(1 for t in times if start <= t < start + 1)
            assert 27 <= used <= 30, (start, used)
        bulk = [t for text, t in issued.items() if text.startswith("copy")]
        assert max_in_window(bulk, 0.25) <= 9  # spread out, not a burst per second
        # 300 copies + 30 replies at (30 - 1) per second.
        assert 300 / 30 <= clock.now <= 330 / 29 + 1.0


async def test_a_parked_chats_bulk_request_goes_as_soon_as_its_retry_after_passes() -> None:
    async with rig() as (outbox, session, clock):
        session.fail_next("sendMessage", chat_id=5, retry_after=2)
        copies = [outbox.send(msg(c, f"copy {c}"), bulk=True) for c in range(1, 201)]
        await asyncio.gather(*copies)
        stormed = times_for(session, 5)
        assert len(stormed) == 2  # the 429, then the copy
        assert stormed[0] + 2.0 <= stormed[1] <= stormed[0] + 2.0 + 0.1  # at once, not after
        during = [t for t in times_for(session) if stormed[0] < t < stormed[1]]
        assert len(during) >= 50  # the other copies kept going while it was parked
        assert stormed[1] < max(times_for(session)) - 3.0  # not pushed to the end
        assert session.sent_texts(5) == ["copy 5"] and outbox.stats.retried_429 == 1
        assert_budgets(session)
        assert clock.now <= 200 / 29 + 1.0


async def test_bulk_leaves_a_place_in_flight_to_interactive_requests() -> None:
    async with rig(latency=0.5, concurrency=4) as (outbox, session, clock):
        copies = [outbox.send(msg(c, f"copy {c}"), bulk=True) for c in range(1, 21)]
        await clock.sleep(0.2)
        assert session.in_flight == 3  # of 4: one place is kept for the live ponds
        reply = outbox.send(msg(GROUP_A, "reply"))
        await reply
        assert dict(zip(texts_of(session), session.request_times, strict=True))["reply"] == 0.2
        await asyncio.gather(*copies)
