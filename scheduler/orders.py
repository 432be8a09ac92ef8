"""Tier notices left by an import (`pondbot import orders`, storage/orders.py): the
import runs in the command line without a bot, so for every member it moved up a tier
(with a linked DM) it leaves a task `orders.tier_notice`; the running bot's scheduler
finds it within seconds and sends the DM through the outbox, in the member's language.

A member whose row no longer says that tier (a later purchase moved them on, and that
one is told), or whose DM is no longer linked, is skipped. The task's key names the
member and the tier, so one tier is announced once.
"""

from __future__ import annotations

from aiogram.methods import SendMessage

from games.settings import PondSettings
from games.tiers import named, parse_tiers
from scheduler.core import Scheduler, TaskRun
from scheduler.deps import JobDeps
from services.texts import orders as texts
from storage import orders
from storage.models import Job


def setup(scheduler: Scheduler, deps: JobDeps) -> None:
    async def tier_notice(run: TaskRun) -> None:
        user_id = int(run.payload["user_id"])
        tier_name = str(run.payload["tier"])
        async with deps.db.transaction(readonly=True) as session:
            who = await orders.recipient(session, user_id)
            spent = await orders.spent_of(session, user_id)
        if who is None or not who.dm_linked or who.tier != tier_name:
            return
        tier = named(tier_name, parse_tiers(PondSettings().tiers))
        lang = (who.language_code or "").split("-")[0].lower()
        with deps.language(lang):
            text = texts.tier_notice(texts.tier_label(tier) if tier else tier_name, spent)
        deps.outbox.send(SendMessage(chat_id=user_id, text=text), droppable=False)

    scheduler.register(Job.tier_notice, tier_notice)
