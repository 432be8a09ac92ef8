"""Red packet deadlines: at expiry, close the packet and refund a member's unclaimed
points (once, ledger key `rp:<id>:refund`), then edit the packet's message to say so.

Runs however late (`catch_up=True`): a packet that expired while the bot was down is
closed and refunded when it is back. `/redpacket recall` closes and refunds a packet
itself (by the same refund key) and records a run of this job due at once, keyed by the
command message: that run, and the packet's own expiry later, find it recalled and only
show it so (its post edited, also when the bot stopped before its own edit went out).

Idempotent: the state change is guarded (`WHERE state = 'open'`) and the refund is in
the same unit of work, so a repeated run only repeats the (harmless) message edit.
"""

from __future__ import annotations

from aiogram.methods import EditMessageText

from games.red_packet import PacketState
from scheduler.core import Scheduler, TaskRun
from scheduler.deps import JobDeps
from services.texts import red_packet as texts
from storage import red_packets, repo
from storage.models import Job


def setup(scheduler: Scheduler, deps: JobDeps) -> None:
    async def expire(run: TaskRun) -> None:
        packet_id = int(run.payload["packet_id"])
        async with deps.db.transaction() as session:
            done = await red_packets.expire(session, packet_id, now=run.now)
            if done is None:
                return
            pond = await repo.get_pond(session, done.card.chat_id)
        card = done.card
        ended = (PacketState.expired, PacketState.recalled)
        if card.state not in ended or card.message_id is None:
            return  # finished before its time (its own grab showed the result)
        with deps.language(pond.language if pond is not None else deps.i18n.default_locale):
            text = texts.result(card)
        deps.outbox.board(
            f"rp:{card.id}",
            EditMessageText(chat_id=card.chat_id, message_id=card.message_id, text=text),
        )

    scheduler.register(Job.red_packet_expire, expire)
