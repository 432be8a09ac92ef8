"""CSV exports of members and of the points ledger (`pondbot export …`, `/export`).

Columns are part of the interface contract (SPEC §5):

* members: `user_id,username,display_name,balance,lifetime_earned,streak,tier,
  lifetime_spent`, then `dm_linked` (1/0) and `created_at` — `tier` is the tier's name
  as the member's last purchase set it (`member` without one), `lifetime_spent` the sum
  of their purchases in yuan with two decimals (`309.50`);
* ledger: `id,user_id,chat_id,delta,kind,ref,actor_id,created_at`;
* votes: `vote_id,chat_id,question,option,count` (one row per option of every vote);
* orders: `order_no,user_id,amount,points,paid_at,source` (amount in yuan, two decimals;
  source `command` or `import`), in the order they were recorded.

Times are ISO 8601 in UTC (`2025-11-11T12:00:00.123456+00:00`); an empty cell is NULL.
Rows are streamed from one read-only transaction in chunks of `CHUNK_ROWS`, so an export
of any size needs constant memory and sees one consistent state.

CSV injection: spreadsheet programs run a cell that starts with `=`, `+`, `-` or `@` (and
with a tab or carriage return) as a formula. Cells holding user text — username, display
name, ledger reference — that start like that get a leading `'`. Numbers are never
touched (a negative delta stays `-20`).

A pond's own file (`chat_id`; `/export` by a pond operator who is not one of the shop's
staff): the same columns and format, only that pond's rows — see `POND_EXPORTS`. A pond's
rows are those that carry its chat id, or the id its group had before it became a
supergroup (`storage.repo.migrate_pond` keeps those rows under the old id).

`export_to_path` first checks that the database schema is up to date: a database never
migrated (or a SQLite file that does not exist — it is not created) raises
`SchemaNotReady`, before any file is opened. It writes a file in UTF-8 with a BOM, which
spreadsheet programs need to read Chinese names correctly, through a temporary file
renamed into place when complete.
Written to standard output (no path) the CSV is plain UTF-8 without BOM, because it is
then usually piped into another program, for which a BOM would be part of the first
column name.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import sys
import tempfile
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

from sqlalchemy import String, case, func, literal, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, Executable, Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import SQLCoreOperations
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import col

from games.orders import yuan
from games.tiers import MEMBER
from storage.db import Database
from storage.models import (
    Draw,
    LedgerEntry,
    Member,
    Membership,
    Order,
    Redemption,
    Vote,
    VoteBallot,
)
from storage.repo import pond_chat_ids
from storage.segments import export_segments
from storage.surveys import export_profiles
from storage.votes import CANCELLED

MEMBER_COLUMNS = (
    "user_id",
    "username",
    "display_name",
    "balance",
    "lifetime_earned",
    "streak",
    "tier",
    "lifetime_spent",
    "dm_linked",
    "created_at",
)
LEDGER_COLUMNS = ("id", "user_id", "chat_id", "delta", "kind", "ref", "actor_id", "created_at")
CHUNK_ROWS = 2000
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(text: str | None) -> str:
    """User text made inert for spreadsheets (see module docstring)."""
    if not text:
        return ""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


Row = Sequence[object]
# The chat ids of the pond an export is limited to (`pond_chat_ids`); None: the whole shop.
Ponds = tuple[int, ...] | None
S = TypeVar("S", bound=Select[*tuple[Any, ...]])


def _in(column: SQLCoreOperations[Any], ponds: Ponds, query: S) -> S:
    """`query` limited to rows whose `column` is one of the pond's ids (all rows for None)."""
    return query if ponds is None else query.where(column.in_(ponds))


async def _write(
    db: Database,
    out: TextIO,
    columns: Sequence[str],
    rows: Callable[[AsyncSession, Ponds], AsyncGenerator[Row, None]],
    chat_id: int | None,
) -> int:
    """Write `columns`, then every row `rows` yields from one read-only transaction (only
    the pond's when `chat_id` is given); returns the number of rows."""
    writer = csv.writer(out)
    writer.writerow(columns)
    count = 0
    async with db.transaction(readonly=True) as session:
        ponds = None if chat_id is None else await pond_chat_ids(session, chat_id)
        async with contextlib.aclosing(rows(session, ponds)) as it:
            async for row in it:
                writer.writerow(row)
                count += 1
    return count


async def export_members(db: Database, out: TextIO, chat_id: int | None = None) -> int:
    """Write every member as CSV (header included); returns the number of rows. With
    `chat_id`: the members of that pond — everyone with a membership row there, those
    who left included (their balance and tier are still shop-wide)."""
    return await _write(db, out, MEMBER_COLUMNS, _member_rows, chat_id)


async def _member_rows(session: AsyncSession, ponds: Ponds) -> AsyncGenerator[Row, None]:
    members = select(Member)
    if ponds is not None:
        members = members.where(col(Member.user_id).in_(
            select(col(Membership.user_id)).where(col(Membership.chat_id).in_(ponds))
        ))
    result = await session.stream_scalars(
        members.order_by(col(Member.user_id)).execution_options(yield_per=CHUNK_ROWS)
    )
    async for m in result:
        yield (
            m.user_id,
            csv_safe(m.username),
            csv_safe(m.display_name),
            m.balance,
            m.lifetime_earned,
            m.streak,
            csv_safe(m.tier or MEMBER),
            yuan(m.lifetime_spent_cents),
            int(m.dm_linked),
            _iso(m.created_at),
        )


async def export_ledger(db: Database, out: TextIO, chat_id: int | None = None) -> int:
    """Write every ledger entry, oldest first, as CSV; returns the number of rows. With
    `chat_id`: the entries made in that pond (not those of its members elsewhere).

    The ledger is the big table (hundreds of thousands of rows): its cells are formatted
    by the database (`csv_safe_sql`, `IsoUtc`), so each chunk goes from the driver to the
    CSV writer untouched."""
    return await _write_formatted(db, out, LEDGER_COLUMNS, _ledger_query, chat_id)


def _ledger_query(ponds: Ponds = None) -> Executable:
    return _in(col(LedgerEntry.chat_id), ponds, select(
        col(LedgerEntry.id),
        col(LedgerEntry.user_id),
        col(LedgerEntry.chat_id),
        col(LedgerEntry.delta),
        col(LedgerEntry.kind),
        csv_safe_sql(col(LedgerEntry.ref)),
        col(LedgerEntry.actor_id),
        IsoUtc(col(LedgerEntry.created_at)),
    )).order_by(col(LedgerEntry.id))


async def _write_formatted(db: Database, out: TextIO, columns: Sequence[str],
                           query: Callable[[Ponds], Executable], chat_id: int | None) -> int:
    """Like `_write`, for a query whose cells are the CSV's already (a NULL is written as
    an empty cell): chunks of `CHUNK_ROWS` rows, each written as one piece of text while
    the driver reads the next."""
    csv.writer(out).writerow(columns)
    count = 0
    async with db.transaction(readonly=True) as session:
        ponds = None if chat_id is None else await pond_chat_ids(session, chat_id)
        connection = await session.connection()  # Core rows: no ORM loading on the way
        result = await connection.stream(query(ponds).execution_options(yield_per=CHUNK_ROWS))
        ahead = asyncio.ensure_future(result.fetchmany(CHUNK_ROWS))
        try:
            while chunk := await ahead:
                ahead = asyncio.ensure_future(result.fetchmany(CHUNK_ROWS))
                text = io.StringIO(newline="")
                csv.writer(text).writerows(chunk)
                out.write(text.getvalue())
                count += len(chunk)
        finally:
            if not ahead.done():
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ahead
    return count


def csv_safe_sql(column: SQLCoreOperations[str]) -> ColumnElement[str]:
    """`csv_safe` as an SQL expression."""
    first = func.substr(column, 1, 1)
    return case(
        (first.in_(FORMULA_PREFIXES), literal("'", String).concat(column)),
        else_=func.coalesce(column, ""),
    )


class IsoUtc(FunctionElement[str]):
    """A UTC timestamp column as `_iso` writes it (`datetime.isoformat`: a fraction of six
    digits, none on a whole second, then `+00:00`), formatted by the database; NULL stays
    NULL."""

    type = String()
    name = "iso_utc"
    inherit_cache = True


@compiles(IsoUtc, "sqlite")
def _iso_utc_sqlite(element: IsoUtc, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLAlchemy's SQLite dialect stores UTC as `2025-11-11 12:00:00.123456`.
    x = compiler.process(element.clauses, **kw)
    return (
        f"(CASE WHEN substr({x}, 20) IN ('', '.000000') "
        f"THEN substr({x}, 1, 10) || 'T' || substr({x}, 12, 8) "
        f"ELSE substr({x}, 1, 10) || 'T' || substr({x}, 12) END || '+00:00')"
    )


@compiles(IsoUtc, "postgresql")
def _iso_utc_postgresql(element: IsoUtc, compiler: SQLCompiler, **kw: Any) -> str:
    x = f"({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC')"
    return (
        f"(to_char({x}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN to_char({x}, 'US') = "
        f"'000000' THEN '' ELSE to_char({x}, '.US') END || '+00:00')"
    )


VOTE_COLUMNS = ("vote_id", "chat_id", "question", "option", "count")


async def export_votes(db: Database, out: TextIO, chat_id: int | None = None) -> int:
    """Write the tally of every vote — one row per option, zero counts included — oldest
    vote first; returns the number of rows. With `chat_id`: the votes of that pond. A vote
    cancelled by `/vote cancel` has no result and is left out."""
    return await _write(db, out, VOTE_COLUMNS, _vote_rows, chat_id)


async def _vote_rows(session: AsyncSession, ponds: Ponds) -> AsyncGenerator[Row, None]:
    ballots = select(col(VoteBallot.vote_id), col(VoteBallot.option), func.count())
    if ponds is not None:
        ballots = ballots.where(col(VoteBallot.vote_id).in_(
            select(col(Vote.id)).where(col(Vote.chat_id).in_(ponds))
        ))
    counts = {
        (int(v), int(o)): int(n)
        for v, o, n in (
            await session.execute(
                ballots.group_by(col(VoteBallot.vote_id), col(VoteBallot.option))
            )
        ).all()
    }
    votes = select(
        col(Vote.id), col(Vote.chat_id), col(Vote.question), col(Vote.options)
    ).where(col(Vote.state) != CANCELLED)
    result = await session.stream(
        _in(col(Vote.chat_id), ponds, votes)
        .order_by(col(Vote.id))
        .execution_options(yield_per=CHUNK_ROWS)
    )
    async for row in result:
        for index, option in enumerate(row.options or []):
            yield (
                row.id,
                row.chat_id,
                csv_safe(row.question),
                csv_safe(str(option)),
                counts.get((int(row.id), index), 0),
            )


ORDER_COLUMNS = ("order_no", "user_id", "amount", "points", "paid_at", "source")


async def export_orders(db: Database, out: TextIO, chat_id: int | None = None) -> int:
    """Write every recorded purchase, in the order recorded; returns the number of rows.
    With `chat_id`: the orders recorded in that pond (`/order` there) — not its members'
    orders recorded elsewhere, nor imported ones (they belong to no pond)."""
    return await _write(db, out, ORDER_COLUMNS, _order_rows, chat_id)


async def _order_rows(session: AsyncSession, ponds: Ponds) -> AsyncGenerator[Row, None]:
    orders = select(
        col(Order.order_no),
        col(Order.user_id),
        col(Order.amount_cents),
        col(Order.points),
        col(Order.paid_at),
        col(Order.source),
    )
    result = await session.stream(
        _in(col(Order.chat_id), ponds, orders)
        .order_by(col(Order.id))
        .execution_options(yield_per=CHUNK_ROWS)
    )
    async for row in result:
        yield (
            csv_safe(row.order_no),
            row.user_id,
            yuan(row.amount_cents),
            row.points,
            _iso(row.paid_at),
            row.source,
        )


REDEMPTION_COLUMNS = (
    "id", "item_id", "item_name", "user_id", "price", "cash", "code", "status", "created_at",
)


async def export_redemptions(db: Database, out: TextIO, chat_id: int | None = None) -> int:
    """Every redemption, by id: `price` in points, `cash` in yuan with two decimals,
    `status` one of delivered, undelivered, pending, fulfilled, refunded. With `chat_id`:
    those made in that pond (bought or drawn there; not those redeemed in a DM)."""
    return await _write(db, out, REDEMPTION_COLUMNS, _redemption_rows, chat_id)


async def _redemption_rows(session: AsyncSession, ponds: Ponds) -> AsyncGenerator[Row, None]:
    from games.shop import yuan
    from storage.shop import export_query

    query = _in(col(Redemption.chat_id), ponds, export_query())
    result = await session.stream(query.execution_options(yield_per=CHUNK_ROWS))
    async for row in result:
        yield (
            row.id,
            row.item_id,
            csv_safe(row.item_name),
            row.user_id,
            row.price,
            yuan(row.cash_cents),
            csv_safe(row.code),
            row.status,
            _iso(row.created_at),
        )


DRAW_COLUMNS = (
    "id", "user_id", "chat_id", "cost", "prize_id", "prize_name", "won_points",
    "redemption_id", "created_at",
)


async def export_draws(db: Database, out: TextIO, chat_id: int | None = None) -> int:
    """Every lottery draw, by id (refused draws are not draws: none is recorded), so the
    odds can be audited; `cost` in points (0: a free draw). With `chat_id`: the draws made
    in that pond."""
    return await _write(db, out, DRAW_COLUMNS, _draw_rows, chat_id)


async def _draw_rows(session: AsyncSession, ponds: Ponds) -> AsyncGenerator[Row, None]:
    draws = select(
        col(Draw.id), col(Draw.user_id), col(Draw.chat_id), col(Draw.cost),
        col(Draw.prize_id), col(Draw.prize_name), col(Draw.won_points),
        col(Draw.redemption_id), col(Draw.created_at),
    )
    result = await session.stream(
        _in(col(Draw.chat_id), ponds, draws)
        .order_by(col(Draw.id))
        .execution_options(yield_per=CHUNK_ROWS)
    )
    async for row in result:
        yield (
            row.id,
            row.user_id,
            _opt(row.chat_id),
            row.cost,
            _opt(row.prize_id),
            csv_safe(row.prize_name),
            row.won_points,
            _opt(row.redemption_id),
            _iso(row.created_at),
        )


EXPORTS: dict[str, Callable[[Database, TextIO], Awaitable[int]]] = {
    "members": export_members,
    "ledger": export_ledger,
    "votes": export_votes,
    "redemptions": export_redemptions,
    "orders": export_orders,
    "draws": export_draws,
    "profiles": export_profiles,  # storage/surveys.py
    "segments": export_segments,  # storage/segments.py
}
# What can be limited to one pond (`chat_id`). Profiles and segments are about members
# shop-wide (answers given in any pond, purchases anywhere): the shop's staff only.
POND_EXPORTS: dict[str, Callable[[Database, TextIO, int], Awaitable[int]]] = {
    "members": export_members,
    "ledger": export_ledger,
    "votes": export_votes,
    "redemptions": export_redemptions,
    "orders": export_orders,
    "draws": export_draws,
}


class SchemaNotReady(Exception):
    """The database has no schema, or an older one: nothing to export until migrated."""

    def __init__(self) -> None:
        super().__init__("the database schema is not up to date: run `pondbot migrate` first")


def export_to_path(
    url: str | URL, what: str, path: str | os.PathLike[str] | None, chat_id: int | None = None
) -> int:
    """Export `what` (a key of `EXPORTS`) from the database at `url`; with `chat_id`, only
    that pond's rows (a key of `POND_EXPORTS`).

    With a path: UTF-8 with BOM, written to a temporary file and renamed into place, so
    a failed export leaves no half-written file. With None: plain UTF-8 to stdout.
    Returns the number of data rows. Callable with or without a running event loop.
    Raises `SchemaNotReady` (nothing written, nothing created) on an unmigrated database,
    `ValueError` for an unknown export or one that cannot be limited to a pond.
    """
    from storage.migrate import ais_up_to_date, run_blocking  # alembic: only when called

    export = _export_of(what, chat_id)
    if not run_blocking(lambda: ais_up_to_date(url)):
        raise SchemaNotReady

    async def run(out: TextIO) -> int:
        db = Database(url)
        try:
            return await export(db, out)
        finally:
            await db.dispose()

    if path is None:
        return _to_stdout(lambda out: run_blocking(lambda: run(out)))

    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with open(fd, "w", encoding="utf-8-sig", newline="") as out:
            rows = run_blocking(lambda: run(out))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return rows


def _export_of(what: str, chat_id: int | None) -> Callable[[Database, TextIO], Awaitable[int]]:
    if what not in EXPORTS:
        raise ValueError(f"unknown export {what!r}; expected one of {sorted(EXPORTS)}")
    if chat_id is None:
        return EXPORTS[what]
    if what not in POND_EXPORTS:
        raise ValueError(f"{what} is shop-wide: it cannot be limited to one pond")
    pond_export, pond = POND_EXPORTS[what], chat_id

    async def export(db: Database, out: TextIO) -> int:
        return await pond_export(db, out, pond)

    return export


def _to_stdout(write: Callable[[TextIO], int]) -> int:
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # stdout replaced by a text-only stream
        return write(sys.stdout)
    sys.stdout.flush()
    out = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
    try:
        return write(out)
    finally:
        out.flush()
        out.detach()  # leave sys.stdout's buffer open
