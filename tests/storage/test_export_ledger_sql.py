"""The ledger CSV is formatted by the database (SQLite and PostgreSQL): every cell as the
Python formatting writes it — `datetime.isoformat` in UTC (no fraction on a whole second),
formula-safe references, empty cells for NULL — across chunk boundaries."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlmodel import col

from storage import export, ledger, repo
from storage.db import Database
from storage.export import FORMULA_PREFIXES, csv_safe, export_ledger
from storage.models import LedgerEntry, LedgerKind
from storage.repo import UserInfo

BASE = datetime(2025, 11, 11, 23, 59, 59, tzinfo=UTC)
MOMENTS = [
    BASE,  # a whole second
    BASE.replace(microsecond=1),
    BASE.replace(microsecond=999_999),
    BASE.replace(microsecond=500_000),
    # given in another offset: written in UTC, across midnight
    datetime(2025, 11, 12, 7, 30, tzinfo=timezone(timedelta(hours=8))),
    datetime(2000, 1, 1, tzinfo=UTC),
]
REFS = ["", "plain", "签到 🐟", "'quoted already", 'a "b", c', "line\nbreak", "a=b",
        *(p + "x" for p in FORMULA_PREFIXES)]


def expected(e: LedgerEntry) -> list[str]:
    """The row as the Python formatting writes it."""
    return [
        str(e.id), str(e.user_id), "" if e.chat_id is None else str(e.chat_id), str(e.delta),
        e.kind, csv_safe(e.ref), "" if e.actor_id is None else str(e.actor_id),
        e.created_at.astimezone(UTC).isoformat(),
    ]


@pytest.mark.parametrize("chunk", [3, 2000])
async def test_ledger_cells_match_the_python_formatting(
    db: Database, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "CHUNK_ROWS", chunk)
    async with db.transaction() as s:
        await repo.upsert_member(s, UserInfo(id=1, first_name="A"))
        n = 0
        for moment in MOMENTS:
            for i, ref in enumerate(REFS):
                n += 1
                await ledger.award(
                    s, user_id=1, amount=1 + i, kind=LedgerKind.admin_adjust, key=f"k{n}",
                    chat_id=None if i % 2 else -100123, actor_id=None if i % 3 else 42,
                    ref=ref, now=moment,
                )
    async with db.transaction(readonly=True) as s:
        entries = (await s.execute(select(LedgerEntry).order_by(col(LedgerEntry.id)))).scalars()
        want = [expected(e) for e in entries]
    out = io.StringIO(newline="")
    assert await export_ledger(db, out) == len(want) == n
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert rows[0] == list(export.LEDGER_COLUMNS)
    assert rows[1:] == want
    assert "2025-11-11T23:59:59+00:00" in {r[7] for r in rows}
    assert "2025-11-11T23:30:00+00:00" in {r[7] for r in rows}
