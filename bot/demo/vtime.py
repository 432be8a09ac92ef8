"""Virtual time for `pondbot demo`: an event loop whose clock jumps ahead when idle.

`VirtualTimeLoop` is the default selector loop with one change: `loop.time()` is
virtual. When the loop would block until its next timer, it first looks whether any
real work is still on its way — a socket with data (the bot and the emulator talk over
loopback), or a worker thread still busy (SQLite runs on aiosqlite's threads, charts
and exports on the executor's) — and waits for it in real time. Only when nothing is,
the clock jumps to that timer at once. Everything that waits in the process (the
outbox's pacing, the emulator's flood limits, the scheduler's alarms and sweeps, long
polling, the scenes' pauses) runs on this one clock, so a minute of rate-limited
sending or a ten-second vote passes in no time, and what happens still happens in the
order it would in real time: the clock never moves while anything is left to do before.

Two limits, both on the side of real time. Busy threads are recognised by where they
stand (a thread whose line is not a wait on an empty queue, a lock or an event is at
work); one that looks busy for `STUCK` real seconds no longer holds the clock. And
anything that reads `time.monotonic()` or `datetime.now()` itself, instead of the
loop's time or a clock it was given, sees real time: the demo gives the bot its clocks
(`bot.app.Clocks`), the wall clock being the real time at the start plus the virtual
time elapsed.
"""

from __future__ import annotations

import asyncio
import linecache
import selectors
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

QUIET = 0.001  # real seconds the loop waits for sockets before it looks again
CALM = 2  # looks in a row that find nothing to do before the clock jumps
STUCK = 2.0  # real seconds a worker thread may look busy before time moves anyway
# A worker thread whose innermost line is one of these waits for work: it is parked.
PARKED = (".get(", ".wait(", ".acquire(")


def _parked(frame: FrameType) -> bool:
    """Whether a thread stopped in `frame` waits for work that is not there: its line is
    a wait, and no queue among its locals holds work (one it has not taken yet)."""
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno or 0)
    if not any(wait in line for wait in PARKED):
        return False
    queues = (v for v in frame.f_locals.values() if hasattr(v, "qsize") and hasattr(v, "put"))
    return all(q.empty() for q in queues)


def threads_busy() -> bool:
    """Whether another thread is running code (not parked on an empty queue, a lock or
    an event): aiosqlite's threads running a query, the executor's a chart."""
    me = threading.get_ident()
    return any(
        not _parked(frame) for ident, frame in sys._current_frames().items() if ident != me
    )


class _IdleSelector(selectors.DefaultSelector):
    """The loop's selector: a wait for the next timer becomes a jump of the clock."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None
        self._busy_since: float | None = None
        self._calm = 0

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        if timeout is not None and timeout <= 0:
            return list(super().select(0))
        events = list(super().select(QUIET))  # a reply on its way over loopback
        if events:
            self._busy_since, self._calm = None, 0
            return events
        if threads_busy() and not self._stuck():
            self._calm = 0
            return events  # a thread's result comes back through the loop's self-pipe
        self._busy_since = None
        self._calm += 1
        if self._calm < CALM:
            return events  # look once more: a thread just handed work may not show yet
        self._calm = 0
        if timeout is None:  # no timer at all: only the outside world can wake us
            return list(super().select(None))
        assert self.loop is not None
        self.loop.advance(timeout)
        return events

    def _stuck(self) -> bool:
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        return now - self._busy_since > STUCK


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time that jumps to its next timer whenever idle."""

    def __init__(self) -> None:
        selector = _IdleSelector()
        self._now = self._start = time.monotonic()
        self.jumps = 0  # how often the clock jumped
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self.jumps += 1

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the loop was made."""
        return self._now - self._start


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> tuple[T, VirtualTimeLoop]:
    """Run `main()` to completion on a fresh virtual-time loop."""
    loops: list[VirtualTimeLoop] = []

    def factory() -> VirtualTimeLoop:
        loops.append(VirtualTimeLoop())
        return loops[-1]

    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(main())
    return result, loops[0]


class LoopAlarms:
    """The scheduler's alarm clock on the loop's time (APScheduler's reads the real
    wall clock): the part of `AsyncIOScheduler` the scheduler uses, each alarm a timer
    due when `wall()` reaches the trigger's `run_date`."""

    def __init__(self, wall: Callable[[], datetime]) -> None:
        self._wall = wall
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._runs: set[asyncio.Task[Any]] = set()
        self._paused = False

    def start(self) -> None:
        self._paused = False

    def add_job(
        self,
        func: Callable[..., Coroutine[Any, Any, Any]],
        trigger: Any,
        *,
        args: list[Any],
        id: str,  # APScheduler's names
        **_: Any,
    ) -> None:
        self.remove_job(id)
        delay = max(0.0, (trigger.run_date - self._wall()).total_seconds())
        loop = asyncio.get_running_loop()
        self._timers[id] = loop.call_later(delay, self._ring, id, func, args)

    def _ring(
        self, id: str, func: Callable[..., Coroutine[Any, Any, Any]], args: list[Any]
    ) -> None:
        self._timers.pop(id, None)
        if not self._paused:
            run = asyncio.get_running_loop().create_task(func(*args))
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)

    def get_job(self, id: str) -> asyncio.TimerHandle | None:
        return self._timers.get(id)

    def remove_job(self, id: str) -> None:
        timer = self._timers.pop(id, None)
        if timer is not None:
            timer.cancel()

    def pause(self) -> None:
        self._paused = True

    def shutdown(self, wait: bool = False) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
