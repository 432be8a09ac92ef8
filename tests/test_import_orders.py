"""`pondbot import orders FILE` and `pondbot export orders` as the command line runs them:
all or nothing with every bad line named, idempotent by order number, without aiogram."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage import migrate, repo
from storage.db import Database

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = (101, 202, 303)


def run_cli(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    """`pondbot …` in a fresh interpreter that must not import aiogram on the way."""
    code = (
        "import sys; from bot.cli import main; rc = main(sys.argv[1:]); "
        "assert 'aiogram' not in sys.modules, 'aiogram imported'; sys.exit(rc)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DATABASE_"))}
    env["DATABASE_URL"] = f"sqlite:///{db}"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
        cwd=ROOT, timeout=300, check=False,
    )


async def _seed(url: str, users: tuple[int, ...] | range, linked: int | None) -> None:
    db = Database(url)
    try:
        async with db.transaction() as s:
            for uid in users:
                await repo.upsert_member(s, repo.UserInfo(id=uid, first_name=f"m{uid}"))
            if linked is not None:
                await repo.link_dm(s, linked)
    finally:
        await db.dispose()


@pytest.fixture
def shop_db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    asyncio.run(_seed(url, MEMBERS, linked=101))
    return path


def write(path: Path, text: str, *, bom: bool = True) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def exported(db: Path, what: str) -> list[dict[str, str]]:
    r = run_cli("export", what, db=db)
    assert r.returncode == 0, r.stderr
    return list(csv.DictReader(io.StringIO(r.stdout, newline="")))


GOOD = (
    "order_no,user_id,amount,paid_at,username\r\n"
    "TB-1,101,299.50,2025-11-11 00:05:00,alice\r\n"
    "TB-2,202,８８.８０,2025-11-11T08:00:00+08:00,\r\n"
    "TB-3,101,10,,\r\n"
)


def test_import_then_import_again(shop_db: Path, tmp_path: Path) -> None:
    good = write(tmp_path / "orders.csv", GOOD)
    r = run_cli("import", "orders", str(good), db=shop_db)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "imported 3, already recorded 0"
    again = run_cli("import", "orders", str(good), db=shop_db)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "imported 0, already recorded 3"
    rows = exported(shop_db, "orders")
    assert [(o["order_no"], o["user_id"], o["amount"], o["points"], o["source"]) for o in rows] == [
        ("TB-1", "101", "299.50", "299", "import"),
        ("TB-2", "202", "88.80", "88", "import"),
        ("TB-3", "101", "10.00", "10", "import"),
    ]
    assert rows[0]["paid_at"] == "2025-11-10T16:05:00+00:00"  # naive: the shop's clock
    assert rows[1]["paid_at"] == "2025-11-11T00:00:00+00:00"
    members = {m["user_id"]: m for m in exported(shop_db, "members")}
    assert (members["101"]["tier"], members["101"]["lifetime_spent"]) == ("VIP2", "309.50")
    assert (members["101"]["balance"], members["202"]["balance"]) == ("309", "88")
    assert (members["202"]["tier"], members["202"]["lifetime_spent"]) == ("VIP1", "88.80")
    assert (members["303"]["tier"], members["303"]["lifetime_spent"]) == ("member", "0.00")


def test_a_single_bad_row_stops_the_whole_file(shop_db: Path, tmp_path: Path) -> None:
    bad = write(tmp_path / "one.csv", GOOD + "TB-4,202,abc,,\r\n")
    r = run_cli("import", "orders", str(bad), db=shop_db)
    assert r.returncode == 1 and r.stdout == ""
    assert f"{bad}: line 5: amount 'abc' is not an amount of yuan" in r.stderr
    assert exported(shop_db, "orders") == []


def test_many_bad_rows_are_all_named(shop_db: Path, tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.csv",
        "order_no,user_id,amount\n"
        "A1,101,10\n"
        "A2,202,12.345\n"
        "A3,999,5\n"
        "A1,303,1\n"
        "A5,303,1\n",
        bom=False,
    )
    r = run_cli("import", "orders", str(bad), db=shop_db)
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines == [
        f"{bad}: line 3: amount '12.345' has more than 2 decimals",
        f"{bad}: line 4: user_id 999 is not a member the bot has seen",
        f"{bad}: line 5: order_no 'A1' is already on line 2",
        f"pondbot: error: 3 bad line(s) in {bad}: nothing imported",
    ]
    assert exported(shop_db, "orders") == []
    assert {m["balance"] for m in exported(shop_db, "members")} == {"0"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"order_no,amount\nA1,5\n", "line 1: missing column user_id"),
     (b"", "line 1: the file is empty"),
     (b"order_no,user_id,amount\nA1,101,\xff5\n", "line 2: not UTF-8")],
)
def test_unreadable_files(shop_db: Path, tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    r = run_cli("import", "orders", str(path), db=shop_db)
    assert r.returncode == 1 and problem in r.stderr
    missing = run_cli("import", "orders", str(tmp_path / "nope.csv"), db=shop_db)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_import_into_an_unmigrated_database(tmp_path: Path) -> None:
    good = write(tmp_path / "orders.csv", GOOD)
    r = run_cli("import", "orders", str(good), db=tmp_path / "none.db")
    assert r.returncode == 1 and "pondbot migrate" in r.stderr
    assert not (tmp_path / "none.db").exists()


def test_a_large_file_in_seconds(tmp_path: Path) -> None:
    """20,000 orders over 5,000 members: bulk statements in one transaction."""
    path = tmp_path / "shop.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    users = range(1_000_000, 1_005_000)
    asyncio.run(_seed(url, users, linked=None))
    big = tmp_path / "big.csv"
    with big.open("w", encoding="utf-8") as f:
        f.write("order_no,user_id,amount,paid_at\n")
        for i in range(20_000):
            amount = f"{i % 500 + 1}.{i % 100:02d}"
            f.write(f"BIG-{i},{users[i % len(users)]},{amount},2025-11-11 10:00\n")
    started = time.monotonic()
    r = run_cli("import", "orders", str(big), db=path)
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "imported 20000, already recorded 0"
    assert took < 120  # generous: the machine is shared; measured ≈ 3 s with start-up
    again = run_cli("import", "orders", str(big), db=path)
    assert again.stdout.strip() == "imported 0, already recorded 20000"
