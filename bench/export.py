"""`pondbot export ledger` against the floor of the sqlite3 module itself.

    .venv/bin/python bench/export.py [--n 500000] [--members 10000]

N ledger entries are generated straight into a migrated SQLite file (bench/fill.py). Then,
in the same run, each side twice (keeping its best), as a process of its own:

* the real command, `python -m bot export ledger --out FILE`;
* the floor: a Python process that reads the same rows with the `sqlite3` module and
  writes them unchanged with `csv.writer` (UTF-8 with BOM) — no formatting at all.

The exported file must be exact: every row as the Python formatting writes it (times in
ISO 8601 UTC, formula-safe references, empty cells for NULL). Prints both times, their
ratio (floor / pondbot, as every bench: 1.0 is the floor) and the command's peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fill import fill_ledger, ledger_rows  # noqa: E402
from storage.export import LEDGER_COLUMNS, csv_safe  # noqa: E402
from storage.migrate import upgrade  # noqa: E402

FLOOR = """
import csv, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
with open(sys.argv[2], "w", encoding="utf-8-sig", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(sys.argv[3].split(","))
    cursor = con.execute(
        "SELECT id, user_id, chat_id, delta, kind, ref, actor_id, created_at"
        " FROM ledger_entry ORDER BY id"
    )
    while rows := cursor.fetchmany(2000):
        writer.writerows(rows)
"""


def timed(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a process to completion: (seconds, peak RSS in MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{args[1:4]} exited {proc.returncode}: {err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def check(path: Path, n: int, members: int) -> None:
    """The file against the rows as generated, formatted in Python."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == list(LEDGER_COLUMNS)
        count = 0
        for i, (row, entry) in enumerate(zip(reader, ledger_rows(n, members), strict=True)):
            uid, chat_id, delta, _, kind, ref, actor_id, _, at = entry
            when = dt.datetime.fromisoformat(str(at)).replace(tzinfo=dt.UTC).isoformat()
            want = [str(i + 1), str(uid), "" if chat_id is None else str(chat_id), str(delta),
                    str(kind), csv_safe(str(ref)), "" if actor_id is None else str(actor_id),
                    when]
            assert row == want, (i, row, want)
            count += 1
    assert count == n, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500_000, help="ledger entries (500000)")
    parser.add_argument("--members", type=int, default=10_000, help="members (10000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pondbot-bench-") as tmp:
        db = Path(tmp) / "bench.db"
        upgrade(f"sqlite:///{db}")
        fill_ledger(db, args.n, args.members)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DATABASE_"))}
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{db}"
        real_csv, floor_csv = Path(tmp) / "ledger.csv", Path(tmp) / "floor.csv"
        command = [sys.executable, "-m", "bot", "export", "ledger", "--out", str(real_csv)]
        floor = [sys.executable, "-c", FLOOR, str(db), str(floor_csv), ",".join(LEDGER_COLUMNS)]
        floor_s, _ = timed(floor)
        real_s, real_mb = timed(command, env)
        floor_s = min(floor_s, timed(floor)[0])
        again_s, again_mb = timed(command, env)
        real_s, real_mb = min(real_s, again_s), max(real_mb, again_mb)
        check(real_csv, args.n, args.members)
        size_mb = db.stat().st_size / 2**20
    print(f"export ledger: N={args.n} entries of {args.members} members, SQLite file "
          f"({size_mb:.0f} MB)")
    print(f"  exact: {args.n} rows, every cell as the Python formatting writes it")
    print(f"  pondbot export ledger:        {real_s:6.2f} s")
    print(f"  sqlite3 + csv.writer (floor): {floor_s:6.2f} s")
    print(f"  ratio: {floor_s / real_s:.2f}   (target: pondbot < 3 s for 500000)")
    print(f"  peak RSS of pondbot export: {real_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
