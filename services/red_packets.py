"""Red packets in this process: the machinery between the handlers and the database.

* **Turns and batches.** Grabs of one packet take turns here (`KeyedLock`): they would
  queue for the database's write lock anyway (SQLite sleeps while it waits for it).
  Grabs that arrive while a turn is running wait in the packet's queue, and the next
  turn grabs for all of them in one transaction (`storage.red_packets.grab_many`).
* **Closed packets.** Once a packet is finished, recalled or past its time this process
  remembers it, so the stampede of late clicks is answered from memory without touching the
  database. That memory is only a cache of a terminal state the database recorded.
* **Passwords.** `PasswordIndex` holds each pond's open password packets for a few
  seconds, so that ordinary chatter costs a dictionary look-up, not a query.
* **The post.** The packet's post is queued through the outbox (nobody waits for it) and
  edited in place as shares go; grabs finish out of order, and an older progress never
  overwrites a newer one (or the final result).

Nothing here is state: a restart forgets it all and the database answers instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from aiogram.filters import Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import EditMessageText, SendMessage
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from pydantic import Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from games.parsing import ParseError
from games.red_packet import (
    MAX_PASSWORD,
    PacketLimits,
    PacketState,
    Refusal,
    funding,
    normalize_password,
    packet_limits,
    parse_packet,
    split,
)
from services.lru import LRU
from services.outbox import Outbox, OutboxClosedError
from services.shared import PACKET_CLOSED, PASSWORDS, peers_now
from services.texts import red_packet as texts
from storage import red_packets, repo
from storage.db import Database
from storage.models import Job
from storage.red_packets import Grab, GrabRequest, PacketCard

MAX_ID = 2**63 - 1
GROUPS = ("group", "supergroup")


class RedPacketCB(CallbackData, prefix="rp"):
    """The grab button: the packet's id, nothing else (bounded: a signed 64-bit id)."""

    id: int = Field(ge=1, le=MAX_ID)


def keyboard(packet_id: int) -> InlineKeyboardMarkup:
    data = RedPacketCB(id=packet_id).pack()
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=texts.button(), callback_data=data)]]
    )


class Scheduler(Protocol):
    """What the feature needs of the scheduler (`scheduler.core.Scheduler`, a layer
    above): its clock, and the packet's expiry task."""

    @property
    def clock(self) -> Callable[[], datetime]: ...

    async def schedule(
        self,
        at: datetime,
        job: str,
        key: str,
        payload: dict[str, Any] | None = None,
        *,
        session: AsyncSession | None = None,
        chat_id: int | None = None,
    ) -> bool: ...

    async def cancel(self, key: str, *, session: AsyncSession | None = None) -> bool: ...


class KeyedLock:
    """One asyncio lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class PasswordIndex:
    """The pond's open password packets, read from the database at most every `ttl`
    seconds per pond (and at once after this process opens or closes one), so that
    ordinary chatter costs a dictionary look-up, not a query."""

    def __init__(self, ttl: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: LRU[int, Any] = LRU(10_000)  # chat id -> (valid until, {password: id})

    def invalidate(self, chat_id: int) -> None:
        self._entries.pop(chat_id, None)

    async def match(
        self, db: Database, chat_id: int, text: str, now: Callable[[], datetime]
    ) -> int | None:
        """The open packet in `chat_id` whose password `text` is (None: none is).
        `now` is the scheduler's clock, read only when the database is asked."""
        hit = self._entries.get(chat_id)
        if hit is None or hit[0] <= self._clock():
            async with db.transaction(readonly=True) as session:
                found = await red_packets.open_passwords(session, chat_id, now())
            hit = (self._clock() + self.ttl, found)
            self._entries.put(chat_id, hit)
        passwords: dict[str, int] = hit[1]
        return passwords.get(normalize_password(text)) if passwords else None


class PasswordTyped(Filter):
    """A group message that is exactly the password of an open packet there."""

    def __init__(self, index: PasswordIndex) -> None:
        self.index = index

    async def __call__(
        self, message: Message, db: Database, scheduler: Scheduler
    ) -> bool | dict[str, Any]:
        text = message.text
        if (
            not text
            or len(text) > 2 * MAX_PASSWORD
            or text.startswith("/")
            or message.chat.type not in GROUPS
        ):
            return False
        packet_id = await self.index.match(db, message.chat.id, text, scheduler.clock)
        return False if packet_id is None else {"packet_id": packet_id}


class DataPrefix(Filter):
    """Callback data that starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def __call__(self, query: CallbackQuery) -> bool:
        return bool(query.data and query.data.startswith(self.prefix))


class BadArgs(Exception):
    """The command's arguments do not make a packet (`code`: see `parse_packet`)."""

    def __init__(self, code: str, limits: PacketLimits) -> None:
        super().__init__(code)
        self.code = code
        self.limits = limits


class MembersMayNotSend(Exception):
    """The pond lets only its operators send packets."""


@dataclass(frozen=True, slots=True)
class Dropped:
    card: PacketCard
    needs_post: bool  # False: a redelivered command whose packet was shown already


@dataclass(frozen=True, slots=True)
class Recalled:
    """What `/redpacket recall` did: `recalled` (the packet as it ends), or nothing —
    `replay` (this very command recalled it before), `unknown` (no such packet in this
    pond), `not_allowed` (neither an operator nor its sender), `closed` (over already)."""

    kind: str
    card: PacketCard | None = None


@dataclass(frozen=True, slots=True)
class Sender:
    """Who typed `/redpacket`, as the handler found out."""

    person: repo.UserInfo | None
    name: str
    operator: bool
    global_operator: bool
    actor_id: int | None  # whose daily cap a shop-funded packet counts against


def board_key(packet_id: int) -> str:
    """The outbox's key for edits of a packet's post (queued ones are coalesced)."""
    return f"rp:{packet_id}"


class RedPackets:
    """The feature's per-process machinery (see the module docstring)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.SystemRandom()
        self.closed: LRU[int, Any] = LRU(50_000)  # packet id -> (chat id, state, grabber ids)
        self.passwords = PasswordIndex()
        self._shown: LRU[int, int] = LRU(10_000)  # packet id -> progress last queued
        self._turns = KeyedLock()
        # Grabs waiting for their packet's turn; the next turn takes them all at once.
        self._queued: dict[int, list[tuple[GrabRequest, asyncio.Future[Grab]]]] = {}
        # Other instances (Redis): told of a packet closed here and of a pond's password
        # packets changed here; they are told of theirs.
        self.peers = peers_now()
        self.peers.on(PASSWORDS, self.passwords.invalidate)
        self.peers.on(PACKET_CLOSED, self._closed_elsewhere)

    # -- making a packet -------------------------------------------------------------------

    async def create(
        self,
        db: Database,
        scheduler: Scheduler,
        *,
        chat_id: int,
        text: str | None,
        sender: Sender,
        source_key: str,
        timezone: str,
    ) -> Dropped:
        """Record (and fund) the packet `text` describes and schedule its expiry. Raises
        `BadArgs`, `MembersMayNotSend`, `ledger.InsufficientPoints`, `repo.OverAllowance`;
        nothing changes then."""
        now = scheduler.clock()
        async with db.transaction() as session:
            settings = await repo.pond_settings(session, chat_id)
            limits = packet_limits(settings)
            try:
                args = parse_packet(text, limits)
            except ParseError as exc:
                raise BadArgs(exc.code, limits) from exc
            payer = funding(
                operator=sender.operator,
                global_operator=sender.global_operator,
                members_may_send=settings.redpacket_members_may_send,
            )
            if payer is None:
                raise MembersMayNotSend
            created = await red_packets.create(
                session,
                chat_id=chat_id,
                funder=sender.person,
                funder_name=sender.name,
                shop_funded=payer.shop_funded,
                args=args,
                amounts=split(args.total, args.shares, args.mode, self.rng),
                source_key=source_key,
                now=now,
            )
            card = created.card
            if created.applied:
                if payer.capped:
                    assert sender.actor_id is not None
                    await repo.spend_operator_allowance(
                        session, chat_id, sender.actor_id, args.total,
                        timezone=timezone, now=now,
                    )
                await scheduler.schedule(
                    card.expires_at,
                    Job.red_packet_expire,
                    red_packets.expiry_task_key(card.id),
                    {"packet_id": card.id},
                    session=session,
                    chat_id=chat_id,
                )
        # A redelivered command whose packet exists and was shown says nothing; one whose
        # post was lost (a crash before it went out) posts it now.
        shown = card.message_id is not None or card.closed or card.expires_at <= now
        needs_post = created.applied or not shown
        if needs_post and card.password is not None:
            self.passwords.invalidate(chat_id)
            self.peers.tell(PASSWORDS, chat_id)
        return Dropped(card, needs_post)

    def post(
        self,
        db: Database,
        outbox: Outbox,
        card: PacketCard,
        timezone: str,
        thread_id: int | None = None,
    ) -> bool:
        """Queue the packet's post; nobody waits for it (the pond's queue may be long).
        Its message id is stored when Telegram answers — the only source of that id: a
        press before that is "not ready" — and the post brought up to date if typed
        passwords took shares meanwhile (or the packet closed). False when the post is
        already on its way."""

        async def record(sent: Message) -> None:
            async with db.transaction() as session:
                await red_packets.set_message(session, card.id, sent.message_id)
                now = await red_packets.get_card(session, card.id, with_grabs=True)
            if now is not None and (now.taken or now.closed):
                with contextlib.suppress(OutboxClosedError):  # stopping: the next grab shows it
                    self.show(outbox, now, timezone)

        queued = outbox.post(
            SendMessage(
                chat_id=card.chat_id,
                message_thread_id=thread_id,
                text=texts.post(card, timezone),
                reply_markup=keyboard(card.id),
            ),
            key=f"rp:{card.id}",
            record=record,
        )
        return queued is not None

    async def recall(
        self,
        db: Database,
        scheduler: Scheduler,
        *,
        packet_id: int,
        chat_id: int,
        user_id: int | None,
        operator: bool,
        key: str,
    ) -> Recalled:
        """Take an open packet back: an operator any packet of the pond, a member their
        own. The unclaimed shares of a member's packet go back to them, once
        (`storage.red_packets.recall`); later presses are answered "recalled", from this
        process's memory at once. `key` names the command message: it is recorded as a
        run of the packet's expiry job due now (which finds the packet recalled and
        shows it, also after a restart), so a redelivered command finds it taken and
        does nothing again. In the packet's turn: grabs queued behind it find it closed."""
        async with self._turns.hold(packet_id):
            now = scheduler.clock()
            async with db.transaction() as session:
                card = await red_packets.get_card(session, packet_id)
                if card is None or card.chat_id != chat_id:
                    return Recalled("unknown")
                if not operator and (user_id is None or card.funder_id != user_id):
                    return Recalled("not_allowed", card)
                if card.closed:
                    return Recalled("closed", card)
                payload = {"packet_id": packet_id}
                if not await scheduler.schedule(
                    now, Job.red_packet_expire, key, payload, session=session, chat_id=chat_id
                ):
                    return Recalled("replay", card)
                done = await red_packets.recall(session, packet_id, now=now)
            assert done is not None
            if not done.applied:  # PostgreSQL: another process's grab took the last share
                return Recalled("closed", done.card)
            self._remember_closed(done.card, PacketState.recalled)
        if done.card.password is not None:
            self.passwords.invalidate(chat_id)
        return Recalled("recalled", done.card)

    # -- grabbing ---------------------------------------------------------------------------

    def known_refusal(self, packet_id: int, chat_id: int | None, user_id: int) -> Refusal | None:
        """The answer to a grab of a packet this process knows is closed (None: it does
        not know it closed; ask the database)."""
        known = self.closed.get(packet_id)
        if known is None:
            return None
        closed_chat, state, grabbers = known
        if closed_chat != chat_id:
            return Refusal.wrong_chat
        if user_id in grabbers:
            return Refusal.already
        if state is PacketState.finished:
            return Refusal.gone
        return Refusal.recalled if state is PacketState.recalled else Refusal.expired

    def is_closed(self, packet_id: int) -> bool:
        return packet_id in self.closed

    async def grab(
        self, db: Database, scheduler: Scheduler, packet_id: int, request: GrabRequest
    ) -> Grab:
        """Grab in the packet's turn; whoever gets the turn grabs for everyone queued
        behind the previous one, in one transaction."""
        outcome: asyncio.Future[Grab] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(packet_id, []).append((request, outcome))
        async with self._turns.hold(packet_id):
            if not outcome.done():
                batch = self._queued.pop(packet_id)
                try:
                    grabs = await self._grab_batch(db, scheduler, packet_id, batch)
                except BaseException:
                    # The others are still waiting for a turn: they try again in theirs.
                    others = [item for item in batch if item[1] is not outcome]
                    self._queued.setdefault(packet_id, [])[:0] = others
                    raise
                for (_, other), grab in zip(batch, grabs, strict=True):
                    other.set_result(grab)
        return outcome.result()

    async def _grab_batch(
        self,
        db: Database,
        scheduler: Scheduler,
        packet_id: int,
        batch: list[tuple[GrabRequest, asyncio.Future[Grab]]],
    ) -> list[Grab]:
        requests = [r for r, _ in batch]
        if packet_id in self.closed:  # closed while these waited for their turn
            return [
                Grab(packet_id, self.known_refusal(packet_id, r.chat_id, r.user.id))
                for r in requests
            ]
        now = scheduler.clock()
        grabs: list[Grab] | None
        try:
            async with db.transaction() as session:
                found = await red_packets.grab_many(session, packet_id, requests, now=now)
                if found is not None and any(g.finished for g in found):
                    await scheduler.cancel(red_packets.expiry_task_key(packet_id), session=session)
                    card = await red_packets.get_card(session, packet_id, with_grabs=True)
                    found = [replace(g, card=card) if g.card is not None else g for g in found]
            grabs = found
        except IntegrityError:
            grabs = None  # PostgreSQL: a member's concurrent grab in another process
        if grabs is None:
            # The packet moved under us (another process grabbed meanwhile): each on its own.
            grabs = [await self._grab_one(db, scheduler, packet_id, r) for r in requests]
        for grab in grabs:
            if grab.closed is not None and grab.card is not None:
                self._remember_closed(grab.card, grab.closed)
                break
        return grabs

    async def _grab_one(
        self, db: Database, scheduler: Scheduler, packet_id: int, request: GrabRequest
    ) -> Grab:
        now = scheduler.clock()
        try:
            async with db.transaction() as session:
                grab = await red_packets.grab(
                    session,
                    packet_id=packet_id,
                    user=request.user,
                    chat_id=request.chat_id,
                    message_id=request.message_id,
                    by_password=request.by_password,
                    now=now,
                    genuine=request.genuine,
                )
                if grab.finished:
                    await scheduler.cancel(red_packets.expiry_task_key(packet_id), session=session)
                    card = await red_packets.get_card(session, packet_id, with_grabs=True)
                    grab = Grab(packet_id, None, grab.amount, card, grab.closed)
        except IntegrityError:
            # PostgreSQL: the same member's concurrent grab took a share first.
            return Grab(packet_id, Refusal.already)
        return grab

    def after(self, grab: Grab, outbox: Outbox, timezone: str) -> None:
        """Remember a closed packet; bring its post up to date."""
        card = grab.card
        if card is None:
            return
        if grab.closed is not None:
            self._remember_closed(card, grab.closed)
        if grab.refused is None:
            self.show(outbox, card, timezone)

    def _remember_closed(self, card: PacketCard, state: PacketState) -> None:
        grabbers = frozenset(g.user_id for g in card.grabs)
        known = card.id in self.closed
        self.closed.put(card.id, (card.chat_id, state, grabbers))
        if not known:
            self.peers.tell(PACKET_CLOSED, [card.id, card.chat_id, state.value, sorted(grabbers)])
            if card.password is not None:
                self.peers.tell(PASSWORDS, card.chat_id)

    def _closed_elsewhere(self, told: list[Any]) -> None:
        """Another instance closed a packet: late presses here are answered from memory.
        (An older progress of ours never follows its result: the post's edits carry
        their version, see `Outbox.board`.)"""
        packet_id, chat_id, state, grabbers = told
        self.closed.put(packet_id, (chat_id, PacketState(state), frozenset(grabbers)))

    def show(self, outbox: Outbox, card: PacketCard, timezone: str) -> None:
        """Edit the post to show `card` (coalesced by the outbox), unless a newer
        progress was queued already."""
        if card.message_id is None:
            return
        version = card.shares + 1 if card.closed else card.taken
        if self._shown.get(card.id, -1) >= version:
            return
        self._shown.put(card.id, version)
        text = texts.result(card) if card.closed else texts.post(card, timezone)
        outbox.board(
            board_key(card.id),
            EditMessageText(
                chat_id=card.chat_id,
                message_id=card.message_id,
                text=text,
                reply_markup=None if card.closed else keyboard(card.id),
            ),
            version=version,
        )
