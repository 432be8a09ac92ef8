"""Check-in throughput against the floor of aiogram itself.

    .venv/bin/python bench/checkin.py [--n 5000] [--kind button|text] [--batch 100]

N distinct members check in, through the production Dispatcher (`build_dispatcher`),
a real SQLite file (migrated) and the spec-validating fake Bot API session of the test
rig, fed as long polling feeds them: batches of `batch` through the production
`handle_batch` (members concurrently; a batch is durable before the next). Measured in
the same run, with the same kind of updates fed the same way through the same kind of
fake session: a bare aiogram Dispatcher whose only handler answers once. Each side runs
twice and keeps its best. Prints both rates, their ratio and the peak RSS.

* `button`: each member presses the board's 签到 button; both dispatchers answer the
  callback query (a toast).
* `text`: each member types 签到; the bare handler replies with one sendMessage, the
  real one updates the pond's board (coalesced) and replies only while the pond is quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiogram import Bot, Dispatcher, Router  # noqa: E402
from aiogram.methods import AnswerCallbackQuery, SendMessage  # noqa: E402
from aiogram.types import CallbackQuery, Chat, Message, Update, User  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench.support import Failures, rig  # noqa: E402
from bot.polling import handle_batch  # noqa: E402
from bot.runtime import tune_gc  # noqa: E402
from services.checkin_board import CheckinButton  # noqa: E402
from storage import ledger  # noqa: E402
from storage.models import Checkin  # noqa: E402
from tests.rig.fake_session import BOT_ID  # noqa: E402

POND = Chat(id=-1001000000777, type="supergroup", title="Bench pond")
BOARD = Message(
    message_id=1,
    date=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
    chat=POND,
    from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"),
    text="board",
)

UpdateFactory = Callable[[int, int], Update]


def button_update(update_id: int, user_id: int) -> Update:
    user = User(id=user_id, is_bot=False, first_name=f"Member{user_id}")
    return Update(
        update_id=update_id,
        callback_query=CallbackQuery(
            id=f"q{update_id}", from_user=user, chat_instance="bench", message=BOARD,
            data=CheckinButton(chat_id=POND.id).pack(),
        ),
    )


def text_update(update_id: int, user_id: int) -> Update:
    user = User(id=user_id, is_bot=False, first_name=f"Member{user_id}")
    return Update(
        update_id=update_id,
        message=Message(message_id=update_id, date=BOARD.date, chat=POND, from_user=user,
                        text="签到"),
    )


def bare_dispatcher() -> Dispatcher:
    """The floor: aiogram routing one update to a handler that answers once."""
    router = Router()

    @router.callback_query()
    async def toast(query: CallbackQuery, bot: Bot) -> None:
        await bot(AnswerCallbackQuery(callback_query_id=query.id, text="✅ +5"))

    @router.message()
    async def answer(message: Message, bot: Bot) -> None:
        await bot(SendMessage(chat_id=message.chat.id, text="✅ +5"))

    dp = Dispatcher()
    dp.include_router(router)
    return dp


async def feed(
    dp: Dispatcher, bot: Bot, make: UpdateFactory, users: range, first_update: int, batch: int
) -> float:
    """One update per user, fed as long polling does: batches of `batch` through the
    production `handle_batch` (members concurrently; durable before the next batch)."""
    updates = [make(first_update + i, uid) for i, uid in enumerate(users)]
    started = time.perf_counter()
    for i in range(0, len(updates), batch):
        await handle_batch(dp, bot, updates[i : i + batch])
    return time.perf_counter() - started


async def run(n: int, kind: str, batch: int, warmup: int) -> dict[str, float]:
    make = button_update if kind == "button" else text_update
    async with rig(bare_dispatcher()) as r:
        dp, bot, bare, floor_bot = r.dp, r.bot, r.bare, r.floor_bot
        # Warm both up (imports, statement caches, the pond's first sighting).
        await feed(bare, floor_bot, make, range(1, warmup + 1), 1, batch)
        await feed(dp, bot, make, range(1, warmup + 1), 1, batch)
        await dp["boards"].idle()
        tune_gc()  # as `pondbot run` does once it serves (applies to both dispatchers)

        # Each side runs twice and keeps its best: the floor over the same members, the
        # real dispatcher over two sets of members (a member checks in once a day).
        users = range(1_000_000, 1_000_000 + n)
        others = range(2_000_000, 2_000_000 + n)
        floor_s = await feed(bare, floor_bot, make, users, 10_000, batch)
        real_s = await feed(dp, bot, make, users, 10_000, batch)
        floor_again_s = await feed(bare, floor_bot, make, users, 20_000, batch)
        real_again_s = await feed(dp, bot, make, others, 30_000, batch)
        await dp["boards"].idle()
        await r.outbox.stop()

        async with r.db.transaction(readonly=True) as s:
            checkins = await s.scalar(select(func.count()).select_from(Checkin))
            report = await ledger.check_invariant(s)
        members = 2 * n + warmup
        assert checkins == members, f"{checkins} check-ins for {members} members"
        assert report.ok and report.entries_total == 5 * members, report
        writer = dp["writer"]
        session = r.session
    floor = n / min(floor_s, floor_again_s)
    real = n / min(real_s, real_again_s)
    return {
        "checkins_per_s": real,
        "floor_per_s": floor,
        "ratio": real / floor,
        "batches": float(writer.batches),
        "largest_batch": float(writer.largest),
        "answers": float(len(session.requests_of(AnswerCallbackQuery))),
        "group_messages": float(sum(1 for r in session.requests
                                    if getattr(r, "chat_id", None) == POND.id)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="distinct members (default 5000)")
    parser.add_argument("--kind", choices=("button", "text"), default="button")
    parser.add_argument("--batch", type=int, default=100,
                        help="updates per getUpdates batch (100, Telegram's maximum)")
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args(argv)
    failures = Failures.installed()
    r = asyncio.run(run(args.n, args.kind, args.batch, args.warmup))
    if failures.records:
        raise SystemExit(f"{len(failures.records)} errors logged, the first: "
                         f"{failures.records[0].getMessage()}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"check-ins ({args.kind}), N={args.n}, batches of {args.batch}, SQLite file")
    print(f"  pondbot (build_dispatcher):  {r['checkins_per_s']:8.0f} check-ins/s")
    print(f"  bare aiogram, answers once:  {r['floor_per_s']:8.0f} updates/s")
    print(f"  ratio: {r['ratio']:.2f}   (target >= 0.5)")
    print(f"  writer transactions: {r['batches']:.0f} (largest batch {r['largest_batch']:.0f});"
          f" callback answers {r['answers']:.0f}; group messages {r['group_messages']:.0f}")
    print(f"  peak RSS: {rss_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
