"""Red packets (抢红包): `/redpacket`, the grab button, typed passwords.

    /redpacket <total> <shares> [random|equal] [pwd=<口令>] [for=<duration>]

Operators drop packets paid by the shop; members send packets from their own balance.
A grab is answered with a toast (answerCallbackQuery), never a group message; the
packet's own message is edited in place (coalesced by the outbox) with the progress and,
at the end, who got what. A password packet is grabbed by typing its password in the
group; its button only says so.

The turns, batches and caches behind a grab are `services.red_packets`; the rules
(who pays, the limits, who may grab) are `games.red_packet`; `/redpacket recall <id>`
is handlers/undo.py.
"""

from __future__ import annotations

import random
from typing import Any

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.methods import AnswerCallbackQuery, SendMessage
from aiogram.types import CallbackQuery, Message, ReplyParameters

from games.checkin import local_day
from games.people import display_name
from games.red_packet import Refusal
from handlers.startup import active_ponds, log_restored, startup_deps
from handlers.undo import RECALL, Recall
from scheduler.core import Scheduler
from services.fast_lane import HOT, ParsedOnce
from services.messaging import carries_button, reply
from services.middlewares import PondInfo
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.red_packets import (
    GROUPS,
    MAX_ID,
    BadArgs,
    DataPrefix,
    MembersMayNotSend,
    PasswordTyped,
    RedPacketCB,
    RedPackets,
    Sender,
)
from services.shortcuts import Shortcuts
from services.tasks import DailyTasks
from services.texts import ponds as pond_texts
from services.texts import red_packet as texts
from storage import ledger, red_packets, repo
from storage.db import Database
from storage.red_packets import Grab, GrabRequest

TOAST_CHARS = 200


class RedPacketHandlers:
    """The feature's handlers over its machinery (`services.red_packets.RedPackets`)."""

    def __init__(self, packets: RedPackets) -> None:
        self.packets = packets

    def router(self) -> Router:
        """`/redpacket` and typed passwords."""
        router = Router(name="red_packet")
        router.message.register(Recall(self.packets).recall, RECALL)  # handlers/undo.py
        router.message.register(self.create, Command("redpacket"))
        router.message.register(self.grab_by_password, PasswordTyped(self.packets.passwords))
        router.startup.register(self.restore_posts)
        return router

    def buttons(self) -> Router:
        """The grab button. Its callback data is the feature's own, so this router may be
        tried early: a stampede of clicks then skips the other features' routers."""
        router = Router(name="red_packet_buttons")
        router.callback_query.register(
            self.grab_by_button, ParsedOnce(RedPacketCB), flags={HOT: True}
        )
        router.callback_query.register(self.forged, DataPrefix(f"{RedPacketCB.__prefix__}:"))
        return router

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
        daily_tasks: DailyTasks,
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
        actor = message.sender_chat or message.from_user
        name = display_name(person.first_name, person.last_name, person.username) if person else ""
        is_global = operators.is_global(message.from_user, message.sender_chat)
        sender = Sender(
            person, name or chat.title or "", is_operator, is_global, actor.id if actor else None
        )
        try:
            dropped = await self.packets.create(
                db, scheduler, chat_id=chat.id, text=command.args, sender=sender,
                source_key=f"{chat.id}:{message.message_id}", timezone=_timezone(pond),
            )
        except BadArgs as bad:
            problem = texts.bad_args(bad.code, bad.limits)
        except MembersMayNotSend:
            problem = texts.members_may_not_send()
        except ledger.InsufficientPoints as exc:
            problem = texts.insufficient(exc.balance, exc.needed)
        except repo.OverAllowance as over:
            problem = pond_texts.give_cap_reached(over.left, over.cap)
        else:
            if dropped.needs_post:  # new, or redelivered after its post was lost
                thread = message.message_thread_id if message.is_topic_message else None
                self.packets.post(db, outbox, dropped.card, _timezone(pond), thread)
            if person is not None and pond is not None:
                # The sender cannot grab their own packet: sending it is the day's red
                # packet task done, maybe the last one (a redelivered command looks
                # again: the bonus may not have been paid yet).
                now = scheduler.clock()
                await daily_tasks.after(pond, person.id, local_day(now, pond.timezone), now)
            return
        reply(outbox, message, problem)

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
                    posted += self.packets.post(deps.db, deps.outbox, card, pond.timezone)
        log_restored("red packet", posted)

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
        daily_tasks: DailyTasks,
    ) -> None:
        packet_id = callback_data.id
        message = query.message
        if await self._answer_closed(query, packet_id, outbox):
            return
        if person is None:
            await _toast(outbox, query, texts.refused(Refusal.not_member))
            return
        if message is None or not 0 < packet_id <= MAX_ID:
            await _toast(outbox, query, texts.refused(Refusal.unknown))
            return
        request = GrabRequest(
            person, message.chat.id, message.message_id, False,
            carries_button(message, query, bot),
        )
        grab = await self.packets.grab(db, scheduler, packet_id, request)
        if grab.refused is None:
            assert grab.amount is not None
            await _toast(outbox, query, texts.grabbed(grab.amount))
        else:
            await _toast(outbox, query, texts.refused(grab.refused, grab.card))
        self.packets.after(grab, outbox, _timezone(pond))
        await _task_done(daily_tasks, grab, pond, person, scheduler)

    async def grab_by_password(
        self,
        message: Message,
        packet_id: int,
        db: Database,
        outbox: Outbox,
        scheduler: Scheduler,
        person: repo.UserInfo | None,
        pond: PondInfo | None,
        daily_tasks: DailyTasks,
    ) -> None:
        if person is None or self.packets.is_closed(packet_id):
            return
        request = GrabRequest(person, message.chat.id, None, True)
        grab = await self.packets.grab(db, scheduler, packet_id, request)
        if grab.closed is not None:
            self.packets.passwords.invalidate(message.chat.id)
        quiet = outbox.pending(message.chat.id) == 0
        if grab.refused is None and grab.amount is not None and quiet:
            # Nothing else is on its way to the pond: a quiet confirmation is welcome.
            # In a rush the board's progress is the answer (it keeps the group calm).
            name = display_name(person.first_name, person.last_name, person.username)
            outbox.send(
                SendMessage(
                    chat_id=message.chat.id,
                    text=texts.grabbed_by_password(name, grab.amount),
                    disable_notification=True,
                    reply_parameters=ReplyParameters(
                        message_id=message.message_id, allow_sending_without_reply=True
                    ),
                ),
                droppable=True,  # a courtesy: the board shows the grab anyway
            )
        self.packets.after(grab, outbox, _timezone(pond))
        await _task_done(daily_tasks, grab, pond, person, scheduler)

    async def answer_from_memory(
        self, query: CallbackQuery, payload: str, data: dict[str, Any]
    ) -> bool:
        """The `rp:` shortcut (see services.shortcuts): a press on a packet known to be
        closed is answered before routing; anything else goes on to `grab_by_button`."""
        if not (payload.isascii() and payload.isdigit() and len(payload) <= 19):
            return False
        return await self._answer_closed(query, int(payload), data["outbox"])

    async def _answer_closed(self, query: CallbackQuery, packet_id: int, outbox: Outbox) -> bool:
        message = query.message
        chat_id = message.chat.id if message is not None else None
        why = self.packets.known_refusal(packet_id, chat_id, query.from_user.id)
        if why is None:
            return False
        await _toast(outbox, query, texts.refused(why))
        return True

    async def forged(self, query: CallbackQuery, outbox: Outbox) -> None:
        """Button data with our prefix that is not a packet id."""
        await _toast(outbox, query, texts.refused(Refusal.unknown))


async def _toast(outbox: Outbox, query: CallbackQuery, text: str) -> None:
    await outbox.answer(AnswerCallbackQuery(callback_query_id=query.id, text=text[:TOAST_CHARS]))


async def _task_done(daily_tasks: DailyTasks, grab: Grab, pond: PondInfo | None,
                     person: repo.UserInfo | None, scheduler: Scheduler) -> None:
    """A share grabbed is the day's red packet task done: maybe the last one (a replay,
    refused as `already`, looks again: the bonus may not have been paid yet)."""
    done = grab.refused is None or grab.refused is Refusal.already
    if done and pond is not None and person is not None:
        now = scheduler.clock()
        await daily_tasks.after(pond, person.id, local_day(now, pond.timezone), now)


def _timezone(pond: PondInfo | None) -> str:
    return pond.timezone if pond is not None else "Asia/Shanghai"


def setup(
    shortcuts: Shortcuts | None = None, rng: random.Random | None = None
) -> tuple[Router, Router]:
    """The grab button's router and the messages' router (one feature, two places in
    the order routers are tried); presses on closed packets are answered as a shortcut."""
    handlers = RedPacketHandlers(RedPackets(rng))
    if shortcuts is not None:
        shortcuts.register(RedPacketCB.__prefix__, handlers.answer_from_memory)
    return handlers.buttons(), handlers.router()
