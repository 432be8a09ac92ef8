"""A small bounded mapping that forgets its least recently stored entries.

The in-process caches (who was last written, which seats are known, a pond's settings,
a red packet's closed state) only spare the database work: whatever they forget is read
again. `LRU.put` stores a key as the most recent; once more than `size` keys are held,
the oldest goes. Reading with `get` or `in` does not make a key recent (call
`move_to_end` for that), so a cache that only stores on a miss keeps what it stored
last.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(OrderedDict[K, V]):
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("an LRU holds at least one entry")
        super().__init__()
        self.size = size

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)
