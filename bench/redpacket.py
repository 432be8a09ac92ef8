"""Red packet grabs against the floor of aiogram itself.

    .venv/bin/python bench/redpacket.py [--n 10000] [--shares 100] [--batch 100]

N distinct members press the grab button of one packet of `shares` shares, through the
production Dispatcher (`build_dispatcher`), a real SQLite file (migrated) and the
spec-validating fake Bot API session of the test rig, fed as long polling feeds them:
batches of `batch` updates through the production `handle_batch`. Measured in the same
run, with the same updates fed the same way
through the same kind of fake session: a bare aiogram Dispatcher whose only handler
answers the callback once. Prints grabs/s, p50/p99 latency per update, the ratio to the
bare Dispatcher, and the peak RSS.

Two rounds: `first sight` — every grabber is new to the bot, so the tracking middleware
records 10,000 members on the way; `known members` — a second packet grabbed by the same
members, which isolates the grab itself. The result must be exact in both: `shares`
winners, the sum of their credits equal to the total, every callback answered once.

Like a bot, the bench holds only the batch in hand: each batch's updates are built as it
is fed (not timed, for both dispatchers alike), and what the fake sessions recorded is
tallied and let go after each batch.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiogram import Bot, Dispatcher, Router  # noqa: E402
from aiogram.methods import AnswerCallbackQuery, TelegramMethod  # noqa: E402
from aiogram.types import CallbackQuery, Chat, Message, MessageEntity, Update, User  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bench.support import Failures, drain, rig  # noqa: E402
from bot.polling import handle_batch  # noqa: E402
from bot.runtime import tune_gc  # noqa: E402
from services.outbox import Outbox  # noqa: E402
from services.red_packets import RedPacketCB  # noqa: E402
from storage import ledger  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.models import LedgerEntry, RedPacket  # noqa: E402
from tests.rig.fake_session import BOT_ID, FakeSession  # noqa: E402

POND = Chat(id=-1001000000888, type="supergroup", title="Bench pond")
OPERATOR = 900_001
TOTAL_PER_SHARE = 10
DATE = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


def post(message_id: int) -> Message:
    return Message(
        message_id=message_id, date=DATE, chat=POND,
        from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"), text="🧧",
    )


def grab_update(update_id: int, user_id: int, packet_id: int, message_id: int) -> Update:
    user = User(id=user_id, is_bot=False, first_name=f"Member{user_id}")
    return Update(
        update_id=update_id,
        callback_query=CallbackQuery(
            id=f"q{update_id}", from_user=user, chat_instance="bench",
            message=post(message_id), data=RedPacketCB(id=packet_id).pack(),
        ),
    )


def grabs(first_update: int, users: range, packet_id: int, message_id: int, batch: int
          ) -> Iterator[list[Update]]:
    """One grab per member, built one getUpdates batch at a time as it is fed."""
    for i in range(0, len(users), batch):
        yield [grab_update(first_update + i + j, uid, packet_id, message_id)
               for j, uid in enumerate(users[i : i + batch])]


class Answers:
    """How many times each of a round's callbacks was answered: a byte per update, filled
    batch by batch from what the session recorded (which is then let go)."""

    def __init__(self, first_update: int, n: int) -> None:
        self.first = first_update
        self.times = bytearray(n)
        self.others = 0  # answers to callbacks outside the round

    def tally(self, requests: Sequence[TelegramMethod[Any]]) -> None:
        for request in requests:
            if isinstance(request, AnswerCallbackQuery):
                i = int(request.callback_query_id.removeprefix("q")) - self.first
                if 0 <= i < len(self.times):
                    self.times[i] = min(self.times[i] + 1, 255)
                else:
                    self.others += 1

    def exactly_once(self) -> None:
        assert self.times.count(1) == len(self.times), Counter(self.times)


def ignore(_requests: Sequence[TelegramMethod[Any]]) -> None:
    """The floor's answers are not checked."""


def bare_dispatcher() -> Dispatcher:
    """The floor: aiogram routing one update to a handler that answers once."""
    router = Router()

    @router.callback_query()
    async def toast(query: CallbackQuery, bot: Bot) -> None:
        await bot(AnswerCallbackQuery(callback_query_id=query.id, text="🎉"))

    dp = Dispatcher()
    dp.include_router(router)
    return dp


class Timed:
    """A dispatcher as `handle_batch` sees it, noting when each update is done."""

    def __init__(self, dp: Dispatcher, since: float, latencies: list[float]) -> None:
        self.dp = dp
        self.workflow_data = dp.workflow_data
        self.since = since
        self.latencies = latencies

    async def feed_update(self, bot: Bot, update: Update, **kwargs: Any) -> Any:
        result = await self.dp.feed_update(bot, update, **kwargs)
        self.latencies.append(time.perf_counter() - self.since)
        return result


async def feed(dp: Dispatcher, bot: Bot, batches: Iterator[list[Update]],
               session: FakeSession, tally: Callable[[Sequence[TelegramMethod[Any]]], None]
               ) -> tuple[float, list[float]]:
    """Feed `batches` as long polling does, each handled by the production `handle_batch`
    (concurrently per member, and durable before the next batch); after each, what
    `session` recorded goes to `tally` and is let go. Returns the seconds spent handling
    and each update's latency from its batch's arrival (a batch is built before it
    arrives: building it is not timed)."""
    latencies: list[float] = []
    spent = 0.0
    for updates in batches:
        arrived = time.perf_counter()
        await handle_batch(Timed(dp, arrived, latencies), bot, updates)  # type: ignore[arg-type]
        spent += time.perf_counter() - arrived
        tally(drain(session))
    return spent, latencies


async def drop(dp: Dispatcher, bot: Bot, db: Database, outbox: Outbox, shares: int,
               update_id: int) -> tuple[int, int]:
    op = User(id=OPERATOR, is_bot=False, first_name="Op")
    text = f"/redpacket {shares * TOTAL_PER_SHARE} {shares} for=1d"
    await dp.feed_update(bot, Update(update_id=update_id, message=Message(
        message_id=update_id, date=DATE, chat=POND, from_user=op, text=text,
        entities=[MessageEntity(type="bot_command", offset=0, length=len("/redpacket"))],
    )))
    await settle(outbox)
    async with db.transaction(readonly=True) as s:
        packet = (await s.execute(
            select(RedPacket).order_by(RedPacket.id.desc())  # type: ignore[union-attr]
        )).scalars().first()
    assert packet is not None and packet.message_id is not None
    return int(packet.id), int(packet.message_id)  # type: ignore[arg-type]


async def settle(outbox: Outbox) -> None:
    """Until the outbox has sent everything queued (it offers a count, not an event)."""
    while outbox.pending():  # noqa: ASYNC110
        await asyncio.sleep(0.001)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


async def exact(db: Database, packet_id: int, shares: int) -> None:
    async with db.transaction(readonly=True) as s:
        rows = (await s.execute(
            select(LedgerEntry.user_id, LedgerEntry.delta)  # type: ignore[call-overload]
            .where(LedgerEntry.idem_key.like(f"rp:{packet_id}:grab:%"))  # type: ignore[attr-defined]
        )).all()
        assert (await ledger.check_invariant(s)).ok
        total = await s.scalar(select(RedPacket.total).where(RedPacket.id == packet_id))  # type: ignore[call-overload]
    assert len(rows) == shares and len({u for u, _ in rows}) == shares, len(rows)
    assert sum(d for _, d in rows) == total


async def run(n: int, shares: int, batch: int) -> list[dict[str, float]]:
    results: list[dict[str, float]] = []
    async with rig(bare_dispatcher(), operator_ids=frozenset({OPERATOR})) as r:
        dp, bot, db, outbox, session = r.dp, r.bot, r.db, r.outbox, r.session
        bare, floor_bot = r.bare, r.floor_bot
        floor_session = r.floor_session
        # Warm-up: imports, statement caches, the pond's first sighting.
        pid, mid = await drop(dp, bot, db, outbox, 20, 1)
        warm = range(5_000_000, 5_000_300)
        await feed(bare, floor_bot, grabs(10, warm, pid, mid, batch), floor_session, ignore)
        await feed(dp, bot, grabs(10, warm, pid, mid, batch), session, ignore)
        await settle(outbox)
        drain(session)
        tune_gc()  # as `pondbot run` does once it serves (applies to both dispatchers)

        users = range(1_000_000, 1_000_000 + n)
        next_update = 100_000
        for label in ("first sight", "known members"):
            pid, mid = await drop(dp, bot, db, outbox, shares, next_update)
            first = next_update + 1
            next_update += n + 10
            answers = Answers(first, n)
            floor_s, floor_lat = await feed(
                bare, floor_bot, grabs(first, users, pid, mid, batch), floor_session, ignore
            )
            real_s, real_lat = await feed(
                dp, bot, grabs(first, users, pid, mid, batch), session, answers.tally
            )
            floor2_s, floor2_lat = await feed(
                bare, floor_bot, grabs(first, users, pid, mid, batch), floor_session, ignore
            )
            if floor2_s < floor_s:
                floor_s, floor_lat = floor2_s, floor2_lat
            await settle(outbox)
            answers.tally(drain(session))
            await exact(db, pid, shares)
            answers.exactly_once()
            results.append({
                "label": label,  # type: ignore[dict-item]
                "grabs_per_s": n / real_s,
                "floor_per_s": n / floor_s,
                "ratio": floor_s / real_s,
                "p50_ms": pct(real_lat, 50),
                "p99_ms": pct(real_lat, 99),
                "floor_p50_ms": pct(floor_lat, 50),
                "floor_p99_ms": pct(floor_lat, 99),
            })
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="distinct members (10000)")
    parser.add_argument("--shares", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100,
                        help="updates per getUpdates batch (100, Telegram's maximum)")
    args = parser.parse_args(argv)
    failures = Failures.installed()
    results = asyncio.run(run(args.n, args.shares, args.batch))
    if failures.records:
        raise SystemExit(f"{len(failures.records)} errors logged, the first: "
                         f"{failures.records[0].getMessage()}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"red packet grabs: N={args.n} members, {args.shares} shares, "
          f"batches of {args.batch}, SQLite file")
    for r in results:
        print(f"  [{r['label']}]  exact: {args.shares} winners, sum = total, "
              f"{args.n} callbacks answered once each")
        print(f"    pondbot (build_dispatcher): {r['grabs_per_s']:8.0f} grabs/s   "
              f"p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms")
        print(f"    bare aiogram, answers once: {r['floor_per_s']:8.0f} updates/s "
              f"p50 {r['floor_p50_ms']:6.2f} ms   p99 {r['floor_p99_ms']:6.2f} ms")
        print(f"    ratio: {r['ratio']:.2f}   (target >= 0.7)")
    print(f"  peak RSS: {rss_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
