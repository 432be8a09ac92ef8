"""Per-update cost with a small and a big database: does it grow with the members?

    .venv/bin/python bench/scale.py [--small 1000] [--big 100000] [--n 2000] [--plans]

The check-in button bench (bench/checkin.py) and the red-packet grab bench
(bench/redpacket.py), with their own machinery — the production Dispatcher, a real
SQLite file, the spec-validating fake Bot API session, batches through `handle_batch` —
run twice: once with `small` members already in the pond, once with `big` (rows written
straight into SQLite by bench/fill.py after the warm-up: member, membership, a few
ledger entries and a few days of check-ins each). The N members who press are new, as
in the benches themselves; only the database around them differs. Each measurement runs
twice (two sets of N members) and keeps its best, and the small and the big database take
turns (twice by default). Prints the cost per update with each database and their ratio
(small / big: 1.0 is flat, the aim is within ±20 %).

`--plans` also prints every distinct statement that the measured rounds and an operator's
`/stats` ran on the big database whose SQLite query plan (`EXPLAIN QUERY PLAN`) scans a
whole table: what would grow with the members.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import resource
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiogram.types import Message, MessageEntity, Update  # noqa: E402
from sqlalchemy import event  # noqa: E402

from bench import checkin, redpacket  # noqa: E402
from bench.fill import fill_members  # noqa: E402
from bench.support import SHOP_OWNER, Failures, Rig, rig  # noqa: E402
from bot.runtime import tune_gc  # noqa: E402
from storage import ledger  # noqa: E402

FIRST_MEMBER = 10_000_000


def fill(r: Rig, chat_id: int, members: int) -> range:
    """`members` members of `chat_id`, with some history each; returns their ids."""
    path = Path(str(r.db.url.database))
    ids = range(FIRST_MEMBER, FIRST_MEMBER + members)
    # History ends two days ago: no member has checked in today in any time zone.
    fill_members(path, chat_id, ids, entries_per_member=3, checkin_days=3,
                 now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    return ids


class Statements:
    """Every distinct statement (with its first parameters) run while recording."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}
        self.on = False
        self.report: list[tuple[str, list[str]]] = []

    def install(self, r: Rig) -> None:
        @event.listens_for(r.db.engine.sync_engine, "before_cursor_execute")
        def _seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any,
                  executemany: bool) -> None:
            if self.on and statement not in self.seen:
                self.seen[statement] = parameters[0] if executemany else parameters

    @contextmanager
    def recording(self) -> Iterator[None]:
        self.on = True
        try:
            yield
        finally:
            self.on = False

    def growing(self, path: Path) -> list[tuple[str, list[str]]]:
        """Statements whose plan scans a whole table."""
        con = sqlite3.connect(path)
        out = []
        try:
            for sql, params in self.seen.items():
                try:
                    plan = [row[3] for row in con.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
                except sqlite3.Error as exc:
                    plan = [f"(no plan: {exc})"]
                if any(p.startswith("SCAN") and "CONSTANT ROW" not in p for p in plan):
                    out.append((sql, plan))
        finally:
            con.close()
        return out


async def checkin_cost(members: int, n: int, batch: int, statements: Statements | None
                       ) -> float:
    """Seconds per button check-in with `members` in the pond."""
    async with rig(checkin.bare_dispatcher()) as r:
        if statements is not None:
            statements.install(r)
        make = checkin.button_update
        await checkin.feed(r.dp, r.bot, make, range(1, 301), 1, batch)
        await r.dp["boards"].idle()
        fill(r, checkin.POND.id, members)
        tune_gc()
        best = float("inf")
        for k in range(2):
            users = range(1_000_000 + k * n, 1_000_000 + (k + 1) * n)
            with statements.recording() if statements else _nothing():
                seconds = await checkin.feed(r.dp, r.bot, make, users, 10_000 + k * n, batch)
            best = min(best, seconds)
        if statements is not None:
            with statements.recording():  # an operator's report on the big pond
                await stats(r)
            statements.report += statements.growing(Path(str(r.db.url.database)))
        await r.outbox.stop()
        async with r.db.transaction(readonly=True) as s:
            report = await ledger.check_invariant(s)
        assert report.ok, report
    return best / n


async def stats(r: Rig) -> None:
    """`/stats` typed by the shop's owner in the pond."""
    text = "/stats"
    await r.dp.feed_update(r.bot, Update(update_id=99_999, message=Message(
        message_id=99_999, date=checkin.BOARD.date, chat=checkin.POND, from_user=SHOP_OWNER,
        text=text, entities=[MessageEntity(type="bot_command", offset=0, length=len(text))],
    )))


async def grab_cost(members: int, n: int, shares: int, batch: int,
                    statements: Statements | None) -> float:
    """Seconds per red-packet grab with `members` in the pond."""
    async with rig(redpacket.bare_dispatcher(),
                   operator_ids=frozenset({redpacket.OPERATOR})) as r:
        if statements is not None:
            statements.install(r)
        dp, bot, db, outbox = r.dp, r.bot, r.db, r.outbox
        pid, mid = await redpacket.drop(dp, bot, db, outbox, 20, 1)
        warm = redpacket.grabs(10, range(5_000_000, 5_000_300), pid, mid, batch)
        await redpacket.feed(dp, bot, warm, r.session, redpacket.ignore)
        fill(r, redpacket.POND.id, members)
        tune_gc()
        best = float("inf")
        next_update = 100_000
        for k in range(2):
            users = range(1_000_000 + k * n, 1_000_000 + (k + 1) * n)
            pid, mid = await redpacket.drop(dp, bot, db, outbox, shares, next_update)
            updates = redpacket.grabs(next_update + 1, users, pid, mid, batch)
            next_update += n + 10
            with statements.recording() if statements else _nothing():
                seconds, _ = await redpacket.feed(dp, bot, updates, r.session, redpacket.ignore)
            best = min(best, seconds)
            await redpacket.settle(outbox)
            await redpacket.exact(db, pid, shares)
        if statements is not None:
            statements.report += statements.growing(Path(str(db.url.database)))
    return best / n


@contextmanager
def _nothing() -> Iterator[None]:
    yield


async def run(small: int, big: int, n: int, shares: int, batch: int, plans: bool,
              turns: int) -> dict[str, Any]:
    statements = Statements() if plans else None
    out: dict[str, Any] = {"statements": statements}
    # Small and big take turns, each keeping its best: a process's first rounds and a
    # neighbour's load weigh on both alike.
    for turn in range(turns):
        for size, members in (("small", small), ("big", big)):
            record = statements if turn == 0 and size == "big" else None
            cost = await checkin_cost(members, n, batch, record)
            out[f"checkin_{size}"] = min(out.get(f"checkin_{size}", cost), cost)
            cost = await grab_cost(members, n, shares, batch, record)
            out[f"grab_{size}"] = min(out.get(f"grab_{size}", cost), cost)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000, help="members, small (1000)")
    parser.add_argument("--big", type=int, default=100_000, help="members, big (100000)")
    parser.add_argument("--n", type=int, default=2000, help="members pressing (2000)")
    parser.add_argument("--shares", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100,
                        help="updates per getUpdates batch (100, Telegram's maximum)")
    parser.add_argument("--turns", type=int, default=2,
                        help="times the small and the big database take turns (2)")
    parser.add_argument("--plans", action="store_true",
                        help="print the statements whose plan scans a whole table")
    args = parser.parse_args(argv)
    failures = Failures.installed()
    r = asyncio.run(run(args.small, args.big, args.n, args.shares, args.batch, args.plans,
                        args.turns))
    if failures.records:
        raise SystemExit(f"{len(failures.records)} errors logged, the first: "
                         f"{failures.records[0].getMessage()}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scale: N={args.n} members pressing, with {args.small} and {args.big} members in "
          f"the pond, batches of {args.batch}, SQLite file")
    for label, key in (("check-in button", "checkin"), ("red-packet grab", "grab")):
        small_ms, big_ms = r[f"{key}_small"] * 1000, r[f"{key}_big"] * 1000
        print(f"  [{label}]")
        print(f"    {args.small:>7} members: {small_ms:6.3f} ms/update")
        print(f"    {args.big:>7} members: {big_ms:6.3f} ms/update")
        print(f"    ratio: {small_ms / big_ms:.2f}   (flat: 1.00, aim within 0.80-1.20)")
    if r["statements"] is not None:
        report = dict(r["statements"].report)
        print(f"  statements that scan a whole table: {len(report)}")
        for sql, plan in report.items():
            print("    " + " ".join(sql.split()))
            for line in plan:
                print(f"      {line}")
    print(f"  peak RSS: {rss_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
