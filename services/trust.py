"""The trust boundary (SPEC F1): which groups are ponds of this shop.

Points are shop-wide, so a group is served only when the shop vouches for it: a global
operator (`OPERATOR_IDS`) is its creator or one of its administrators, or a global
operator approved it (`/ponds approve`, or by adding the bot). Anywhere else the bot
says once — remembered in the database, not per process — that the group is not a pond
of this shop, with its chat id for the owner, and does nothing else.

A group is judged when first seen (and ponds recorded before the boundary existed, on
their first update), when the bot is added, and again when a global operator is
promoted or demoted there. The admin list comes from `getChatAdministrators` through
the `AdminCache`, always outside a database transaction; a check decided outside the
transaction is written only if nobody approved or revoked the group meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress

from aiogram import Bot
from aiogram.methods import SendMessage
from aiogram.utils.i18n import I18n

from services.i18n import speaking
from services.operators import OperatorPolicy
from services.outbox import Outbox
from services.texts import ponds as texts
from storage import repo
from storage.db import Database
from storage.models import PondTrust

log = logging.getLogger(__name__)

# What an automatic check may change: an approval or a revocation is a person's decision.
CHECKABLE = frozenset({PondTrust.unchecked, PondTrust.operator, PondTrust.stranger})


class PondGate:
    def __init__(
        self,
        db: Database,
        operators: OperatorPolicy,
        outbox: Outbox,
        i18n: I18n,
        *,
        retry_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.operators = operators
        self.outbox = outbox
        self.i18n = i18n
        self.retry_after = retry_after
        self._clock = clock
        self._failed: dict[int, float] = {}  # chat_id -> when the admin list failed
        self._sweep: asyncio.Task[int] | None = None

    async def check(self, bot: Bot, chat_id: int, *, fresh: bool = False) -> PondTrust | None:
        """`operator` when a global operator is among the group's admins, else
        `stranger`; None when Telegram could not tell (tried again a little later)."""
        failed = self._failed.get(chat_id)
        if failed is not None and self._clock() - failed < self.retry_after:
            return None
        admins = await self.operators.fetch_admins(bot, chat_id, fresh=fresh)
        if admins is None:
            self._failed[chat_id] = self._clock()
            return None
        self._failed.pop(chat_id, None)
        if admins & self.operators.operator_ids:
            return PondTrust.operator
        return PondTrust.stranger

    async def decide(self, bot: Bot, chat_id: int, *, fresh: bool = False) -> PondTrust | None:
        """Check the group and record the verdict unless a person decided meanwhile.
        The group's trust afterwards, or None when it could not be checked."""
        verdict = await self.check(bot, chat_id, fresh=fresh)
        if verdict is None:
            return None
        async with self.db.transaction() as session:
            await repo.set_trust(session, chat_id, verdict, only_from=CHECKABLE)
            record = await repo.pond_record(session, chat_id)
        if record is None:
            return None
        if record.trust != verdict:
            return PondTrust(record.trust)
        log.info("group %s checked: %s", chat_id, verdict)
        return verdict

    async def approve(self, chat_id: int, actor_id: int) -> bool:
        """A global operator vouches for the group. True when that changed something."""
        return await self._set(chat_id, PondTrust.approved, actor_id)

    async def revoke(self, chat_id: int, actor_id: int) -> bool:
        return await self._set(chat_id, PondTrust.revoked, actor_id)

    async def _set(self, chat_id: int, trust: PondTrust, actor_id: int) -> bool:
        async with self.db.transaction() as session:
            changed = await repo.set_trust(session, chat_id, trust, actor_id=actor_id)
        if changed:
            log.info("group %s %s by %s", chat_id, trust.value, actor_id)
        return changed

    async def say_not_a_pond(self, chat_id: int, language: str) -> None:
        """Tell the group, once and for good, that it is not a pond of this shop."""
        async with self.db.transaction() as session:
            first = await repo.claim_stranger_notice(session, chat_id)
        if not first:
            return
        with speaking(self.i18n, language):
            text = texts.not_a_pond(chat_id)
        self.outbox.send(SendMessage(chat_id=chat_id, text=text))
        log.info("group %s is not a pond of this shop: told it once", chat_id)

    async def sweep(self, bot: Bot, *, pace: float = 0.2) -> int:
        """Check every active group never checked (ponds from before the boundary):
        a quiet pond should not wait for its first update to get the shop's broadcasts.
        Paced, one admin list at a time; says nothing (a group that is not a pond hears
        so on its first update). Returns how many were decided."""
        async with self.db.transaction(readonly=True) as session:
            chat_ids = await repo.unchecked_ponds(session)
        decided = 0
        for chat_id in chat_ids:
            if await self.decide(bot, chat_id) is not None:
                decided += 1
            await asyncio.sleep(pace)
        if chat_ids:
            log.info("checked %d of %d group(s) never checked", decided, len(chat_ids))
        return decided

    def start_sweep(self, bot: Bot) -> None:
        """Run `sweep` in the background (the bot serves meanwhile)."""
        if self._sweep is None or self._sweep.done():
            self._sweep = asyncio.ensure_future(self.sweep(bot))
            self._sweep.add_done_callback(_log_failure)

    async def aclose(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweep
            self._sweep = None


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("checking unchecked groups stopped: %r", task.exception())
