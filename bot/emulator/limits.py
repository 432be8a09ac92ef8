"""Telegram's flood limits as the emulator enforces them.

- per group/supergroup: at most ``group_per_minute`` messages in any rolling 60 s;
- per chat: a token bucket of ``chat_burst`` messages refilling ``chat_rate`` per second;
- overall: at most ``global_per_second`` messages in any rolling second.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeClock", "FloodLimiter", "FloodRules", "max_in_window", "send_rates"]


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


def max_in_window(times: Iterable[float], window: float) -> int:
    """The most of ``times`` inside any half-open window ``(t - window, t]``, the way
    the limiter counts."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def send_rates(
    sends: Iterable[Mapping[str, Any]], chat_ids: Iterable[int] | None = None
) -> dict[str, Any]:
    """The busiest windows of a send log (entries with ``at``, ``chat_id``, ``group``
    and ``ok``), optionally only for ``chat_ids``: every attempt counts, also one the
    limits refused (a bot that tried to outrun them shows here).

    ``per_second``: overall in any second; ``per_chat_second``: one chat in any second;
    ``per_group_minute``: one group in any 60 s; ``busiest_group``: that group's id;
    ``sent``/``refused``: how many were let through/refused."""
    wanted = None if chat_ids is None else set(chat_ids)
    times: list[float] = []
    by_chat: dict[int, list[float]] = defaultdict(list)
    groups: set[int] = set()
    sent = refused = 0
    for entry in sends:
        chat_id = int(entry["chat_id"])
        if wanted is not None and chat_id not in wanted:
            continue
        at = float(entry["at"])
        times.append(at)
        by_chat[chat_id].append(at)
        if entry.get("group"):
            groups.add(chat_id)
        if entry.get("ok", True):
            sent += 1
        else:
            refused += 1
    per_group = {chat_id: max_in_window(by_chat[chat_id], 60.0) for chat_id in groups}
    busiest = max(per_group, key=per_group.__getitem__, default=None)
    return {
        "per_second": max_in_window(times, 1.0),
        "per_chat_second": max((max_in_window(t, 1.0) for t in by_chat.values()), default=0),
        "per_group_minute": per_group[busiest] if busiest is not None else 0,
        "busiest_group": busiest,
        "sent": sent,
        "refused": refused,
    }
