"""Time as a parameter: a real clock for production, a virtual one for tests.

Everything that waits (the outbox's budgets, retry back-off) asks a `Clock`, so a
test can run five minutes of rate-limited sending in a few milliseconds and assert
exact timestamps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: the running event loop's time and `asyncio.sleep`.

    The loop's time is `time.monotonic` under the default loop (also what this reads
    with no loop running); under a loop whose time is virtual (`pondbot demo`'s) it is
    virtual, so what is measured here always agrees with what `sleep` waits."""

    def monotonic(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time that jumps forward whenever the event loop has nothing else to do.

    `sleep(d)` registers a waiter due at `now + d`. While at least one waiter exists,
    a callback watches the loop: when no other callback is ready to run (every task is
    blocked on a virtual sleep, a queue, an event …), `now` jumps to the earliest due
    waiter and only the waiters due at that instant wake. Tasks therefore observe the
    same ordering they would in real time, with no real waiting at all.

    `advance(seconds)` moves time by hand (waking everything that became due) for
    tests that prefer to step explicitly.

    Anything awaited under a fake clock must itself be driven by this clock (or by
    other tasks); a real `asyncio.sleep(1)` would be jumped over, not waited for.
    Relies on the default asyncio event loop (it inspects the loop's ready queue).
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._watching = False
        self.jumps = 0

    @property
    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (self._now + seconds, next(self._seq), fut))
        self._watch(loop)
        await fut

    def advance(self, seconds: float) -> None:
        """Move virtual time forward by hand and wake every waiter that became due."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        self._wake_due()

    def pending_sleepers(self) -> int:
        return sum(1 for _, _, fut in self._waiters if not fut.done())

    # -- internals -------------------------------------------------------------------

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._watching:
            self._watching = True
            loop.call_soon(self._check_idle, loop)

    def _check_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watching = False
        self._drop_cancelled()
        if not self._waiters:
            return
        ready = getattr(loop, "_ready", None)
        if ready is None:  # pragma: no cover - non-default loops
            raise RuntimeError("FakeClock needs the default asyncio event loop")
        if len(ready) == 0:
            # Nothing can run until a virtual sleep ends: jump to the earliest one.
            due = self._waiters[0][0]
            if due > self._now:
                self._now = due
                self.jumps += 1
            self._wake_due()
        if self._waiters:
            self._watch(loop)

    def _drop_cancelled(self) -> None:
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)

    def _wake_due(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
