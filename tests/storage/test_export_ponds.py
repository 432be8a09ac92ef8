"""Exports limited to one pond (`chat_id`), on SQLite and PostgreSQL: the same columns and
cells as the shop-wide file, only the pond's rows — its members (membership rows, past
ones included), the ledger entries, votes (with their own ballots), orders, redemptions
and draws made there, including those made under the id the group had before it became
a supergroup — streamed in chunks; the shop-wide file is unchanged."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import pytest

from games.tiers import parse_tiers
from storage import export, ledger, orders, repo
from storage.db import Database
from storage.export import POND_EXPORTS, export_to_path
from storage.models import Draw, LedgerKind, Redemption, Vote, VoteBallot
from storage.repo import UserInfo

A, B, OLD_A = -1001, -1002, -3  # OLD_A: pond A's id before it became a supergroup
WHEN = datetime(2025, 11, 11, 0, 0, 1, 250000, tzinfo=UTC)
ALICE, BOB, CAROL, DAN = 1, 2, 3, 4  # Alice in A, Bob in B, Carol in both, Dan left A


async def fill(db: Database) -> None:
    tiers = parse_tiers("VIP1:0.01:9.8")
    async with db.transaction() as s:
        await repo.upsert_pond(s, OLD_A, title="A", chat_type="group")
        await repo.upsert_pond(s, B, title="B", chat_type="supergroup")
        for uid, name in ((ALICE, "Alice"), (BOB, "=Bob"), (CAROL, "Carol"), (DAN, "Dan")):
            await repo.upsert_member(s, UserInfo(id=uid, first_name=name))
        for pond, uid in ((OLD_A, ALICE), (OLD_A, CAROL), (OLD_A, DAN), (B, BOB), (B, CAROL)):
            await repo.touch_membership(s, pond, uid, status="member")
        await repo.touch_membership(s, OLD_A, DAN, status="left")
        gives: list[tuple[int | None, int]] = [
            (OLD_A, ALICE), (B, BOB), (None, CAROL), (OLD_A, CAROL), (B, CAROL)]
        for n, (chat, uid) in enumerate(gives, start=1):
            await ledger.award(s, user_id=uid, amount=10 + n, kind=LedgerKind.admin_adjust,
                               key=f"k{n}", chat_id=chat, ref=f"-give {n}", now=WHEN)
        bought: list[tuple[str, int, int | None]] = [
            ("A-1", ALICE, OLD_A), ("B-1", CAROL, B), ("I-1", ALICE, None)]
        for no, uid, chat in bought:
            await orders.record_order(s, order_no=no, user_id=uid, cents=1000,
                                      points_per_yuan=1.0, tiers=tiers, chat_id=chat, now=WHEN)
        for i, chat in enumerate((OLD_A, B, OLD_A)):
            vote = Vote(chat_id=chat, source_key=f"v{i}", question=f"Q{i}", options=["x", "y"],
                        opened_at=WHEN, closes_at=WHEN + timedelta(hours=1))
            s.add(vote)
            await s.flush()
            assert vote.id is not None
            s.add(VoteBallot(vote_id=vote.id, user_id=CAROL, option=i % 2))
        made: list[tuple[int | None, int]] = [(OLD_A, ALICE), (B, BOB), (None, CAROL)]
        for i, (chat, uid) in enumerate(made):
            s.add(Redemption(item_id=1, user_id=uid, chat_id=chat, price=5, status="pending",
                             source_key=f"r{i}", created_at=WHEN))
            s.add(Draw(user_id=uid, chat_id=chat, day=WHEN.date(), cost=i, prize_name="Five",
                       won_points=5, source_key=f"d{i}", created_at=WHEN))
        await repo.migrate_pond(s, OLD_A, A, now=WHEN)  # the group became a supergroup


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


async def written(make: Callable[[TextIO], Awaitable[int]]) -> tuple[int, list[list[str]]]:
    out = io.StringIO(newline="")
    count = await make(out)
    return count, rows(out.getvalue())


# For each export: which rows of the shop-wide file are pond A's, and which pond B's.
POND_ROWS: dict[str, dict[int, Callable[[dict[str, str]], bool]]] = {
    "members": {A: lambda r: r["user_id"] in {"1", "3", "4"},
                B: lambda r: r["user_id"] in {"2", "3"}},
    "ledger": {A: lambda r: r["chat_id"] == str(OLD_A), B: lambda r: r["chat_id"] == str(B)},
    "votes": {A: lambda r: r["chat_id"] == str(OLD_A), B: lambda r: r["chat_id"] == str(B)},
    "orders": {A: lambda r: r["order_no"] == "A-1", B: lambda r: r["order_no"] == "B-1"},
    "redemptions": {A: lambda r: r["user_id"] == "1", B: lambda r: r["user_id"] == "2"},
    "draws": {A: lambda r: r["chat_id"] == str(OLD_A), B: lambda r: r["chat_id"] == str(B)},
}


@pytest.mark.parametrize("chunk", [2, 2000])
@pytest.mark.parametrize("what", sorted(POND_EXPORTS))
async def test_a_ponds_file_is_the_shop_files_rows_of_that_pond(
    db: Database, what: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(db)
    monkeypatch.setattr(export, "CHUNK_ROWS", chunk)
    make = POND_EXPORTS[what]
    total, whole = await written(lambda out: export.EXPORTS[what](db, out))
    assert total == len(whole) - 1
    header = whole[0]
    for chat_id, keep in POND_ROWS[what].items():
        count, mine = await written(lambda out: make(db, out, chat_id))  # noqa: B023
        assert mine[0] == header
        want = [r for r in whole[1:] if keep(dict(zip(header, r, strict=True)))]
        assert mine[1:] == want and count == len(want) > 0, (what, chat_id)
    nobody, empty = await written(lambda out: make(db, out, -999))
    assert (nobody, empty) == (0, [header])


async def test_votes_of_a_pond_count_their_own_ballots(db: Database) -> None:
    await fill(db)
    _, a = await written(lambda out: export.export_votes(db, out, A))
    assert [r[2:] for r in a[1:]] == [["Q0", "x", "1"], ["Q0", "y", "0"],
                                      ["Q2", "x", "1"], ["Q2", "y", "0"]]
    _, b = await written(lambda out: export.export_votes(db, out, B))
    assert [r[2:] for r in b[1:]] == [["Q1", "x", "0"], ["Q1", "y", "1"]]


async def test_a_pond_reaches_back_through_its_migrations(db: Database) -> None:
    await fill(db)
    async with db.transaction() as s:
        assert await export.pond_chat_ids(s, A) == (A, OLD_A)
        assert await export.pond_chat_ids(s, B) == (B,)
        await repo.migrate_pond(s, A, -1005, now=WHEN)  # and once more
    async with db.transaction(readonly=True) as s:
        assert await export.pond_chat_ids(s, -1005) == (-1005, A, OLD_A)
    _, ledger_rows = await written(lambda out: export.export_ledger(db, out, -1005))
    assert [r[2] for r in ledger_rows[1:]] == [str(OLD_A)] * 3  # two /give, the order


async def test_export_to_path_for_a_pond(db_url: str, db: Database, tmp_path: Path) -> None:
    await fill(db)
    whole, pond = tmp_path / "members.csv", tmp_path / "members-pond.csv"
    assert export_to_path(db_url, "members", whole) == 4
    assert export_to_path(db_url, "members", pond, B) == 2
    data = pond.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf" + b"user_id,username,display_name,")
    lines = data.decode("utf-8-sig").splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["2", "3"]
    assert "'=Bob" in lines[1]  # formula-safe as in the shop-wide file
    assert all(line in whole.read_text("utf-8-sig").splitlines() for line in lines)
    for shop_wide in ("profiles", "segments"):
        with pytest.raises(ValueError, match="cannot be limited to one pond"):
            export_to_path(db_url, shop_wide, tmp_path / "x.csv", B)
    with pytest.raises(ValueError, match="unknown export"):
        export_to_path(db_url, "nonsense", tmp_path / "x.csv", B)
    assert not (tmp_path / "x.csv").exists()


async def test_pondbot_export_pond(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`pondbot export <what> --pond CHAT_ID`: the pond's file; without it, the shop's."""
    from bot.cli import main

    db = Database(sqlite_url)
    try:
        await fill(db)
    finally:
        await db.dispose()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    pond, whole = tmp_path / "pond.csv", tmp_path / "whole.csv"
    assert main(["export", "orders", "--pond", str(B), "--out", str(pond)]) == 0
    assert main(["export", "orders", "--out", str(whole)]) == 0
    assert [r[0] for r in rows(pond.read_text("utf-8-sig"))[1:]] == ["B-1"]
    assert [r[0] for r in rows(whole.read_text("utf-8-sig"))[1:]] == ["A-1", "B-1", "I-1"]
    assert main(["export", "ledger", f"--pond={A}"]) == 0  # to standard output
    assert [r[2] for r in rows(capsys.readouterr().out)[1:]] == [str(OLD_A)] * 3
    assert main(["export", "profiles", "--pond", str(B)]) == 2
    assert "shop-wide" in capsys.readouterr().err
