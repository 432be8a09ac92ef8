"""Coupon codes to their owners' DMs (F7): never a group, a toast or another DM.

Called after the transaction that made the redemptions has committed (a redemption, a
lottery prize, `/start`). A code goes only to `SendMessage(chat_id=<its owner>)`,
through `Outbox.post` keyed `code:<redemption id>` (a code already on its way is not
queued twice), and its answer marks the redemption `delivered` (idempotent). A member
whose DM is not linked gets nothing now; a DM that answers 403 is dropped by the outbox
(which unlinks it, see `bot.app.chat_refused`) and no answer is recorded: either way
the redemption stays `undelivered` and `/start` in the DM delivers it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from aiogram.methods import SendMessage
from aiogram.types import Message

from services.outbox import Outbox
from services.texts import shop as texts
from storage import shop
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)


def deliver(
    outbox: Outbox,
    db: Database,
    redemptions: Iterable[shop.RedemptionView],
    *,
    force: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> list[int]:
    """Queue the DM of every given redemption that has a code still `undelivered`, to
    its owner, when their DM is linked (`force`: known to be, e.g. they wrote in it just
    now). Returns the ids queued; the others stay undelivered. Returns at once."""
    queued: list[int] = []
    for r in redemptions:
        if not r.awaiting_delivery or r.code is None:
            continue
        if not (force or r.dm_linked) or outbox.is_forbidden(r.user_id):
            continue
        fut = outbox.post(
            SendMessage(chat_id=r.user_id, text=texts.code_dm(r)),
            key=shop.delivery_key(r.id),
            record=_recorder(db, r.id, clock),
        )
        if fut is not None:
            queued.append(r.id)
    return queued


def _recorder(
    db: Database, redemption_id: int, clock: Callable[[], datetime]
) -> Callable[[Message], Awaitable[None]]:
    async def record(_sent: Message) -> None:
        async with db.transaction() as session:
            await shop.mark_delivered(session, redemption_id, now=clock())

    return record


async def deliver_pending(
    outbox: Outbox,
    db: Database,
    user_id: int,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> list[int]:
    """Every undelivered code of a member who has just linked their DM (`/start`)."""
    async with db.transaction(readonly=True) as session:
        waiting = await shop.undelivered(session, user_id)
    if waiting:
        log.info("delivering %d code(s) to user %s", len(waiting), user_id)
    return deliver(outbox, db, waiting, force=True, clock=clock)
