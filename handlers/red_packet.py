"""Red packets (抢红包): `/redpacket`, the grab button, typed passwords.

    /redpacket <total> <shares> [random|equal] [pwd=<口令>] [for=<duration>]

Operators drop packets paid by the shop; members send packets from their own balance.
A grab is answered with a toast (answerCallbackQuery), never a group message; the
packet's own message is edited in place (coalesced by the outbox) with the progress and,
at the end, who got what. A password packet is grabbed by typing its password in the
group; its button only says so.

Once a packet is closed (every share taken, or its time is up) this process remembers
that, so the stampede of late clicks is answered from memory without touching the
database. That memory is only a cache of a terminal state the database recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
)
from pydantic import Field
from sqlalchemy.exc import IntegrityError

from games.parsing import ParseError
from games.red_packet import (
    MAX_PASSWORD,
    PacketArgs,
    PacketLimits,
    PacketState,
    Refusal,
    normalize_password,
    parse_packet,
    split,
)
from handlers.startup import active_ponds, log_restored, startup_deps
from scheduler.core import Scheduler
from services.messaging import carries_button, reply
from services.middlewares import PondInfo
from services.operators import OperatorPolicy
from services.outbox import Outbox, OutboxClosedError
from services.shortcuts import Shortcuts
from services.texts import ponds as pond_texts
from services.texts import red_packet as texts
from storage import ledger, red_packets, repo
from storage.db import Database
from storage.models import Job
from storage.red_packets import Grab, GrabRequest, PacketCard

log = logging.getLogger(__name__)

GROUPS = ("group", "supergroup")
MAX_ID = 2**63 - 1
TOAST_CHARS = 200


class RedPacketCB(CallbackData, prefix="rp"):
    """The grab button: the packet's id, nothing else (bounded: a signed 64-bit id)."""

    id: int = Field(ge=1, le=MAX_ID)


class _LRU(OrderedDict[int, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: int, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class KeyedLock:
    """One asyncio lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

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
        self._entries: _LRU = _LRU(10_000)  # chat id -> (valid until, {password: id})

    def invalidate(self, chat_id: int) -> None:
        self._entries.pop(chat_id, None)

    async def match(
        self, db: Database, chat_id: int, text: str, scheduler: Scheduler
    ) -> int | None:
        hit = self._entries.get(chat_id)
        if hit is None or hit[0] <= self._clock():
            async with db.transaction(readonly=True) as session:
                found = await red_packets.open_passwords(session, chat_id, scheduler.clock())
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
        packet_id = await self.index.match(db, message.chat.id, text, scheduler)
        return False if packet_id is None else {"packet_id": packet_id}


class DataPrefix(Filter):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def __call__(self, query: CallbackQuery) -> bool:
        return bool(query.data and query.data.startswith(self.prefix))


def keyboard(packet_id: int) -> InlineKeyboardMarkup:
    data = RedPacketCB(id=packet_id).pack()
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=texts.button(), callback_data=data)]]
    )


def _display(first: str, last: str) -> str:
    return f"{first} {last}".strip()


class RedPackets:
    """The feature's handlers and its per-process caches (nothing here is state)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.SystemRandom()
        self.closed: _LRU = _LRU(50_000)  # packet id -> (chat id, state, grabber ids)
        self.passwords = PasswordIndex()
        # Progress last queued per packet: grabs finish out of order, and an older
        # progress must never overwrite a newer one (or the final result).
        self._shown: _LRU = _LRU(10_000)
        # Grabs of one packet take turns in this process: they would queue for the
        # database's write lock anyway (SQLite sleeps while it waits for it), and
        # whoever waited behind the last share is answered from memory.
        self._turns = KeyedLock()
        # Grabs waiting for their packet's turn; the next turn takes them all at once.
        self._queued: dict[int, list[tuple[GrabRequest, asyncio.Future[Grab]]]] = {}

    def router(self) -> Router:
        """`/redpacket` and typed passwords."""
        router = Router(name="red_packet")
        router.message.register(self.create, Command("redpacket"))
        router.message.register(self.grab_by_password, PasswordTyped(self.passwords))
        router.startup.register(self.restore_posts)
        return router

    def buttons(self) -> Router:
        """The grab button. Its callback data is the feature's own, so this router may be
        tried early: a stampede of clicks then skips the other features' routers."""
        router = Router(name="red_packet_buttons")
        router.callback_query.register(self.grab_by_button, RedPacketCB.filter())
        router.callback_query.register(self.forged, DataPrefix(f"{RedPacketCB.__prefix__}:"))
        return router

    # -- /redpacket ----------------------------------------------------------------------

    async def create(
        self,
        message: Message,
        command: CommandObject,
        bot: Bot,
        db: Database,
        outbox: Outbox,
        operators: OperatorPolicy,
        scheduler: Scheduler,
        person: repo.UserInfo | None,
        pond: PondInfo | None,
    ) -> None:
        chat = message.chat
        if chat.type not in GROUPS:
            reply(outbox, message, texts.groups_only())
            return
        is_operator = await operators.is_operator(
            bot, chat, message.from_user, message.sender_chat
        )
        if person is None and not is_operator:
            reply(outbox, message, texts.not_a_member())
            return
        funder_name = _display(person.first_name, person.last_name) if person else ""
        funder_name = funder_name or (f"@{person.username}" if person and person.username else "")
        funder_name = funder_name or chat.title or ""
        now = scheduler.clock()
        problem: str | None = None
        card: PacketCard | None = None
        replayed = False
        try:
            async with db.transaction() as session:
                settings = await repo.pond_settings(session, chat.id)
                limits = PacketLimits(
                    max_total=settings.redpacket_max_total,
                    max_shares=settings.redpacket_max_shares,
                    default_expiry=_seconds(settings.redpacket_expiry_seconds),
                    max_expiry=_seconds(settings.redpacket_max_expiry_seconds),
                )
                args: PacketArgs | None = None
                try:
                    args = parse_packet(command.args, limits)
                except ParseError as exc:
                    problem = texts.parse_error(
                        exc.code,
                        max_total=limits.max_total,
                        max_shares=limits.max_shares,
                        max_expiry_hours=int(limits.max_expiry.total_seconds() // 3600),
                    )
                if args is not None and not is_operator and not settings.redpacket_members_may_send:
                    problem = texts.members_may_not_send()
                if problem is None and args is not None:
                    created = await red_packets.create(
                        session,
                        chat_id=chat.id,
                        funder=person,
                        funder_name=funder_name,
                        shop_funded=is_operator,
                        args=args,
                        amounts=split(args.total, args.shares, args.mode, self.rng),
                        source_key=f"{chat.id}:{message.message_id}",
                        now=now,
                    )
                    card = created.card
                    replayed = not created.applied
                    if not replayed and is_operator and not operators.is_global(
                        message.from_user, message.sender_chat
                    ):
                        # The shop pays a pond admin's packet: it counts like a /give.
                        actor = message.sender_chat or message.from_user
                        assert actor is not None
                        await repo.spend_operator_allowance(
                            session, chat.id, actor.id, args.total,
                            timezone=_timezone(pond), now=now,
                        )
                    if not replayed:
                        await scheduler.schedule(
                            card.expires_at,
                            Job.red_packet_expire,
                            red_packets.expiry_task_key(card.id),
                            {"packet_id": card.id},
                            session=session,
                            chat_id=chat.id,
                        )
        except ledger.InsufficientPoints as exc:
            reply(outbox, message, texts.insufficient(exc.balance, exc.needed))
            return
        except repo.OverAllowance as over:
            reply(outbox, message, pond_texts.give_cap_reached(over.left, over.cap))
            return
        if problem is not None or card is None:
            reply(outbox, message, problem or texts.usage())
            return
        if replayed and (card.message_id is not None or card.closed or card.expires_at <= now):
            return  # a redelivered command: the packet exists and was shown, say nothing
        # New, or redelivered after its post was lost (a crash before it went out).
        if card.password is not None:
            self.passwords.invalidate(chat.id)
        thread = message.message_thread_id if message.is_topic_message else None
        self.post(db, outbox, card, _timezone(pond), thread)

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
                    self._show(outbox, now, timezone)

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

    async def restore_posts(self, router: Router) -> None:
        """At start: post the open packets whose post never went out (handlers/startup.py,
        "lost posts")."""
        deps = startup_deps(router)
        async with deps.db.transaction(readonly=True) as session:
            lost = await red_packets.unposted(session, deps.scheduler.clock())
            ponds = await active_ponds(session, [c.chat_id for c in lost])
        posted = 0
        for card in lost:
            pond = ponds.get(card.chat_id)
            if pond is not None:
                with deps.speaking(pond.language):
                    posted += self.post(deps.db, deps.outbox, card, pond.timezone)
        log_restored("red packet", posted)

    # -- grabbing ---------------------------------------------------------------------------

    async def grab_by_button(
        self,
        query: CallbackQuery,
        callback_data: RedPacketCB,
        bot: Bot,
        db: Database,
        outbox: Outbox,
        scheduler: Scheduler,
        person: repo.UserInfo | None,
        pond: PondInfo | None,
    ) -> None:
        packet_id = callback_data.id
        message = query.message
        chat_id = message.chat.id if message is not None else None
        if await self._answer_closed(query, packet_id, outbox):
            return
        if person is None:
            await _toast(outbox, query, texts.refused(Refusal.not_member))
            return
        if message is None or chat_id is None or not 0 < packet_id <= MAX_ID:
            await _toast(outbox, query, texts.refused(Refusal.unknown))
            return
        request = GrabRequest(
            person, chat_id, message.message_id, False, carries_button(message, query, bot)
        )
        grab = await self._grab(db, scheduler, packet_id, request)
        if grab.refused is None:
            assert grab.amount is not None
            await _toast(outbox, query, texts.grabbed(grab.amount))
        else:
            password = grab.card.password if grab.card is not None else None
            await _toast(outbox, query, texts.refused(grab.refused, password))
        self._after(grab, outbox, pond)

    async def grab_by_password(
        self,
        message: Message,
        packet_id: int,
        db: Database,
        outbox: Outbox,
        scheduler: Scheduler,
        person: repo.UserInfo | None,
        pond: PondInfo | None,
    ) -> None:
        if person is None or packet_id in self.closed:
            return
        request = GrabRequest(person, message.chat.id, None, True)
        grab = await self._grab(db, scheduler, packet_id, request)
        if grab.closed is not None:
            self.passwords.invalidate(message.chat.id)
        quiet = outbox.pending(message.chat.id) == 0
        if grab.refused is None and grab.amount is not None and quiet:
            # Nothing else is on its way to the pond: a quiet confirmation is welcome.
            # In a rush the board's progress is the answer (it keeps the group calm).
            outbox.send(
                SendMessage(
                    chat_id=message.chat.id,
                    text=texts.grabbed_by_password(
                        _display(person.first_name, person.last_name), grab.amount
                    ),
                    disable_notification=True,
                    reply_parameters=ReplyParameters(
                        message_id=message.message_id, allow_sending_without_reply=True
                    ),
                ),
                droppable=True,  # a courtesy: the board shows the grab anyway
            )
        self._after(grab, outbox, pond)

    async def answer_from_memory(
        self, query: CallbackQuery, payload: str, data: dict[str, Any]
    ) -> bool:
        """The `rp:` shortcut (see bot.shortcuts): a press on a packet known to be
        closed is answered before routing; anything else goes on to `grab_by_button`."""
        if not (payload.isascii() and payload.isdigit() and len(payload) <= 19):
            return False
        return await self._answer_closed(query, int(payload), data["outbox"])

    async def _answer_closed(self, query: CallbackQuery, packet_id: int, outbox: Outbox) -> bool:
        known = self.closed.get(packet_id)
        if known is None:
            return False
        closed_chat, state, grabbers = known
        message = query.message
        if message is None or closed_chat != message.chat.id:
            why = Refusal.wrong_chat
        elif query.from_user.id in grabbers:
            why = Refusal.already
        else:
            why = Refusal.gone if state is PacketState.finished else Refusal.expired
        await _toast(outbox, query, texts.refused(why))
        return True

    async def forged(self, query: CallbackQuery, outbox: Outbox) -> None:
        """Button data with our prefix that is not a packet id."""
        await _toast(outbox, query, texts.refused(Refusal.unknown))

    async def _grab(
        self, db: Database, scheduler: Scheduler, packet_id: int, request: GrabRequest
    ) -> Grab:
        outcome: asyncio.Future[Grab] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(packet_id, []).append((request, outcome))
        async with self._turns.hold(packet_id):
            if not outcome.done():
                # Whoever gets the turn grabs for everyone queued behind the previous
                # turn: one transaction for all of them.
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
        known = self.closed.get(packet_id)
        if known is not None:
            return [self._from_memory(packet_id, known, r) for r in requests]
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
            grabs = [await self._grab_now(db, scheduler, packet_id, r) for r in requests]
        for grab in grabs:
            if grab.closed is not None and grab.card is not None:
                self._remember_closed(grab.card, grab.closed)
                break
        return grabs

    @staticmethod
    def _from_memory(packet_id: int, known: Any, request: GrabRequest) -> Grab:
        chat, state, grabbers = known
        if chat != request.chat_id:
            return Grab(packet_id, Refusal.wrong_chat)
        if request.user.id in grabbers:
            return Grab(packet_id, Refusal.already)
        gone = state is PacketState.finished
        return Grab(packet_id, Refusal.gone if gone else Refusal.expired)

    async def _grab_now(
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

    def _after(self, grab: Grab, outbox: Outbox, pond: PondInfo | None) -> None:
        """Remember a closed packet; bring its message up to date."""
        card = grab.card
        if card is None:
            return
        if grab.closed is not None:
            self._remember_closed(card, grab.closed)
        if grab.refused is None:
            self._show(outbox, card, _timezone(pond))

    def _remember_closed(self, card: PacketCard, state: PacketState) -> None:
        grabbers = frozenset(g.user_id for g in card.grabs)
        self.closed.put(card.id, (card.chat_id, state, grabbers))

    def _show(self, outbox: Outbox, card: PacketCard, timezone: str) -> None:
        if card.message_id is None:
            return
        version = card.shares + 1 if card.closed else card.taken
        if self._shown.get(card.id, -1) >= version:
            return
        self._shown.put(card.id, version)
        text = texts.result(card) if card.closed else texts.post(card, timezone)
        outbox.board(
            f"rp:{card.id}",
            EditMessageText(
                chat_id=card.chat_id,
                message_id=card.message_id,
                text=text,
                reply_markup=None if card.closed else keyboard(card.id),
            ),
        )


async def _toast(outbox: Outbox, query: CallbackQuery, text: str) -> None:
    await outbox.answer(
        AnswerCallbackQuery(callback_query_id=query.id, text=text[:TOAST_CHARS])
    )


def _seconds(n: int) -> timedelta:
    return timedelta(seconds=n)


def _timezone(pond: PondInfo | None) -> str:
    return pond.timezone if pond is not None else "Asia/Shanghai"


def setup(
    shortcuts: Shortcuts | None = None, rng: random.Random | None = None
) -> tuple[Router, Router]:
    """The grab button's router and the messages' router (one feature, two places in
    the order routers are tried); presses on closed packets are answered as a shortcut."""
    packets = RedPackets(rng)
    if shortcuts is not None:
        shortcuts.register(RedPacketCB.__prefix__, packets.answer_from_memory)
    return packets.buttons(), packets.router()
