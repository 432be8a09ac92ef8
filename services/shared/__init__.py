"""What several instances of the bot share, and the in-process stand-ins used without it.

One process needs nothing shared: its memory is the truth, and everything here is a
no-op (no await is added to its hot path). Several webhook instances behind a load
balancer (`REDIS_URL`, see `services.shared.redis_state`) share through Redis:

* `Peers` — a cache entry one instance drops (a pond's settings, a chat's admins, a
  sold-out item, a pond's open password packets, a packet that closed) is dropped by
  every other instance too. `tell(topic, key)` is the hook the caches call; `on(topic,
  forget)` is how the composition root says what "dropped" means in this process.
* `SendBudget` — Telegram's limits count the bot's messages, not one instance's: the
  outbox asks the shared budget before each request (see `services.outbox`).
* `BoardPacing` — a pond's board is refreshed once per interval by whichever instance
  gets there first, not once per interval by each (`services.board`).

This module imports nothing of Redis: the caches that call `tell` cost one attribute
look-up and a no-op call without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

ChatId = int | str
Forget = Callable[[Any], object]

# Topics of `Peers.tell`: what each key means.
ADMINS = "admins"  # a chat id: its admin list is to be fetched again
POND = "pond"  # a chat id (None: every pond): its settings are to be read again
CLOSED_ITEM = "closed_item"  # a shop item id: its sold-out memo is forgotten
PASSWORDS = "passwords"  # a chat id: its open password packets are to be read again
PACKET_CLOSED = "packet_closed"  # [packet id, chat id, state, [grabber ids]]


class Peers(Protocol):
    """The other instances of the bot, told when a cache entry is dropped here."""

    def tell(self, topic: str, key: Any) -> None:
        """Drop `key` of `topic` in every other instance (no-op without peers). Never
        raises and never waits: telling is best effort, the caches expire anyway."""

    def on(self, topic: str, forget: Forget) -> None:
        """Call `forget(key)` here when another instance tells `topic`."""


class NoPeers:
    """A single process: nobody to tell."""

    def tell(self, topic: str, key: Any) -> None:
        return None

    def on(self, topic: str, forget: Forget) -> None:
        return None


NO_PEERS: Peers = NoPeers()

_building: ContextVar[Peers] = ContextVar("pondbot_peers", default=NO_PEERS)


@contextmanager
def building_with(peers: Peers) -> Iterator[None]:
    """While the composition root builds the routers: the peers their machinery tells
    (a feature's caches made deep inside a router's setup find them with `peers_now`)."""
    token = _building.set(peers)
    try:
        yield
    finally:
        _building.reset(token)


def peers_now() -> Peers:
    """The peers of the dispatcher being built (`NO_PEERS` outside `building_with`)."""
    return _building.get()


class BoardPacing(Protocol):
    """One refresh of a pond's board per interval across every instance (each keeps
    its own pacing too)."""

    async def turn(self, board: str, chat_id: int, interval: float) -> float:
        """0: this instance refreshes the board now (the others wait `interval`);
        else the seconds until another instance's refresh no longer counts."""
        ...


class SendBudget(Protocol):
    """Telegram's limits shared by every instance (20/min per group, 30/s overall, about
    1/s per chat). The outbox asks before each request it issues."""

    async def take(self, chat: ChatId | None, *, bulk: bool = False) -> float:
        """Count one request to `chat` (None: a chat-less method) if every budget allows
        it now and return 0; else count nothing and return the seconds to wait first.
        A `bulk` request (a broadcast's copy) leaves `Limits.shared_bulk_headroom` places
        of the global window to the interactive requests of every instance."""
        ...

    async def board_turn(self, board: str, version: int) -> str | None:
        """An edit of `board` at `version` is about to be issued: a token (its turn,
        held until `board_done`) when it may go; "" when an edit of a newer version was
        issued (it is not to be sent); None while another instance's edit of the board
        is in flight (ask again shortly)."""
        ...

    async def board_done(self, board: str, token: str) -> None:
        """The edit whose turn `token` is was answered."""
        ...

    async def pause(self, chat: ChatId | None, seconds: float) -> None:
        """Telegram answered 429 for `chat` (None: for the bot as a whole): no instance
        sends there for `seconds`."""
        ...
