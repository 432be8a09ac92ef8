"""CSV exports: contract columns, BOM, awkward names, formula-safe cells."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import pytest

from games.tiers import parse_tiers
from storage import export, ledger, orders, repo
from storage.db import Database
from storage.export import export_ledger, export_members, export_to_path
from storage.models import LedgerKind
from storage.repo import UserInfo

MEMBERS_HEADER = "user_id,username,display_name,balance,lifetime_earned,streak,tier"
LEDGER_HEADER = "id,user_id,chat_id,delta,kind,ref,actor_id,created_at"

AWKWARD = {
    1: UserInfo(id=1, first_name="张伟", last_name="（店长）", username="ZhangWei"),
    2: UserInfo(id=2, first_name='Smith, "Jo"', last_name="O'Neil"),
    3: UserInfo(id=3, first_name="line one\nline two\r\nthree"),
    4: UserInfo(id=4, first_name='=HYPERLINK("http://x")', last_name="x"),
    5: UserInfo(id=5, first_name="+86 138", last_name=""),
    6: UserInfo(id=6, first_name="-1+1"),
    7: UserInfo(id=7, first_name="@SUM(A1)"),
    8: UserInfo(id=8, first_name="🐟 鱼塘 🐟"),
    9: UserInfo(id=9),
}
WHEN = datetime(2025, 11, 11, 0, 0, 1, 250000, tzinfo=UTC)


async def fill(db: Database) -> None:
    async with db.transaction() as s:
        for user in AWKWARD.values():
            await repo.upsert_member(s, user)
        await ledger.award(
            s,
            user_id=1,
            amount=50,
            kind=LedgerKind.admin_adjust,
            key="give:1",
            chat_id=-100555,
            actor_id=42,
            ref="=cmd|' /C calc'!A0",
            now=WHEN,
        )
        await ledger.spend(
            s,
            user_id=1,
            amount=20,
            kind=LedgerKind.redeem,
            key="redeem:1",
            ref='满100减20, "coupon"\nsecond line',
            now=WHEN,
        )
        await ledger.award(s, user_id=2, amount=5, kind=LedgerKind.checkin, key="c:2", now=WHEN)
        await repo.link_dm(s, 1)


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture
async def filled(db: Database) -> Database:
    await fill(db)
    return db


async def test_members_csv(filled: Database) -> None:
    out = io.StringIO(newline="")
    assert await export_members(filled, out) == len(AWKWARD)
    text = out.getvalue()
    assert text.startswith(MEMBERS_HEADER + ",lifetime_spent,dm_linked,created_at\r\n")
    rows = {int(r["user_id"]): r for r in parse(text)}
    assert set(rows) == set(AWKWARD)
    assert rows[1]["username"] == "ZhangWei"
    assert rows[1]["display_name"] == "张伟 （店长）"
    assert (rows[1]["balance"], rows[1]["lifetime_earned"], rows[1]["dm_linked"]) == (
        "30",
        "50",
        "1",
    )
    assert (rows[2]["balance"], rows[2]["dm_linked"], rows[2]["username"]) == ("5", "0", "")
    assert rows[2]["display_name"] == 'Smith, "Jo" O\'Neil'
    assert rows[3]["display_name"] == "line one\nline two\r\nthree"
    assert rows[8]["display_name"] == "🐟 鱼塘 🐟"
    assert rows[9]["display_name"] == "9"
    # user text that a spreadsheet would run as a formula is made inert
    assert rows[4]["display_name"] == '\'=HYPERLINK("http://x") x'
    assert rows[5]["display_name"] == "'+86 138"
    assert rows[6]["display_name"] == "'-1+1"
    assert rows[7]["display_name"] == "'@SUM(A1)"
    created = datetime.fromisoformat(rows[1]["created_at"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


async def test_ledger_csv(filled: Database) -> None:
    out = io.StringIO(newline="")
    assert await export_ledger(filled, out) == 3
    text = out.getvalue()
    assert text.splitlines()[0] == LEDGER_HEADER
    rows = parse(text)
    assert [r["kind"] for r in rows] == ["admin_adjust", "redeem", "checkin"]
    assert [int(r["id"]) for r in rows] == sorted(int(r["id"]) for r in rows)
    give, redeem, checkin = rows
    assert (give["user_id"], give["chat_id"], give["delta"], give["actor_id"]) == (
        "1",
        "-100555",
        "50",
        "42",
    )
    assert give["ref"] == "'=cmd|' /C calc'!A0"
    assert redeem["delta"] == "-20"  # numbers are never escaped
    assert redeem["ref"] == '满100减20, "coupon"\nsecond line'
    assert (redeem["chat_id"], redeem["actor_id"]) == ("", "")
    assert checkin["created_at"] == "2025-11-11T00:00:01.250000+00:00"
    assert datetime.fromisoformat(checkin["created_at"]) == WHEN


async def test_empty_database_exports_just_the_headers(db: Database) -> None:
    out = io.StringIO(newline="")
    assert await export_members(db, out) == 0
    assert await export_ledger(db, out) == 0
    assert out.getvalue().splitlines() == [
        MEMBERS_HEADER + ",lifetime_spent,dm_linked,created_at", LEDGER_HEADER
    ]


async def test_members_tier_and_lifetime_spent_and_the_orders_csv(filled: Database) -> None:
    """`tier` is the tier's name (`member` without a purchase), `lifetime_spent` yuan with
    two decimals; the orders CSV lists every purchase in the order recorded."""
    tiers = parse_tiers("VIP1:0.01:9.8,VIP2:300:9.5")
    async with filled.transaction() as s:
        for no, uid, cents in (("=A1", 1, 29950), ("A2", 1, 1000), ("A3", 2, 1)):
            await orders.record_order(
                s, order_no=no, user_id=uid, cents=cents, points_per_yuan=1.0, tiers=tiers,
                actor_id=42, paid_at=WHEN, now=WHEN,
            )
    out = io.StringIO(newline="")
    await export_members(filled, out)
    rows = {int(r["user_id"]): r for r in parse(out.getvalue())}
    assert (rows[1]["tier"], rows[1]["lifetime_spent"]) == ("VIP2", "309.50")
    assert (rows[2]["tier"], rows[2]["lifetime_spent"]) == ("VIP1", "0.01")
    assert (rows[3]["tier"], rows[3]["lifetime_spent"]) == ("member", "0.00")
    out = io.StringIO(newline="")
    assert await export.export_orders(filled, out) == 3
    text = out.getvalue()
    assert text.splitlines()[0] == "order_no,user_id,amount,points,paid_at,source"
    assert [tuple(r.values()) for r in parse(text)] == [
        ("'=A1", "1", "299.50", "299", "2025-11-11T00:00:01.250000+00:00", "command"),
        ("A2", "1", "10.00", "10", "2025-11-11T00:00:01.250000+00:00", "command"),
        ("A3", "2", "0.01", "0", "2025-11-11T00:00:01.250000+00:00", "command"),
    ]


async def test_export_streams_in_chunks(filled: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks smaller than the table give the same rows as one big read."""
    whole = io.StringIO(newline="")
    await export_members(filled, whole)
    monkeypatch.setattr(export, "CHUNK_ROWS", 2)
    chunked = io.StringIO(newline="")
    await export_members(filled, chunked)
    assert chunked.getvalue() == whole.getvalue()


@pytest.mark.parametrize("what", ["members", "ledger"])
async def test_export_to_file_has_a_bom_and_round_trips(
    filled: Database, db_url: str, tmp_path: Path, what: str
) -> None:
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / f"{what}.csv"
    path.write_text("old content")
    rows = export_to_path(db_url, what, path)  # blocking, from inside a running loop
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with path.open(encoding="utf-8-sig", newline="") as f:
        parsed = list(csv.DictReader(f))
    assert len(parsed) == rows == (len(AWKWARD) if what == "members" else 3)
    header = MEMBERS_HEADER if what == "members" else LEDGER_HEADER
    assert raw[3:].decode().startswith(header)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


async def test_export_to_stdout_is_plain_utf8(
    filled: Database, db_url: str, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert export_to_path(db_url, "members", None) == len(AWKWARD)
    raw = capfdbinary.readouterr().out
    assert not raw.startswith(b"\xef\xbb\xbf")
    rows = parse(raw.decode("utf-8"))
    assert {r["display_name"] for r in rows} >= {"张伟 （店长）", "🐟 鱼塘 🐟"}


def test_unknown_export_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="members"):
        export_to_path(f"sqlite:///{tmp_path / 'x.db'}", "nonsense", tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_unmigrated_database_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(export.SchemaNotReady, match="pondbot migrate"):
        export_to_path(f"sqlite:///{tmp_path / 'empty.db'}", "ledger", target)
    assert list(tmp_path.iterdir()) == []  # neither the CSV nor a database file


async def test_failed_export_leaves_no_file(
    filled: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(db: Database, out: TextIO) -> int:
        out.write("half a file")
        raise RuntimeError("the database went away")

    monkeypatch.setitem(export.EXPORTS, "ledger", broken)
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="went away"):
        export_to_path(db_url, "ledger", tmp_path / "out" / "ledger.csv")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        ("张三", "张三"),
    ],
)
def test_csv_safe(text: str | None, safe: str) -> None:
    assert export.csv_safe(text) == safe
