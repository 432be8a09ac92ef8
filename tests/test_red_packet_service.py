"""The red packets' machinery on its own (services/red_packets.py): turns per packet,
grabs batched behind a turn, the closed-packet memory and its answers, the password
index and its expiry, the order of progress edits. A real SQLite file; the scheduler
and the outbox are the two small recorders below."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from games.red_packet import PacketArgs, PacketState, Refusal, SplitMode
from services.i18n import make_i18n
from services.red_packets import (
    BadArgs,
    KeyedLock,
    MembersMayNotSend,
    PasswordIndex,
    RedPackets,
    Sender,
)
from storage import red_packets, repo
from storage.db import Database
from storage.red_packets import Grab, GrabRequest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POND = -100700
OTHER_POND = -100701
SHOP = repo.UserInfo(1, "Shop")
MEMBERS = [repo.UserInfo(100 + i, f"M{i}") for i in range(12)]


class Deadlines:
    """The scheduler as the service sees it: a clock and the expiry tasks."""

    def __init__(self) -> None:
        self.now = T0
        self.scheduled: list[str] = []
        self.cancelled: list[str] = []

    def clock(self) -> datetime:
        return self.now

    async def schedule(self, at: datetime, job: str, key: str, payload: Any = None,
                       **_: Any) -> bool:
        self.scheduled.append(key)
        return True

    async def cancel(self, key: str, **_: Any) -> bool:
        self.cancelled.append(key)
        return True


class Boards:
    """The outbox as the service's progress edits see it."""

    def __init__(self) -> None:
        self.edits: list[tuple[str, str]] = []

    def board(self, key: str, method: Any, *, version: int | None = None) -> None:
        self.edits.append((key, method.text))


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(sqlite_url)
    async with database.transaction() as s:
        await repo.upsert_pond(s, POND, title="P", chat_type="supergroup")
    try:
        yield database
    finally:
        await database.dispose()


async def packet(db: Database, shares: int, *, password: str | None = None,
                 key: str = "k", message_id: int | None = 50) -> int:
    args = PacketArgs(total=shares * 10, shares=shares, mode=SplitMode.equal,
                      password=password, expiry=timedelta(hours=1))
    async with db.transaction() as s:
        created = await red_packets.create(
            s, chat_id=POND, funder=None, funder_name="Shop", shop_funded=True, args=args,
            amounts=[10] * shares, source_key=key, now=T0,
        )
        if message_id is not None:
            await red_packets.set_message(s, created.card.id, message_id)
    return created.card.id


def press(user: repo.UserInfo, chat_id: int = POND) -> GrabRequest:
    return GrabRequest(user, chat_id, 50, False)


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every `grab_many` the service runs."""
    sizes: list[int] = []
    real = red_packets.grab_many

    async def counted(session: Any, packet_id: int, requests: Sequence[GrabRequest],
                      **kw: Any) -> list[Grab] | None:
        sizes.append(len(requests))
        return await real(session, packet_id, requests, **kw)

    monkeypatch.setattr(red_packets, "grab_many", counted)
    return sizes


# -- turns ----------------------------------------------------------------------------


async def test_a_keyed_lock_serialises_one_key_lets_others_pass_and_forgets_idle_keys() -> None:
    turns = KeyedLock()
    order: list[str] = []
    release = asyncio.Event()

    async def hold(key: int, name: str, wait: bool) -> None:
        async with turns.hold(key):
            order.append(f"{name} in")
            if wait:
                await release.wait()
            order.append(f"{name} out")

    first = asyncio.create_task(hold(1, "a", True))
    second = asyncio.create_task(hold(1, "b", False))
    await asyncio.sleep(0)
    await hold(2, "c", False)  # another key does not wait for key 1
    assert order == ["a in", "c in", "c out"]
    assert len(turns) == 1  # key 2 forgotten at once; key 1 held and awaited
    release.set()
    await asyncio.gather(first, second)
    assert order[3:] == ["a out", "b in", "b out"]
    assert len(turns) == 0


# -- batches --------------------------------------------------------------------------


async def test_grabs_waiting_behind_a_turn_are_one_batch_and_late_ones_need_no_database(
    db: Database, batches: list[int]
) -> None:
    service, deadlines = RedPackets(random.Random(1)), Deadlines()
    packet_id = await packet(db, 3)
    grabs = await asyncio.gather(
        *(service.grab(db, deadlines, packet_id, press(m)) for m in MEMBERS[:10])
    )
    assert batches == [1, 9]  # the first alone; everyone who came meanwhile together
    assert [g.amount for g in grabs[:3]] == [10, 10, 10]
    assert {g.refused for g in grabs[3:]} == {Refusal.gone}
    assert deadlines.cancelled == [red_packets.expiry_task_key(packet_id)]
    assert service.is_closed(packet_id)

    late = await service.grab(db, deadlines, packet_id, press(MEMBERS[11]))
    again = await service.grab(db, deadlines, packet_id, press(MEMBERS[0]))
    elsewhere = await service.grab(db, deadlines, packet_id, press(MEMBERS[11], OTHER_POND))
    assert (late.refused, again.refused, elsewhere.refused) == (
        Refusal.gone, Refusal.already, Refusal.wrong_chat,
    )
    assert batches == [1, 9]  # answered from memory
    async with db.transaction(readonly=True) as s:
        assert await red_packets.paid_out(s, packet_id) == 30


async def test_a_failed_turn_leaves_the_others_queued_for_the_next_turn(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, deadlines = RedPackets(), Deadlines()
    packet_id = await packet(db, 5)
    real = red_packets.grab_many
    calls: list[list[int]] = []

    async def flaky(session: Any, pid: int, requests: Sequence[GrabRequest],
                    **kw: Any) -> list[Grab] | None:
        calls.append([r.user.id for r in requests])
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return await real(session, pid, requests, **kw)

    monkeypatch.setattr(red_packets, "grab_many", flaky)
    results = await asyncio.gather(
        *(service.grab(db, deadlines, packet_id, press(m)) for m in MEMBERS[:4]),
        return_exceptions=True,
    )
    ids = [m.id for m in MEMBERS[:4]]
    # The second turn (members 1–3) failed for its holder only; the other two are
    # grabbed in the next turn.
    assert calls == [ids[:1], ids[1:], ids[2:]]
    assert isinstance(results[1], RuntimeError)
    assert [r.amount for r in results if isinstance(r, Grab)] == [10, 10, 10]


# -- the closed-packet memory ---------------------------------------------------------


async def test_a_closed_packet_is_answered_from_memory_by_chat_grabber_and_state(
    db: Database,
) -> None:
    service, deadlines = RedPackets(), Deadlines()
    packet_id = await packet(db, 1)
    assert service.known_refusal(packet_id, POND, MEMBERS[0].id) is None  # not known
    got = await service.grab(db, deadlines, packet_id, press(MEMBERS[0]))
    assert got.amount == 10 and got.closed is PacketState.finished
    assert service.known_refusal(packet_id, POND, MEMBERS[0].id) is Refusal.already
    assert service.known_refusal(packet_id, POND, MEMBERS[1].id) is Refusal.gone
    assert service.known_refusal(packet_id, OTHER_POND, MEMBERS[1].id) is Refusal.wrong_chat
    assert service.known_refusal(packet_id, None, MEMBERS[1].id) is Refusal.wrong_chat

    expiring = await packet(db, 2, key="k2")
    deadlines.now = T0 + timedelta(hours=2)  # past its time, before the expiry job ran
    late = await service.grab(db, deadlines, expiring, press(MEMBERS[1]))
    assert late.refused is Refusal.expired
    assert service.known_refusal(expiring, POND, MEMBERS[2].id) is Refusal.expired


# -- passwords ------------------------------------------------------------------------


async def test_the_password_index_reads_each_pond_once_per_ttl_or_after_invalidation(
    db: Database,
) -> None:
    ticks = [0.0]
    index = PasswordIndex(ttl=3.0, clock=lambda: ticks[0])
    first = await packet(db, 2, password="老客福利", key="a")
    assert await index.match(db, POND, " 老客福利 ", lambda: T0) == first
    second = await packet(db, 2, password="新客", key="b")
    ticks[0] = 2.9
    assert await index.match(db, POND, "新客", lambda: T0) is None  # remembered for 3 s
    ticks[0] = 3.0
    assert await index.match(db, POND, "新客", lambda: T0) == second  # read again
    third = await packet(db, 2, password="三号", key="c")
    assert await index.match(db, POND, "三号", lambda: T0) is None
    index.invalidate(POND)
    assert await index.match(db, POND, "三号", lambda: T0) == third
    # The database's clock decides which packets are still open.
    index.invalidate(POND)
    assert await index.match(db, POND, "三号", lambda: T0 + timedelta(hours=2)) is None
    assert await index.match(db, POND, "hello", lambda: T0) is None  # chatter: no read


async def test_a_new_password_packet_is_matched_at_once(db: Database) -> None:
    service, deadlines = RedPackets(random.Random(3)), Deadlines()
    clock = deadlines.clock
    assert await service.passwords.match(db, POND, "口令", clock) is None  # remembered
    sender = Sender(SHOP, "Shop", operator=True, global_operator=True, actor_id=SHOP.id)
    dropped = await service.create(
        db, deadlines, chat_id=POND, text="20 2 pwd=口令", sender=sender,
        source_key="s1", timezone="Asia/Shanghai",
    )
    assert dropped.needs_post and dropped.card.password == "口令"
    assert deadlines.scheduled == [red_packets.expiry_task_key(dropped.card.id)]
    assert await service.passwords.match(db, POND, "口令", clock) == dropped.card.id


# -- making packets -------------------------------------------------------------------


async def test_create_refuses_bad_args_and_members_where_only_operators_send(
    db: Database,
) -> None:
    service, deadlines = RedPackets(), Deadlines()
    member = MEMBERS[0]
    sender = Sender(member, "M0", operator=False, global_operator=False, actor_id=member.id)
    with pytest.raises(BadArgs) as bad:
        await service.create(db, deadlines, chat_id=POND, text="5 10", sender=sender,
                             source_key="x", timezone="UTC")
    assert bad.value.code == "share_below_one" and bad.value.limits.max_shares == 200
    async with db.transaction() as s:
        await repo.change_pond_settings(s, POND, redpacket_members_may_send=False)
    with pytest.raises(MembersMayNotSend):
        await service.create(db, deadlines, chat_id=POND, text="10 2", sender=sender,
                             source_key="y", timezone="UTC")
    assert deadlines.scheduled == []


async def test_a_redelivered_command_needs_a_post_only_while_its_post_is_missing(
    db: Database,
) -> None:
    service, deadlines = RedPackets(), Deadlines()
    sender = Sender(SHOP, "Shop", operator=True, global_operator=True, actor_id=SHOP.id)

    async def drop() -> Any:
        return await service.create(db, deadlines, chat_id=POND, text="10 2", sender=sender,
                                    source_key="same", timezone="UTC")

    first = await drop()
    assert first.needs_post
    assert (await drop()).needs_post  # its post never went out: post it
    async with db.transaction() as s:
        await red_packets.set_message(s, first.card.id, 77)
    again = await drop()
    assert not again.needs_post and again.card.id == first.card.id
    assert len(deadlines.scheduled) == 1  # made, funded and scheduled once


# -- progress edits -------------------------------------------------------------------


async def test_progress_edits_never_go_back_and_the_result_is_the_last_word(
    db: Database,
) -> None:
    service, deadlines, boards = RedPackets(), Deadlines(), Boards()
    packet_id = await packet(db, 3)
    grabs = [await service.grab(db, deadlines, packet_id, press(m)) for m in MEMBERS[:3]]
    first, second, last = grabs
    assert first.card is not None and second.card is not None and last.card is not None
    with make_i18n("en").context():
        await _show_out_of_order(db, service, deadlines, boards, packet_id, grabs)


async def _show_out_of_order(db: Database, service: RedPackets, deadlines: Deadlines,
                             boards: Boards, packet_id: int, grabs: list[Grab]) -> None:
    first, second, last = grabs
    service.after(second, boards, "UTC")  # type: ignore[arg-type]
    service.after(first, boards, "UTC")  # type: ignore[arg-type]  # older: not shown
    assert len(boards.edits) == 1 and "2/3" in boards.edits[0][1]
    service.after(last, boards, "UTC")  # type: ignore[arg-type]
    service.after(second, boards, "UTC")  # type: ignore[arg-type]
    assert [key for key, _ in boards.edits] == [f"rp:{packet_id}"] * 2
    assert "2/3" not in boards.edits[1][1]  # the result, and nothing after it

    unposted = await packet(db, 1, key="u", message_id=None)
    got = await service.grab(db, deadlines, unposted, GrabRequest(MEMBERS[0], POND, None, True))
    service.after(got, boards, "UTC")  # type: ignore[arg-type]
    assert len(boards.edits) == 2  # no post yet: nothing to edit
