"""Telegram's flood limits as the emulator enforces them.

- per group/supergroup: at most ``group_per_minute`` messages in any rolling 60 s;
- per chat: a token bucket of ``chat_burst`` messages refilling ``chat_rate`` per second;
- overall: at most ``global_per_second`` messages in any rolling second.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FakeClock", "FloodLimiter", "FloodRules"]


class FakeClock:
    """A monotonic clock a test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class FloodRules:
    group_per_minute: int = 20
    chat_burst: float = 5.0
    chat_rate: float = 1.0
    global_per_second: int = 30


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class FloodLimiter:
    clock: Callable[[], float]
    rules: FloodRules = field(default_factory=FloodRules)
    enabled: bool = True
    _groups: dict[int, deque[float]] = field(default_factory=dict)
    _buckets: dict[int, _Bucket] = field(default_factory=dict)
    _global: deque[float] = field(default_factory=deque)

    def _bucket(self, chat_id: int, now: float) -> _Bucket:
        bucket = self._buckets.get(chat_id)
        if bucket is None:
            bucket = self._buckets[chat_id] = _Bucket(self.rules.chat_burst, now)
        bucket.tokens = min(
            self.rules.chat_burst, bucket.tokens + (now - bucket.stamp) * self.rules.chat_rate
        )
        bucket.stamp = now
        return bucket

    def check(self, chat_id: int, is_group: bool) -> int | None:
        """Seconds to wait before a message to ``chat_id`` may go out, or None if it may."""
        if not self.enabled:
            return None
        now = self.clock()
        waits: list[float] = []
        while self._global and self._global[0] <= now - 1.0:
            self._global.popleft()
        if len(self._global) >= self.rules.global_per_second:
            waits.append(self._global[0] + 1.0 - now)
        if is_group:
            window = self._groups.setdefault(chat_id, deque())
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= self.rules.group_per_minute:
                waits.append(window[-self.rules.group_per_minute] + 60.0 - now)
        bucket = self._bucket(chat_id, now)
        if bucket.tokens < 1.0:
            waits.append((1.0 - bucket.tokens) / self.rules.chat_rate)
        if not waits:
            return None
        return max(1, math.ceil(max(waits) - 1e-9))

    def record(self, chat_id: int, is_group: bool) -> None:
        """Count one message that went out to ``chat_id``."""
        now = self.clock()
        self._global.append(now)
        if is_group:
            self._groups.setdefault(chat_id, deque()).append(now)
        bucket = self._bucket(chat_id, now)
        bucket.tokens -= 1.0

    def reset(self) -> None:
        self._groups.clear()
        self._buckets.clear()
        self._global.clear()
