"""Last-resort error handler: log the failure (never the token) and carry on.

An update the database failed (`bot.dedup.Unconfirmed`) is not handled here: it goes
back to the transport unconfirmed, so Telegram delivers it again. Anything else is a
bug in handling that one update: logged with its traceback, and the update counts as
handled so the rest of the pond goes on.
"""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.types import ErrorEvent

from services.dedup import Unconfirmed
from services.operators import AdminsUnavailable

log = logging.getLogger("pondbot.errors")


def setup() -> Router:
    router = Router(name="errors")
    router.errors.register(on_error)
    return router


async def on_error(event: ErrorEvent) -> bool:
    if isinstance(event.exception, Unconfirmed):
        raise SkipHandler  # unhandled: the dispatcher re-raises it to the transport
    if isinstance(event.exception, AdminsUnavailable):
        # Telegram's weather (messages and presses were asked to try again already).
        log.warning("update %s: %s", event.update.update_id, event.exception)
        return True
    log.error(
        "update %s failed: %s",
        event.update.update_id,
        type(event.exception).__name__,
        exc_info=event.exception,
    )
    return True
