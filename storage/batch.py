"""One writer task that merges many small writes into one transaction.

A busy pond at 9:00 sends thousands of tiny writes (a member seen for the first time, a
check-in). One transaction each means one `BEGIN IMMEDIATE … COMMIT` and a dozen thread
hops each, one after the other. Instead, a caller `submit`s a request to a `BatchOp` and
awaits its result; the writer takes everything queued so far, runs every op's requests
in ONE unit of work (multi-row statements), commits, and resolves the futures.

* Ops run in their `order` (member records before the check-ins that need them), and
  requests of one op in the order they were submitted.
* If a batch fails, its requests are retried one by one, each in its own unit of work,
  so one bad request fails alone and the others still succeed.
* The writer runs only while there is work: no task to start or stop. Results are
  durable (committed) when the future resolves.
* A request may carry `then`, called with None or the error the moment its write is
  settled, before `flushed` returns and whether or not anyone still awaits the future:
  the place to update what the caller caches about the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from storage import repo
from storage.bulk import Bulk
from storage.db import Database
from storage.dialect import insert_for_dialect
from storage.models import Member, Membership, utcnow
from storage.repo import UserInfo

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")
Req_contra = TypeVar("Req_contra", contravariant=True)
Res_co = TypeVar("Res_co", covariant=True)


class BatchOp(Protocol[Req_contra, Res_co]):
    """A kind of write; `run` gets the requests of one batch and returns one result each."""

    order: int

    async def run(self, session: AsyncSession, requests: Sequence[Req_contra]) -> Sequence[Res_co]:
        ...


@dataclass(eq=False)
class _Pending(Generic[Req, Res]):
    op: BatchOp[Req, Res]
    request: Req
    future: asyncio.Future[Res]
    then: Callable[[BaseException | None], None] | None = None


class BatchWriter:
    def __init__(self, db: Database, *, max_batch: int = 2000) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: list[_Pending[Any, Any]] = []
        self._writing: list[_Pending[Any, Any]] = []  # the batch in its transaction
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # transactions committed (for tests and benchmarks)
        self.largest = 0

    async def submit(self, op: BatchOp[Req, Res], request: Req) -> Res:
        return await self.enqueue(op, request)

    def enqueue(
        self,
        op: BatchOp[Req, Res],
        request: Req,
        *,
        then: Callable[[BaseException | None], None] | None = None,
    ) -> asyncio.Future[Res]:
        """Queue a request now; the future resolves once it is committed. A request
        queued later is written in the same transaction or a later one."""
        fut: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(op, request, fut, then))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="batch-writer")
        return fut

    async def flushed(self) -> None:
        """Wait until every request queued so far is committed or has failed (a failure
        is its submitter's to report). Unlike `idle`, later requests are not waited for,
        so a steady stream of writes cannot hold this up."""
        pending = [p.future for p in self._queue] + [p.future for p in self._writing]
        if pending:
            await asyncio.wait(pending)

    async def idle(self) -> None:
        """Wait until everything submitted so far is written."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._writing = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                await self._write(batch)
        finally:
            self._writing = []
            self._task = None

    @staticmethod
    def _groups(batch: list[_Pending[Any, Any]]) -> list[list[_Pending[Any, Any]]]:
        groups: dict[int, list[_Pending[Any, Any]]] = {}
        for item in batch:
            groups.setdefault(id(item.op), []).append(item)
        return sorted(groups.values(), key=lambda g: g[0].op.order)

    async def _write(self, batch: list[_Pending[Any, Any]]) -> None:
        groups = self._groups(batch)

        async def write(session: AsyncSession) -> list[tuple[_Pending[Any, Any], Any]]:
            results: list[tuple[_Pending[Any, Any], Any]] = []
            for group in groups:
                out = await group[0].op.run(session, [p.request for p in group])
                results.extend(zip(group, out, strict=True))
            return results

        try:
            # An op only writes through the session: a batch PostgreSQL aborted as a
            # deadlock is run again whole (`run_in_transaction`).
            results = await self.db.run_in_transaction(write)
        except Exception as exc:
            if len(batch) == 1:
                self._settle(batch[0], exc=exc)
                return
            log.warning("a batch of %d writes failed (%r); writing them one by one", len(batch),
                        exc)
            for item in batch:
                await self._write([item])
            return
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        for item, result in results:
            self._settle(item, result=result)

    @staticmethod
    def _settle(item: _Pending[Any, Any], *, result: Any = None, exc: BaseException | None = None
                ) -> None:
        if item.then is not None:
            try:
                item.then(exc)
            except Exception:
                log.exception("a write's follow-up failed")
        if item.future.done():
            return
        if exc is not None:
            item.future.set_exception(exc)
        else:
            item.future.set_result(result)


# -- member tracking ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """A person seen in a chat: refresh their names (`person`), and/or mark them present
    in the pond (`chat_id`)."""

    user_id: int
    person: UserInfo | None = None
    chat_id: int | None = None


def _member_upsert(dialect: str) -> Any:
    stmt = insert_for_dialect(dialect, Member.__table__)  # type: ignore[attr-defined]
    return stmt.on_conflict_do_update(
        index_elements=["user_id"],
        set_={c: getattr(stmt.excluded, c) for c in repo.MEMBER_REFRESH},
    )


def _seat_upsert(dialect: str) -> Any:
    stmt = insert_for_dialect(dialect, Membership.__table__)  # type: ignore[attr-defined]
    seat = Membership.__table__  # type: ignore[attr-defined]
    # Someone who speaks in the pond is in it: a member recorded as gone who is seen again
    # (rejoined while the bot missed the `chat_member` update) counts as present again.
    # Constants are inlined: the statement is compiled once and run with the rows' values.
    gone = seat.c.status.in_([sa.literal_column(f"'{s}'") for s in repo.GONE])
    return stmt.on_conflict_do_update(
        index_elements=["chat_id", "user_id"],
        set_={
            "last_seen_at": stmt.excluded.last_seen_at,
            "status": sa.case((gone, stmt.excluded.status), else_=seat.c.status),
            "joined_at": sa.case((gone, stmt.excluded.joined_at), else_=seat.c.joined_at),
            "left_at": sa.case((gone, sa.null()), else_=seat.c.left_at),
        },
    )


SEAT_COLUMNS = ["chat_id", "user_id", "status", "first_seen_at", "last_seen_at", "joined_at",
                "left_at"]


class SeenOp:
    """`repo.upsert_member` and `repo.touch_membership` for many people at once."""

    order = 0
    members = Bulk(_member_upsert, repo.MEMBER_COLUMNS)
    seats = Bulk(_seat_upsert, SEAT_COLUMNS)

    async def run(self, session: AsyncSession, requests: Sequence[SeenRequest]) -> list[None]:
        now = utcnow()
        people: dict[int, UserInfo] = {}
        seats: dict[tuple[int, int], None] = {}
        for r in requests:
            if r.person is not None:
                people[r.user_id] = r.person  # the latest names win
            if r.chat_id is not None:
                seats[(r.chat_id, r.user_id)] = None
        # Rows in key order: two instances' batches lock them in one order, never in a
        # circle (PostgreSQL would abort one as a deadlock).
        await self.members.execute(
            session, [repo.member_row(people[uid], now) for uid in sorted(people)]
        )
        await self.seats.execute(
            session,
            [
                {
                    "chat_id": chat_id, "user_id": user_id, "status": "member",
                    "first_seen_at": now, "last_seen_at": now, "joined_at": now,
                    "left_at": None,
                }
                for chat_id, user_id in sorted(seats)
            ],
        )
        return [None] * len(requests)


SEEN = SeenOp()
