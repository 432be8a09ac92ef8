"""The pieces several instances share through Redis, each against a real redis-server;
two "instances" are two clients (two middlewares, two budgets, two listeners)."""

from __future__ import annotations

import asyncio
import bisect
import datetime
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.methods import SendMessage
from aiogram.types import Chat, Message, Update, User
from redis.asyncio import Redis
from sqlalchemy.exc import OperationalError

from services.dedup import SeenUpdates, Unconfirmed
from services.outbox import Limits, Outbox
from services.shared import NO_PEERS
from services.shared.redis_state import (
    MemberOrder,
    RedisBudget,
    RedisPacing,
    RedisPeers,
    SharedState,
)
from tests.rig.fake_session import FakeSession, make_bot

BOT = SimpleNamespace(id=42)


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    a, b = Redis.from_url(redis_url), Redis.from_url(redis_url)
    yield a, b
    await a.aclose()
    await b.aclose()


def update(update_id: int, chat: int = -100, user: int = 7) -> Update:
    return Update(
        update_id=update_id,
        message=Message(
            message_id=update_id,
            date=datetime.datetime.now(datetime.UTC),
            chat=Chat(id=chat, type="supergroup", title="pond"),
            from_user=User(id=user, is_bot=False, first_name="M"),
            text="hi",
        ),
    )


def seen(client: Redis, instance: str) -> SeenUpdates:
    return SeenUpdates(shared=SharedState(client, instance=instance).seen)


async def test_an_update_handled_by_one_instance_is_skipped_by_another(
    clients: tuple[Redis, Redis],
) -> None:
    one, two = seen(clients[0], "one"), seen(clients[1], "two")
    handled: list[str] = []

    def handler(name: str) -> Callable[[Any, dict[str, Any]], Any]:
        async def handle(event: Any, data: dict[str, Any]) -> str:
            handled.append(name)
            return name

        return handle

    assert await one(handler("one"), update(1), {"bot": BOT}) == "one"
    assert await two(handler("two"), update(1), {"bot": BOT}) is UNHANDLED
    assert await two(handler("two"), update(2), {"bot": BOT}) == "two"
    assert await one(handler("one"), update(2), {"bot": BOT}) is UNHANDLED
    assert handled == ["one", "two"]


async def test_an_update_in_hand_elsewhere_is_left_unconfirmed_then_skipped(
    clients: tuple[Redis, Redis],
) -> None:
    one, two = seen(clients[0], "one"), seen(clients[1], "two")
    started, finish = asyncio.Event(), asyncio.Event()

    async def slow(event: Any, data: dict[str, Any]) -> str:
        started.set()
        await finish.wait()
        return "done"

    async def fast(event: Any, data: dict[str, Any]) -> str:
        raise AssertionError("handled twice")

    first = asyncio.create_task(one(slow, update(5), {"bot": BOT}))
    await started.wait()
    with pytest.raises(Unconfirmed):
        await two(fast, update(5), {"bot": BOT})  # Telegram delivers it again later
    finish.set()
    assert await first == "done"
    assert await two(fast, update(5), {"bot": BOT}) is UNHANDLED


async def test_an_update_the_database_failed_is_handled_in_full_by_another_instance(
    clients: tuple[Redis, Redis],
) -> None:
    one, two = seen(clients[0], "one"), seen(clients[1], "two")

    async def outage(event: Any, data: dict[str, Any]) -> str:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    async def works(event: Any, data: dict[str, Any]) -> str:
        return "handled"

    with pytest.raises(Unconfirmed):
        await one(outage, update(9), {"bot": BOT})
    assert await two(works, update(9), {"bot": BOT}) == "handled"
    assert await one(works, update(9), {"bot": BOT}) is UNHANDLED


async def test_a_bug_counts_as_handled_everywhere(clients: tuple[Redis, Redis]) -> None:
    one, two = seen(clients[0], "one"), seen(clients[1], "two")

    async def bug(event: Any, data: dict[str, Any]) -> str:
        raise ZeroDivisionError

    async def works(event: Any, data: dict[str, Any]) -> str:
        return "again"

    with pytest.raises(ZeroDivisionError):
        await one(bug, update(11), {"bot": BOT})
    assert await two(works, update(11), {"bot": BOT}) is UNHANDLED


async def test_without_redis_an_update_is_handled_as_in_one_process() -> None:
    async def down(event: Any, data: dict[str, Any]) -> str:
        return "handled"

    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    lonely = SeenUpdates(shared=SharedState(dead, instance="x").seen)
    assert await lonely(down, update(1), {"bot": BOT}) == "handled"
    assert await lonely(down, update(1), {"bot": BOT}) is UNHANDLED  # its own memory
    await dead.aclose()


# -- send budgets -------------------------------------------------------------------------


def most_within(times: list[float], span: float) -> int:
    """The most entries of sorted `times` in any half-open window [t, t + span)."""
    times = sorted(times)
    return max(
        (bisect.bisect_left(times, t + span) - i for i, t in enumerate(times)), default=0
    )


async def simulate(
    budgets: list[RedisBudget], chats: Callable[[int, int], int], now: list[float], until: float
) -> list[list[float]]:
    """Each budget is a sender that always has something to send; it asks, and waits
    what it is told. Virtual time (`now[0]`) jumps to the next sender due."""
    due = [0.0 for _ in budgets]
    sent: list[list[float]] = [[] for _ in budgets]
    while True:
        i = min(range(len(budgets)), key=due.__getitem__)
        if due[i] >= until:
            return sent
        now[0] = due[i]
        wait = await budgets[i].take(chats(i, len(sent[i])))
        if wait > 0:
            due[i] = now[0] + max(wait, 1e-6)
        else:
            sent[i].append(now[0])
            due[i] = now[0] + 0.001


async def test_two_senders_stay_within_20_a_minute_in_a_group(
    clients: tuple[Redis, Redis],
) -> None:
    now = [0.0]
    budgets = [
        RedisBudget(c, prefix="t", instance=name, clock=lambda: now[0])
        for c, name in zip(clients, ("one", "two"), strict=True)
    ]
    sent = await simulate(budgets, lambda i, n: -100, now, until=185.0)
    times = sorted(sent[0] + sent[1])
    assert most_within(times, 60.0) <= 20
    assert sent[0] and sent[1]  # both got their turn
    assert len(times) >= 50  # and the pond was not starved: ~20 a minute over 3 minutes


async def test_two_senders_stay_within_30_a_second_overall(
    clients: tuple[Redis, Redis],
) -> None:
    now = [0.0]
    budgets = [
        RedisBudget(c, prefix="t", instance=name, clock=lambda: now[0])
        for c, name in zip(clients, ("one", "two"), strict=True)
    ]
    # every request to another private chat: only the global budget binds
    sent = await simulate(budgets, lambda i, n: 1_000_000 * (i + 1) + n, now, until=5.0)
    times = sorted(sent[0] + sent[1])
    assert most_within(times, 1.0) <= 30
    assert len(times) >= 4 * 25


async def test_a_broadcast_leaves_room_for_another_instances_replies(
    clients: tuple[Redis, Redis],
) -> None:
    """One instance broadcasts (bulk copies, always one more to send); the other answers
    members twice a second. The copies leave places of the shared 30/s to the replies,
    which go at once, and still run near the ceiling."""
    now = [0.0]
    caster, replier = (
        RedisBudget(c, prefix="t", instance=name, clock=lambda: now[0])
        for c, name in zip(clients, ("caster", "replier"), strict=True)
    )
    copies: list[float] = []
    delays: list[float] = []
    copy_due, wishes, reply_due = 0.0, [0.5 * k + 0.003 for k in range(20)], 0.0
    until = 10.0
    while True:
        reply_at = max(wishes[0], reply_due) if wishes else until
        if min(copy_due, reply_at) >= until:
            break
        if copy_due <= reply_at:  # on a tie the broadcast asks first: the worst case
            now[0] = copy_due
            wait = await caster.take(1_000_000 + len(copies), bulk=True)
            if wait > 0:
                copy_due = now[0] + max(wait, 1e-6)
            else:
                copies.append(now[0])
                copy_due = now[0] + 0.001
        else:
            now[0] = reply_at
            wait = await replier.take(2_000_000 + len(delays))
            if wait > 0:
                reply_due = now[0] + max(wait, 1e-6)
            else:
                delays.append(now[0] - wishes.pop(0))
    assert len(delays) == 20 and max(delays) < 0.01, delays  # every reply at once
    assert most_within(sorted(copies), 1.0) <= 30 - Limits().shared_bulk_headroom
    assert len(copies) >= 9 * (30 - Limits().shared_bulk_headroom)  # near the ceiling


async def test_the_per_chat_bucket_is_shared(clients: tuple[Redis, Redis]) -> None:
    now = [0.0]
    budgets = [
        RedisBudget(c, prefix="t", instance=name, clock=lambda: now[0])
        for c, name in zip(clients, ("one", "two"), strict=True)
    ]
    sent = await simulate(budgets, lambda i, n: 555, now, until=10.0)
    times = sorted(sent[0] + sent[1])
    # a burst of 3, then one a second
    assert 3 + 9 <= len(times) <= 3 + 10
    assert most_within(times, 2.0) <= 3 + 2


async def test_a_429_in_one_instance_pauses_the_chat_in_every_instance(
    clients: tuple[Redis, Redis],
) -> None:
    now = [100.0]
    one, two = (
        RedisBudget(c, prefix="t", instance=name, clock=lambda: now[0])
        for c, name in zip(clients, ("one", "two"), strict=True)
    )
    await one.pause(-100, 5)
    assert await two.take(-100) == pytest.approx(5)
    assert await two.take(-200) == 0  # another chat
    await two.pause(-100, 2)  # a shorter pause does not shorten it
    now[0] = 104.0
    assert await one.take(-100) == pytest.approx(1)
    now[0] = 105.0
    assert await one.take(-100) == 0
    await one.pause(None, 3)  # the bot as a whole
    assert await two.take(-300) == pytest.approx(3)


async def test_edits_of_one_board_take_turns_and_an_older_one_is_not_sent(
    clients: tuple[Redis, Redis],
) -> None:
    one = RedisBudget(clients[0], prefix="t", instance="one")
    two = RedisBudget(clients[1], prefix="t", instance="two")
    progress = await one.board_turn("rp:1", 4)
    assert progress
    assert await two.board_turn("rp:1", 6) is None  # the other edit is in flight: wait
    assert await two.board_turn("rp:2", 1)  # another board
    await one.board_done("rp:1", progress)
    result = await two.board_turn("rp:1", 6)
    assert result
    await two.board_done("rp:1", result)
    assert await one.board_turn("rp:1", 5) == ""  # older than the result: not sent


async def test_redis_time_is_the_clock_by_default(clients: tuple[Redis, Redis]) -> None:
    one = RedisBudget(clients[0], prefix="t", instance="one")
    two = RedisBudget(clients[1], prefix="t", instance="two")
    assert [await one.take(77), await two.take(77), await one.take(77)] == [0, 0, 0]
    wait = await two.take(77)
    assert 0.5 < wait <= 1.0


async def test_two_outboxes_share_one_chat_budget(redis_url: str) -> None:
    limits = Limits(per_chat_rate=20.0, per_chat_burst=2)
    states = [SharedState(Redis.from_url(redis_url), limits=limits) for _ in range(2)]
    session = FakeSession()
    bot = make_bot(session)
    outboxes = [Outbox(bot, limits=Limits(), budget=s.budget) for s in states]
    for o in outboxes:
        await o.start()
    futures = [o.send(SendMessage(chat_id=321, text=f"m{i}")) for i in range(3) for o in outboxes]
    await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert len(session.sent_texts(321)) == 6
    assert sum(o.budget_waits for o in outboxes) >= 1  # 6 > the shared burst of 2
    for o in outboxes:
        await o.stop()
    await bot.session.close()
    for s in states:
        await s.close()


async def test_a_429_met_by_one_outbox_holds_the_other_back(redis_url: str) -> None:
    fast = Limits(per_chat_rate=1e6, per_chat_burst=10**6, group_per_minute=10**6,
                  global_per_second=10**6)
    states = [SharedState(Redis.from_url(redis_url), limits=fast) for _ in range(2)]
    session = FakeSession()
    bot = make_bot(session)
    one, two = (Outbox(bot, limits=fast, budget=s.budget) for s in states)
    await one.start()
    await two.start()
    session.fail_next("sendMessage", chat_id=-100, retry_after=1)
    first = one.send(SendMessage(chat_id=-100, text="first"))
    for _ in range(200):
        if session.requests_of(SendMessage):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the pause is shared
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(two.send(SendMessage(chat_id=-100, text="second")), 5)
    assert loop.time() - started > 0.5  # it waited for the pause the other one met
    await asyncio.wait_for(first, 5)
    assert sorted(session.sent_texts(-100)) == ["first", "second"]
    for o in (one, two):
        await o.stop()
    await bot.session.close()
    for s in states:
        await s.close()


# -- order ----------------------------------------------------------------------------------


def lane(u: Update) -> tuple[int, int | None]:
    assert u.message is not None and u.message.from_user is not None
    text = u.message.text or ""
    return u.message.chat.id, None if text.startswith("/") else u.message.from_user.id


async def test_one_members_updates_take_turns_across_instances(
    clients: tuple[Redis, Redis],
) -> None:
    one = MemberOrder(clients[0], lane, prefix="t")
    two = MemberOrder(clients[1], lane, prefix="t")
    log: list[str] = []
    release, started = asyncio.Event(), asyncio.Event()

    async def slow(event: Any, data: dict[str, Any]) -> None:
        log.append(f"start {event.update_id}")
        started.set()
        await release.wait()
        log.append(f"end {event.update_id}")

    async def quick(event: Any, data: dict[str, Any]) -> None:
        log.append(f"run {event.update_id}")

    first = asyncio.create_task(one(slow, update(1, user=7), {"bot": BOT}))
    await started.wait()
    same = asyncio.create_task(two(quick, update(2, user=7), {"bot": BOT}))
    other = asyncio.create_task(two(quick, update(3, user=8), {"bot": BOT}))
    await other  # another member is not held up
    await asyncio.sleep(0.1)
    assert log == ["start 1", "run 3"]
    release.set()
    await asyncio.gather(first, same)
    assert log == ["start 1", "run 3", "end 1", "run 2"]


async def test_a_command_waits_for_the_chat_and_the_chat_waits_for_it(
    clients: tuple[Redis, Redis],
) -> None:
    one = MemberOrder(clients[0], lane, prefix="t")
    two = MemberOrder(clients[1], lane, prefix="t")
    log: list[str] = []
    gates = {1: asyncio.Event(), 2: asyncio.Event()}
    started = {1: asyncio.Event(), 2: asyncio.Event()}

    async def held(event: Any, data: dict[str, Any]) -> None:
        log.append(f"start {event.update_id}")
        started[event.update_id].set()
        await gates[event.update_id].wait()
        log.append(f"end {event.update_id}")

    async def quick(event: Any, data: dict[str, Any]) -> None:
        log.append(f"run {event.update_id}")

    command = update(2, user=8)
    assert command.message is not None
    object.__setattr__(command.message, "text", "/vote")
    member = asyncio.create_task(one(held, update(1, user=7), {"bot": BOT}))
    await started[1].wait()
    barrier = asyncio.create_task(two(held, command, {"bot": BOT}))
    await asyncio.sleep(0.1)
    assert log == ["start 1"]  # the command waits for the member's update in hand
    later = asyncio.create_task(one(quick, update(3, user=9), {"bot": BOT}))
    elsewhere = asyncio.create_task(one(quick, update(4, chat=-200, user=9), {"bot": BOT}))
    await elsewhere  # another chat is not held up
    gates[1].set()
    await member
    await started[2].wait()
    await asyncio.sleep(0.1)
    assert log == ["start 1", "run 4", "end 1", "start 2"]  # update 3 waits for the command
    gates[2].set()
    await asyncio.gather(barrier, later)
    assert log == ["start 1", "run 4", "end 1", "start 2", "end 2", "run 3"]


async def test_a_turn_left_by_a_dead_instance_runs_out(clients: tuple[Redis, Redis]) -> None:
    dead = MemberOrder(clients[0], lane, prefix="t", hold=0.3)
    alive = MemberOrder(clients[1], lane, prefix="t")
    keys = dead.keys(BOT.id, update(1, user=7))
    assert await dead._take(keys, "dead:1", 1)  # and never let go
    ran: list[int] = []

    async def quick(event: Any, data: dict[str, Any]) -> None:
        ran.append(event.update_id)

    await asyncio.wait_for(alive(quick, update(2, user=7), {"bot": BOT}), 5)
    assert ran == [2]


# -- boards ---------------------------------------------------------------------------------


async def test_a_board_is_refreshed_once_per_interval_among_the_instances(
    clients: tuple[Redis, Redis],
) -> None:
    one = RedisPacing(clients[0], prefix="t", instance="one")
    two = RedisPacing(clients[1], prefix="t", instance="two")
    assert await one.turn("check-in board", -100, 0.3) == 0
    assert 0 < await two.turn("check-in board", -100, 0.3) <= 0.3
    assert await two.turn("check-in board", -200, 0.3) == 0  # another pond
    assert await two.turn("lottery board", -100, 0.3) == 0  # another board
    await asyncio.sleep(0.35)
    assert await two.turn("check-in board", -100, 0.3) == 0


# -- caches ----------------------------------------------------------------------------------


async def test_a_cache_entry_dropped_in_one_instance_is_dropped_in_the_others(
    clients: tuple[Redis, Redis],
) -> None:
    one = RedisPeers(clients[0], prefix="t", instance="one")
    two = RedisPeers(clients[1], prefix="t", instance="two")
    heard_one: list[Any] = []
    heard_two: list[Any] = []
    one.on("admins", heard_one.append)
    # dropping what was told tells nobody again (no echo between instances)
    def forget(key: Any) -> None:
        heard_two.append(key)
        two.tell("admins", key)

    two.on("admins", forget)
    await one.start()
    await two.start()
    one.tell("admins", -100)
    one.tell("pond", None)
    await one.flush()
    for _ in range(200):
        if heard_two:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert heard_two == [-100]
    assert heard_one == []
    await one.close()
    await two.close()


def test_no_peers_is_a_no_op() -> None:
    NO_PEERS.tell("admins", 1)
    NO_PEERS.on("admins", print)


# -- configuration ---------------------------------------------------------------------------


async def test_redis_url_connects_and_a_dead_one_stops_the_start_without_showing_it(
    redis_url: str,
) -> None:
    from bot.app import _connect_shared
    from bot.config import Settings

    assert await _connect_shared(Settings(redis_url=None)) is None
    shared = await _connect_shared(Settings(redis_url=redis_url))  # type: ignore[arg-type]
    assert shared is not None
    await shared.close()
    dead = "redis://:s3cret-pass@127.0.0.1:1/0"
    with pytest.raises(SystemExit) as stopped:
        await _connect_shared(Settings(redis_url=dead))  # type: ignore[arg-type]
    assert "s3cret" not in str(stopped.value) and "REDIS_URL" in str(stopped.value)

