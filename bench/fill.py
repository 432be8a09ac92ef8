"""Rows generated straight into a migrated SQLite file, for the benches that need a big
database (`bench/export.py`, `bench/scale.py`).

Written with the `sqlite3` module in one transaction, in the forms the application
itself stores: datetimes as SQLAlchemy's SQLite text (`2025-03-01 12:00:00.250000`, UTC),
dates as `2025-03-01`, booleans as 0/1. Balances agree with the ledger (every member's
balance is the sum of their entries, and each entry's `balance_after` the running sum),
so the ledger invariant holds on a filled database.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
KINDS = ("checkin", "streak_bonus", "red_packet", "vote", "admin_adjust", "redeem")
# User text as it comes: plain, Chinese, commas and quotes, and cells a spreadsheet would
# run as a formula (the export must make those inert).
REFS = ("", "签到", "红包 #12", 'a "quoted", ref', "=HYPERLINK(1)", "-1+1", "@x", "+86")


def stamp(moment: dt.datetime) -> str:
    """A UTC datetime as SQLAlchemy's SQLite dialect stores it."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def fill_members(
    path: Path, chat_id: int, user_ids: range, *, entries_per_member: int = 0,
    checkin_days: int = 0, now: dt.datetime | None = None,
) -> int:
    """`user_ids` as members of the pond `chat_id` (which must exist or is created),
    each with `entries_per_member` ledger entries and a check-in on each of the
    `checkin_days` days before `now` (a daily streak). Returns the ledger entries written."""
    now = now or dt.datetime.now(dt.UTC)
    con = sqlite3.connect(path)
    try:
        with con:
            _pond(con, chat_id, now)
            at = stamp(now - dt.timedelta(days=checkin_days + 1))
            con.executemany(
                "INSERT INTO member (user_id, username, username_lower, first_name, last_name,"
                " language_code, is_bot, dm_linked, balance, lifetime_earned, streak, tier,"
                " created_at, updated_at, last_checkin_day, lifetime_spent_cents)"
                " VALUES (?, ?, ?, ?, '', 'zh', 0, 0, ?, ?, ?, '', ?, ?, ?, 0)",
                (
                    (uid, f"m{uid}", f"m{uid}", f"Member{uid}", 5 * entries_per_member,
                     5 * entries_per_member, checkin_days, at, at,
                     (now - dt.timedelta(days=1)).date().isoformat() if checkin_days else None)
                    for uid in user_ids
                ),
            )
            con.executemany(
                "INSERT INTO membership (chat_id, user_id, status, joined_at, left_at,"
                " first_seen_at, last_seen_at) VALUES (?, ?, 'member', NULL, NULL, ?, ?)",
                ((chat_id, uid, at, at) for uid in user_ids),
            )
            con.executemany(
                "INSERT INTO ledger_entry (user_id, chat_id, delta, balance_after, kind, ref,"
                " actor_id, idem_key, created_at) VALUES (?, ?, 5, ?, 'checkin', '', NULL, ?, ?)",
                (
                    (uid, chat_id, 5 * (k + 1), f"fill:{chat_id}:{uid}:{k}", at)
                    for k in range(entries_per_member) for uid in user_ids
                ),
            )
            for back in range(checkin_days, 0, -1):
                day = (now - dt.timedelta(days=back)).date().isoformat()
                streak = checkin_days - back + 1
                con.executemany(
                    "INSERT INTO checkin (user_id, chat_id, day, streak, points, makeup,"
                    " created_at) VALUES (?, ?, ?, ?, 5, 0, ?)",
                    ((uid, chat_id, day, streak, at) for uid in user_ids),
                )
    finally:
        con.close()
    return entries_per_member * len(user_ids)


def _pond(con: sqlite3.Connection, chat_id: int, now: dt.datetime) -> None:
    at = stamp(now)
    con.execute(
        "INSERT OR IGNORE INTO pond (chat_id, title, chat_type, status, timezone, language,"
        " created_at, updated_at, settings, trust) VALUES (?, 'Bench pond', 'supergroup',"
        " 'active', 'Asia/Shanghai', 'zh', ?, ?, '{}', 'trusted')",
        (chat_id, at, at),
    )


def ledger_rows(n: int, members: int) -> Iterator[tuple[object, ...]]:
    """`n` ledger entries over `members` members (ids 1..members), every one a credit so
    each running balance stays valid; times a second apart, every 7th on a whole second
    (ISO 8601 then has no fraction)."""
    balances = [0] * (members + 1)
    for i in range(n):
        uid = 1 + (i * 7919) % members
        delta = 1 + i % 50
        balances[uid] += delta
        micro = 0 if i % 7 == 0 else (i * 1237) % 1_000_000
        at = EPOCH + dt.timedelta(seconds=i, microseconds=micro)
        yield (
            uid,
            None if i % 5 == 0 else -1001000000000 - i % 20,
            delta,
            balances[uid],
            KINDS[i % len(KINDS)],
            REFS[i % len(REFS)],
            None if i % 3 else 900_000 + i % 4,
            f"bench:{i}",
            stamp(at),
        )


def fill_ledger(path: Path, n: int, members: int = 10_000) -> None:
    """`members` members and `n` ledger entries between them (balances agree)."""
    con = sqlite3.connect(path)
    try:
        with con:
            con.executemany(
                "INSERT INTO ledger_entry (user_id, chat_id, delta, balance_after, kind, ref,"
                " actor_id, idem_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ledger_rows(n, members),
            )
            con.execute(
                "INSERT INTO member (user_id, username, username_lower, first_name, last_name,"
                " language_code, is_bot, dm_linked, balance, lifetime_earned, streak, tier,"
                " created_at, updated_at, lifetime_spent_cents)"
                " SELECT user_id, NULL, NULL, 'Member' || user_id, '', NULL, 0, 0, SUM(delta),"
                " SUM(delta), 0, '', MIN(created_at), MAX(created_at), 0"
                " FROM ledger_entry GROUP BY user_id"
            )
    finally:
        con.close()
