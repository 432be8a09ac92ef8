"""Process-wide tuning applied once the bot has started."""

from __future__ import annotations

import gc

# Young-generation collections run after this many net allocations (CPython: 700).
GC_THRESHOLD = (50_000, 20, 20)


def tune_gc() -> None:
    """A serving bot holds a large heap that never changes after start-up (aiogram's
    types, SQLAlchemy's mappers and statement caches). In a burst of updates — thousands
    of members pressing one button — objects of the updates in flight survive the young
    collections and trigger full sweeps of that whole heap, which then cost more than the
    updates themselves. Freeze what exists after start-up out of the collector's view and
    collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
