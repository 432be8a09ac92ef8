"""The sliding window a delivery run keeps with the outbox (a broadcast's copies to the
ponds, a segment's DMs): at most `WINDOW` messages handed over and not yet answered,
topped up by claims of at least `TOP_UP` rows, each answer recorded as it comes. The
outbox sends them as bulk requests at whatever of its budget the live ponds leave.

Of the messages handed over, only those on the wire (the outbox's concurrency at most)
can be left `unknown` by a crash; the rest were never issued and go with the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiogram.types import Message

WINDOW = 60
TOP_UP = 10  # the window is topped up once this many of it were answered
STOP_CHECK = 1.0  # while the window is full, how often a run looks whether the bot stops

Row = TypeVar("Row")
Answer = asyncio.Future[Message | None]


async def drive(
    in_flight: dict[Answer, Row],
    hand_over: Callable[[int], Awaitable[bool]],
    record: Callable[[list[tuple[Answer, Row]]], Awaitable[None]],
    stopping: Callable[[], bool],
) -> bool:
    """Keep the window full until nothing is left to hand over and every message handed
    over is answered. `hand_over(n)` queues up to n more messages into `in_flight`
    (False: none left); `record` writes the outcomes of answered ones. Once `stopping()`
    turns true nothing more is handed over and what is on the wire is recorded; returns
    whether the run was stopped that way (the rest is left for the next run)."""
    exhausted = interrupted = False
    while True:
        if not interrupted and stopping():
            interrupted = exhausted = True
        want = WINDOW - len(in_flight)
        if not exhausted and (want >= TOP_UP or not in_flight):
            exhausted = not await hand_over(want)
        if not in_flight:
            return interrupted  # nothing left to hand over (or stopping) and none on its way
        done, _pending = await asyncio.wait(
            in_flight, timeout=None if exhausted else STOP_CHECK,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if done:
            await record([(fut, in_flight.pop(fut)) for fut in done])
