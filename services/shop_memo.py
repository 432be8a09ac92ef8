"""What a `/redeem` storm on an item that is not on sale has just learnt.

When the last coupons of an item go, thousands of members may still type `/redeem` for
it. The first refusal for a reason that only an operator can change (`sold_out`,
`off_sale`, `not_yet`, `ended`, `unknown_item`) is remembered for `ttl` seconds, and
the refusals after it are answered from memory, before any database work. What an
operator does in this process (`/item on`, `/item codes`, a `/refund` that puts a unit
back) forgets the item at once; in another process the memory runs out within `ttl`, so
a member is told "sold out" at most that long after a restock (with Redis, the other
instances are told at once: `peers`). A redemption is never
decided here: `storage.shop.redeem` decides under the item's lock.

Before the first refusal is known, a crowd's `/redeem`s arrive together and would each
read the database: `look` lets them share one read — one look runs, and those asking
meanwhile take its refusal when it is one to remember, else look on their own (a
replay, or an item still on sale, is each command's own business).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from services.lru import LRU
from services.shared import CLOSED_ITEM, NO_PEERS, Peers

REMEMBERED = frozenset({"sold_out", "off_sale", "not_yet", "ended", "unknown_item"})


class ClosedItems:
    def __init__(
        self, *, ttl: float = 2.0, size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._items: LRU[int, tuple[str, float]] = LRU(size)
        self._looking: dict[int, asyncio.Future[str | None]] = {}  # item -> the look running
        self.peers: Peers = NO_PEERS  # other instances: they forget the item too

    def refusal(self, item_id: int) -> str | None:
        """The remembered refusal for this item, while it is fresh."""
        hit = self._items.get(item_id)
        if hit is None:
            return None
        if hit[1] < self._clock():
            self._items.pop(item_id, None)
            return None
        return hit[0]

    def remember(self, item_id: int, code: str) -> None:
        if code in REMEMBERED:
            self._items.put(item_id, (code, self._clock() + self.ttl))

    def forget(self, item_id: int) -> None:
        self._items.pop(item_id, None)
        self.peers.tell(CLOSED_ITEM, item_id)

    async def look(self, item_id: int, read: Callable[[], Awaitable[str | None]]) -> str | None:
        """`read()`: the database's refusal for one command (see above)."""
        running = self._looking.get(item_id)
        if running is not None:
            shared = await asyncio.shield(running)
            return shared if shared in REMEMBERED else await read()
        mine: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._looking[item_id] = mine
        refused: str | None = None
        try:
            refused = await read()
        finally:
            if self._looking.get(item_id) is mine:
                del self._looking[item_id]
            mine.set_result(refused)  # a look that failed shares nothing: the others read
        return refused
