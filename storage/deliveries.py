"""The delivery rows of a broadcast — one per pond (`broadcast_delivery`, storage/promo.py)
or one per member of a segment (`segment_delivery`, storage/segments.py) — move through
the same states, whichever table holds them:

`pending` → `queued` (claimed by a run under a token, handed to the outbox) → `sending`
(committed right before the request is issued) → `sent` / `skipped` / `failed`.

A run that died leaves `queued` rows that were never issued (they go back to `pending`
and are sent by the next run) and `sending` rows that were on the wire (their fate is
unknown: `unknown`, never resent — at-most-once, so nobody gets a second copy).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage.models import BroadcastDelivery, DeliveryState, SegmentDelivery

D = TypeVar("D", BroadcastDelivery, SegmentDelivery)


def of_occurrence(model: type[D], post_id: int, occurrence: datetime) -> list[Any]:
    """The rows of one firing of a post."""
    return [col(model.post_id) == post_id, col(model.occurrence) == occurrence]


async def release_orphans(
    session: AsyncSession, model: type[D], post_id: int, occurrence: datetime, now: datetime
) -> tuple[int, int]:
    """Rows a run that died left behind: `queued` ones were never issued and go back to
    `pending`; `sending` ones were on the wire, their fate is unknown: never resend them.
    Returns (put back, unknown)."""
    rows = of_occurrence(model, post_id, occurrence)
    back = await session.execute(
        update(model)
        .where(*rows, col(model.state) == DeliveryState.queued)
        .values(state=str(DeliveryState.pending), claim=None, updated_at=now)
    )
    lost = await session.execute(
        update(model)
        .where(*rows, col(model.state) == DeliveryState.sending)
        .values(state=str(DeliveryState.unknown), updated_at=now)
    )
    return int(back.rowcount or 0), int(lost.rowcount or 0)  # type: ignore[attr-defined]


async def queue(
    session: AsyncSession, model: type[D], ids: Sequence[int | None], now: datetime
) -> str:
    """Claim the `pending` rows among `ids` as `queued` under a new token (returned)."""
    token = secrets.token_hex(8)
    await session.execute(
        update(model)
        .where(col(model.id).in_(ids), col(model.state) == DeliveryState.pending)
        .values(state=str(DeliveryState.queued), claim=token, updated_at=now)
    )
    return token


async def mark_sending(
    session: AsyncSession, model: type[D], delivery_id: int, claim: str, now: datetime
) -> bool:
    """Right before the row's request is issued: `queued` → `sending`. False when the
    row is no longer this claim's (a later run took it back): the request must not go."""
    result = await session.execute(
        update(model)
        .where(
            col(model.id) == delivery_id,
            col(model.claim) == claim,
            col(model.state).in_([DeliveryState.queued, DeliveryState.sending]),
        )
        .values(state=str(DeliveryState.sending), updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def finish(
    session: AsyncSession,
    model: type[D],
    delivery_id: int,
    state: DeliveryState,
    now: datetime,
    *,
    claim: str | None = None,
    **values: Any,
) -> None:
    """Record what Telegram answered for one row; `pending` puts back a row whose request
    was never issued; with `claim`, only if the row is still that claim's."""
    put_back = state == DeliveryState.pending
    query = update(model).where(
        col(model.id) == delivery_id,
        col(model.state).in_(
            [DeliveryState.queued] if put_back else [DeliveryState.queued, DeliveryState.sending]
        ),
    )
    if claim is not None:
        query = query.where(col(model.claim) == claim)
    await session.execute(query.values(state=str(state), updated_at=now, **values))
