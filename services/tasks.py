"""Daily tasks (SPEC F13): the bonus checked after each action, and `/tasks`.

After a check-in, a ballot, a guess, a grab, a red packet sent or a draw has committed,
its handler calls `DailyTasks.after`; `/tasks` calls `settle`. Both read the member's day
(`storage.tasks.facts_many`: the members asking about one pond's day while a read of it
runs are read together by the next one, so a crowd costs a few statements per batch, not
per member) and, when the list is complete and the bonus not yet paid, pay it in a unit
of work of its own, keyed per member and day: a replayed action, a racing second one or
`/tasks` find the key taken. A crash between the action's commit and the
bonus's loses nothing: the replayed update (or the member's next action, or `/tasks`)
pays it. A paid bonus is told in the member's private chat when it is linked (a group
gets no message for it: `/tasks` shows it).

Most days have no game besides the lottery and the check-in, hence no bonus, and a
morning's thousands of check-ins must not each read the database for nothing: whether
the pond had a game that day is kept in memory per pond and day. A yes is kept for the
day (a game once opened stays a reason to look; a cancelled one only costs a read); a
no for `ttl` seconds, so a game opened in another process is seen that soon — and
`/tasks` always reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from aiogram.methods import SendMessage

from games import tasks as rules
from services.lru import LRU
from services.middlewares import PondInfo
from services.outbox import Outbox
from services.texts import tasks as texts
from storage import repo
from storage import tasks as store
from storage.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    tasks: rules.TaskList
    bonus: int  # the pond's `task_bonus`
    paid: bool  # the member's bonus of the day is paid
    paid_now: bool  # ... by this call
    balance: int | None  # after a payment made now


class DailyTasks:
    def __init__(
        self, db: Database, outbox: Outbox, *, ttl: float = 2.0, size: int = 20_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.ttl = ttl
        self._monotonic = monotonic
        self._games: LRU[tuple[int, date], tuple[float, bool]] = LRU(size)
        self._asking: dict[tuple[int, date], asyncio.Future[bool]] = {}
        # Members waiting for their facts of a pond's day, and the task reading them.
        self._waiting: dict[
            tuple[int, date],
            list[tuple[int, datetime, asyncio.Future[tuple[store.DayFacts, int]]]],
        ] = {}
        self._readers: dict[tuple[int, date], asyncio.Task[None]] = {}

    async def task_day(self, chat_id: int, day: date, timezone: str) -> bool:
        """Whether an operator opened a game in the pond on `day` (see the docstring).
        A crowd asking at once while it is unknown waits for one read."""
        key = (chat_id, day)
        known = self._games.get(key)
        now = self._monotonic()
        if known is not None and (known[1] or known[0] > now):
            return known[1]
        asking = self._asking.get(key)
        if asking is not None:
            return await asyncio.shield(asking)
        asking = self._asking[key] = asyncio.get_running_loop().create_future()
        try:
            async with self.db.transaction(readonly=True) as session:
                found = await store.games_opened(session, chat_id, day, timezone)
        except BaseException as exc:
            asking.set_exception(exc)
            asking.exception()  # retrieved: a crowd of none is no unhandled error
            raise
        else:
            asking.set_result(found)
            self._games.put(key, (self._monotonic() + self.ttl, found))
            return found
        finally:
            del self._asking[key]

    async def after(self, pond: PondInfo, user_id: int, day: date, now: datetime) -> None:
        """After the member's action of `day` in the pond has committed: pay the bonus if
        it completed the list (nothing to read on a day without games). Never raises: the
        action is done and answered; a bonus not paid now is paid by the next action or
        `/tasks`."""
        try:
            if await self.task_day(pond.chat_id, day, pond.timezone):
                await self.settle(pond, user_id, day, now)
        except Exception:
            log.exception("daily tasks of %s in %s not settled", user_id, pond.chat_id)

    async def settle(self, pond: PondInfo, user_id: int, day: date, now: datetime) -> Outcome:
        """The member's list of `day` in the pond, with the bonus paid if it is earned."""
        known, bonus = await self._read(pond, user_id, day, now)
        tasks = rules.task_list(known.facts)
        if tasks.task_day:
            self._games.put((pond.chat_id, day), (0.0, True))
        if known.paid or not tasks.complete or bonus <= 0:
            return Outcome(tasks, bonus, known.paid, False, None)
        async with self.db.transaction() as session:
            move = await store.award(session, user_id=user_id, chat_id=pond.chat_id, day=day,
                                     amount=bonus, now=now)
        if move is None:
            return Outcome(tasks, bonus, False, False, None)
        if move.applied and known.dm_linked and not self.outbox.is_forbidden(user_id):
            self.outbox.send(SendMessage(chat_id=user_id,
                                         text=texts.bonus_paid(move.delta, move.balance)))
        return Outcome(tasks, move.delta, True, move.applied, move.balance)

    async def _read(self, pond: PondInfo, user_id: int, day: date, now: datetime
                    ) -> tuple[store.DayFacts, int]:
        """The member's facts of the day and the pond's bonus. Members asking while a
        read of the pond's day is running are read together by the next one."""
        key = (pond.chat_id, day)
        asked: asyncio.Future[tuple[store.DayFacts, int]] = (
            asyncio.get_running_loop().create_future())
        self._waiting.setdefault(key, []).append((user_id, now, asked))
        if key not in self._readers:
            self._readers[key] = asyncio.create_task(self._reader(pond, day),
                                                     name="daily-tasks-reader")
        return await asyncio.shield(asked)

    async def _reader(self, pond: PondInfo, day: date) -> None:
        key = (pond.chat_id, day)
        try:
            while batch := self._waiting.pop(key, None):
                try:
                    async with self.db.transaction(readonly=True) as session:
                        found = await store.facts_many(
                            session, chat_id=pond.chat_id, user_ids=[u for u, _, _ in batch],
                            day=day, timezone=pond.timezone, now=max(n for _, n, _ in batch),
                        )
                        bonus = (await repo.pond_settings(session, pond.chat_id)).task_bonus
                except Exception as exc:
                    for _, _, asked in batch:
                        if not asked.done():
                            asked.set_exception(exc)
                            asked.exception()  # retrieved: its asker may be gone
                    continue
                for user_id, _, asked in batch:
                    if not asked.done():
                        asked.set_result((found[user_id], bonus))
        finally:
            del self._readers[key]
