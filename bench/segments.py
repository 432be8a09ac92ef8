"""`pondbot export segments` on a generated shop.

    .venv/bin/python bench/segments.py [--members 10000] [--orders-per-ten 50]

A shop of `members` members, all in one pond, and their purchases (on average
`orders-per-ten` / 10 orders each: 50,000 orders for 10,000 members) is generated straight
into a migrated SQLite file with the `sqlite3` module (bench/fill.py's forms): order
counts, amounts, the last purchase and the last time seen vary by member, so every
segment and churn risk occur. Then the real command, `python -m bot export segments
--out FILE`, runs as a process of its own, twice (keeping its best), and the in-process
export (`storage.segments.export_segments`) once.

The exported file must be exact: each member's recency, orders, spend, segment, churn risk
and last seen as worked out here from the generated rows with the rules of
games/segments.py (default thresholds). Prints the counts per segment and the times.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fill import stamp  # noqa: E402
from games.orders import yuan  # noqa: E402
from games.segments import Thresholds, standing  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.segments import SEGMENT_COLUMNS, export_segments  # noqa: E402

CHAT_ID = -1002000000000
# Orders of the members whose id ends in 0, 1, … 9: 50 per ten members.
ORDERS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 11)
DAY = dt.timedelta(days=1)
HALF = dt.timedelta(hours=12)  # times sit mid-day: whole days stay whole for 12 hours


@dataclass(frozen=True, slots=True)
class Shopper:
    user_id: int
    paid: tuple[tuple[dt.datetime, int], ...]  # (paid_at, cents), newest first
    last_seen: dt.datetime
    linked: bool


def shop(members: int, now: dt.datetime, scale: int = 50) -> list[Shopper]:
    """Members 1..`members`: their orders (scaled from ORDERS to `scale` per ten), amounts
    from ¥10 to ¥210, the last purchase 0-199 days ago, last seen 0-59 days ago."""
    out = []
    for uid in range(1, members + 1):
        n = ORDERS[uid % 10] * scale // 50
        last = (uid * 7) % 200
        paid = tuple(
            (now - (last + 3 * j) * DAY - HALF, 1000 + (uid * 37 + j * 101) % 20_000)
            for j in range(n)
        )
        out.append(Shopper(uid, paid, now - ((uid * 13) % 60) * DAY - HALF, uid % 3 != 0))
    return out


def fill(path: Path, shoppers: list[Shopper], now: dt.datetime) -> int:
    """The shop's rows, in one transaction; returns the number of orders."""
    at = stamp(now - 400 * DAY)
    con = sqlite3.connect(path)
    try:
        with con:
            con.execute(
                "INSERT INTO pond (chat_id, title, chat_type, status, timezone, language,"
                " created_at, updated_at, settings, trust) VALUES (?, 'Bench pond',"
                " 'supergroup', 'active', 'Asia/Shanghai', 'zh', ?, ?, '{}', 'trusted')",
                (CHAT_ID, at, at),
            )
            con.executemany(
                "INSERT INTO member (user_id, username, username_lower, first_name, last_name,"
                " language_code, is_bot, dm_linked, balance, lifetime_earned, streak, tier,"
                " created_at, updated_at, lifetime_spent_cents)"
                " VALUES (?, NULL, NULL, ?, '', 'zh', 0, ?, 0, 0, 0, '', ?, ?, ?)",
                ((s.user_id, f"M{s.user_id}", int(s.linked), at, at,
                  sum(c for _p, c in s.paid)) for s in shoppers),
            )
            con.executemany(
                "INSERT INTO membership (chat_id, user_id, status, joined_at, left_at,"
                " first_seen_at, last_seen_at) VALUES (?, ?, 'member', ?, NULL, ?, ?)",
                ((CHAT_ID, s.user_id, at, at, stamp(s.last_seen)) for s in shoppers),
            )
            con.executemany(
                "INSERT INTO purchase_order (order_no, user_id, amount_cents, points, paid_at,"
                " source, chat_id, actor_id, created_at) VALUES (?, ?, ?, 0, ?, 'import',"
                " NULL, NULL, ?)",
                ((f"b{s.user_id}-{j}", s.user_id, cents, stamp(paid_at), stamp(paid_at))
                 for s in shoppers for j, (paid_at, cents) in enumerate(s.paid)),
            )
    finally:
        con.close()
    return sum(len(s.paid) for s in shoppers)


def expected(shoppers: list[Shopper], now: dt.datetime) -> list[list[str]]:
    """The export's rows, worked out from the generated figures."""
    t = Thresholds()
    rows = []
    for s in shoppers:
        last_paid = s.paid[0][0] if s.paid else None
        st = standing(last_paid, len(s.paid), sum(c for _p, c in s.paid), s.last_seen, now, t)
        rows.append([
            str(s.user_id), "" if st.recency_days is None else str(st.recency_days),
            str(st.orders), yuan(st.spent_cents), str(st.segment), str(int(st.churn_risk)),
            s.last_seen.isoformat(),
        ])
    return rows


def run_command(url: str, out: Path) -> float:
    env = {**os.environ, "DATABASE_URL": url}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bot", "export", "segments", "--out", str(out)],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


async def run_in_process(url: str) -> tuple[float, str]:
    db = Database(url)
    try:
        buf = io.StringIO()
        started = time.perf_counter()
        await export_segments(db, buf)
        return time.perf_counter() - started, buf.getvalue()
    finally:
        await db.dispose()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=10_000)
    ap.add_argument("--orders-per-ten", type=int, default=50)
    args = ap.parse_args()
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shop.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        shoppers = shop(args.members, now, args.orders_per_ten)
        started = time.perf_counter()
        orders = fill(path, shoppers, now)
        filled = time.perf_counter() - started
        print(f"shop: {args.members} members, {orders} orders (generated in {filled:.2f} s)")
        want = expected(shoppers, now)

        out = Path(tmp) / "segments.csv"
        best = min(run_command(url, out) for _ in range(2))
        with out.open(encoding="utf-8-sig", newline="") as f:
            got = list(csv.reader(f))
        inner, text = asyncio.run(run_in_process(url))
        again = list(csv.reader(io.StringIO(text)))

    problems = []
    if got[0] != list(SEGMENT_COLUMNS):
        problems.append(f"header {got[0]}")
    if got[1:] != want:
        bad = next(i for i, (a, b) in enumerate(zip(got[1:], want, strict=False)) if a != b)
        problems.append(f"row {bad}: {got[1 + bad]} != {want[bad]} (of {len(got) - 1})")
    if again != got:
        problems.append("the in-process export differs from the command's")
    counts = Counter(row[4] for row in want)
    churn = sum(row[5] == "1" for row in want)
    print("segments: " + ", ".join(f"{s} {counts[s]}" for s in ("gold", "key", "ordinary", "low"))
          + f"; churn risk {churn}")
    print(f"pondbot export segments: {best:.2f} s (best of 2, a process of its own);"
          f" in process: {inner:.2f} s")
    for p in problems:
        print("MISMATCH:", p, file=sys.stderr)
    if problems:
        return 1
    print(f"exact: {len(want)} rows, every member's figures, segment and churn risk as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
