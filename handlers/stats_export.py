"""`/export [members|ledger|votes|orders|redemptions|draws]` (F12): the CSV that
`pondbot export <what> --out FILE` writes — the same function writes it, so the bytes are
the same (UTF-8 with BOM, same columns) — sent as a document to the operator's DM.

The export runs in a worker thread with its own connection (`storage.export.
export_to_path`), streaming rows from one read-only transaction into a temporary file:
memory stays bounded whatever the size, and the event loop goes on handling updates. The
document is uploaded from that file (read in chunks), through the outbox, never dropped;
the file is removed once Telegram answered. In a group the operator gets at most one
short note: after the DM answered, "sent to your private chat", or — when the DM is not
linked or Telegram refuses it — to open one with /start first. Members are refused
(handlers/stats.py registers the refusal), and nothing is sent.

Whose rows (SPEC F1, the trust boundary): the shop's own staff (`OPERATOR_IDS`) get the
shop-wide file, in a group or in their DM. A pond's administrator is that pond's operator,
not the shop's: in their pond they get the pond's file only — the same columns, that
pond's rows (`storage.export.POND_EXPORTS`), its caption and file name saying so — and the
shop-wide ones (profiles, segments) are refused. In a DM only the shop's staff get past
the operator filter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from aiogram.filters import CommandObject
from aiogram.methods import SendDocument
from aiogram.types import FSInputFile, Message

from games.checkin import DEFAULT_TIMEZONE, local_day
from games.parsing import fold
from services.messaging import refuse_non_operator, reply
from services.middlewares import PondInfo
from services.operators import OperatorPolicy
from services.outbox import Outbox, OutboxClosedError
from services.texts import stats as t
from storage import export as exports
from storage import promo as promo_store
from storage import repo
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)

# A bot may send documents of at most 50 MB.
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024
DEFAULT = "members"
GROUPS = ("group", "supergroup")


def choices(shop_wide: bool = True) -> list[str]:
    """What can be exported: whatever `pondbot export` offers; by a pond operator, what
    can be limited to their pond."""
    return list(exports.EXPORTS if shop_wide else exports.POND_EXPORTS)


async def export(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    operators: OperatorPolicy,
    person: repo.UserInfo | None,
    pond: PondInfo | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    what = fold(command.args or "").lower() or DEFAULT
    in_group = message.chat.type in GROUPS
    shop_wide = operators.is_global(message.from_user, message.sender_chat)
    if not shop_wide and not in_group:  # only the shop's staff pass the filter in a DM
        await refuse_non_operator(message, outbox)
        return
    # A pond operator's file holds their pond's rows only.
    pond_id = None if shop_wide else message.chat.id
    if what not in exports.EXPORTS:
        reply(outbox, message, t.export_usage("|".join(choices(shop_wide))))
        return
    if pond_id is not None and what not in exports.POND_EXPORTS:
        reply(outbox, message, t.export_shop_wide_only(what))
        return
    if person is None:  # an anonymous admin or a channel: nobody's DM to send to
        reply(outbox, message, t.export_anonymous())
        return
    if in_group:
        async with db.transaction(readonly=True) as session:
            linked = await promo_store.dm_linked(session, person.id)
        if not linked:
            reply(outbox, message, t.export_open_dm())
            return
    timezone = pond.timezone if pond is not None else DEFAULT_TIMEZONE
    day = local_day(clock(), timezone).isoformat()
    filename = f"{what}-{day}.csv" if pond_id is None else f"{what}-pond{pond_id}-{day}.csv"
    folder = Path(tempfile.mkdtemp(prefix="pondbot-export-"))
    path = folder / filename
    try:
        rows = await asyncio.to_thread(exports.export_to_path, db.url, what, path, pond_id)
        too_large = path.stat().st_size > MAX_DOCUMENT_BYTES
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        log.exception("export %s for an operator failed", what)
        reply(outbox, message, t.export_failed())
        return
    if too_large:
        shutil.rmtree(folder, ignore_errors=True)
        reply(outbox, message, t.export_too_large(what, pond_id))
        return
    sent = outbox.send(
        SendDocument(
            chat_id=person.id,
            document=FSInputFile(path, filename=filename),
            caption=(
                t.export_caption(what, rows) if pond_id is None
                else t.export_pond_caption(what, message.chat.title or str(pond_id), rows)
            ),
        )
    )
    sent.add_done_callback(lambda done: _delivered(done, folder, outbox, message, in_group))


def _delivered(
    done: asyncio.Future[Message | None], folder: Path, outbox: Outbox, message: Message,
    in_group: bool,
) -> None:
    """Telegram answered (or the DM is refused): the file goes; the group gets its note."""
    shutil.rmtree(folder, ignore_errors=True)
    if done.cancelled():  # the bot is stopping
        return
    if done.exception() is not None:
        note: str | None = t.export_failed()
    elif done.result() is None:  # the private chat refused it (403)
        note = t.export_open_dm() if in_group else None
    else:
        note = t.export_sent_to_dm() if in_group else None
    if note is not None:
        with contextlib.suppress(OutboxClosedError):
            reply(outbox, message, note)
