"""Segments on a generated shop of 10,000 members and 50,000 orders (bench/segments.py's
generator, rows written straight into a migrated SQLite file): the counts per segment and
at churn risk, every member's row of `pondbot export segments` as worked out from the
generated figures, and /segments' pond-wide reading agreeing with the export. The timing
is bench/segments.py's (tests/test_benches.py runs it small)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from pathlib import Path

from bench.segments import CHAT_ID, expected, fill, shop
from games.segments import Segment
from storage import segments as store
from storage.db import Database
from storage.migrate import aupgrade


async def test_ten_thousand_members_fifty_thousand_orders(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    url = f"sqlite+aiosqlite:///{path}"
    await aupgrade(url)
    now = dt.datetime.now(dt.UTC)
    shoppers = shop(10_000, now)
    assert fill(path, shoppers, now) == 50_000
    db = Database(url)
    try:
        out = io.StringIO()
        assert await store.export_segments(db, out, now) == 10_000
        async with db.transaction(readonly=True) as s:
            rows = await store.standings(s, store.thresholds(await store.shop_settings(s)),
                                         now, chat_id=CHAT_ID)
    finally:
        await db.dispose()
    got = list(csv.reader(io.StringIO(out.getvalue())))
    want = expected(shoppers, now)
    assert got[0] == list(store.SEGMENT_COLUMNS)
    assert got[1:] == want
    counts = Counter(row[4] for row in got[1:])
    assert counts == {"gold": 2472, "key": 3831, "ordinary": 1756, "low": 1941}
    assert sum(row[5] == "1" for row in got[1:]) == 4250
    # The pond's reading (/segments) is the same members, the same classification.
    by_segment, churn = store.counts(rows)
    assert {str(k): v for k, v in by_segment.items()} == counts and churn == 4250
    assert set(by_segment) == set(Segment)
    linked_gold = sum(1 for _ in store.targets(rows, "gold"))
    assert linked_gold == sum(1 for s, r in zip(shoppers, want, strict=True)
                              if s.linked and r[4] == "gold")
