"""Settings an operator changes with `/settings` (SPEC F12): a pond's, or the shop-wide
defaults, each change audited.

Where values live. A pond's numbers are `pond.settings` (what differs from
`PondSettings`' own defaults), its time zone and language the columns `pond.timezone`
and `pond.language`. The shop-wide defaults are the one `shop_settings` row: what
differs from `PondSettings`' defaults, plus `timezone` and `language` once a global
operator set them (until then the bot's configured ones).

A pond follows a shop-wide default as long as its own value equals it: changing a
default moves, in the same transaction, every pond whose value was the old default, and
leaves a pond whose value differs (its own choice). So every reader of a pond's
settings (check-ins, games, the scheduler) reads one row and sees the effective values,
in every process, at once; a pond that set a value equal to the default has no
separate override and follows the default from then on. A new pond starts with the
defaults (`pond_defaults`).

The shop-wide settings (`games.settings.SHOP_WIDE`: birthdays, points expiry, segments)
have no pond value: the jobs read the shop's. A pond's change of one is refused
(`change_pond`), a shop-wide change of one moves every pond whatever it held, and a
pond's settings show the shop's values for them (`pond_effective`). Switching points
expiry on moves the lots' epoch in the change's transaction (`expiry.switched`).

Every change writes one `settings_audit` row per changed key, keyed by the command that
made it (`source_key`): a replayed command finds its rows and changes nothing again.
The rows also tell other processes that a pond's time zone or language may have changed
(`changed_since`; see `services.middlewares.TrackingMiddleware`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from games.settings import (
    POND_COLUMNS,
    SHOP_WIDE,
    Effective,
    PondSettings,
    SettingError,
    apply_pairs,
    shop_wide_keys,
)
from storage import expiry
from storage.dialect import insert_for
from storage.models import Pond, PondStatus, SettingsAudit, ShopSettings, utcnow

SHOP_ROW = 1


@dataclass(frozen=True, slots=True)
class Fallback:
    """The bot's configured time zone and language: the defaults until a global operator
    sets shop-wide ones."""

    timezone: str
    language: str


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a `/settings` change did: `errors` the refused pairs (then nothing
    changed); `replayed` when the command was carried out before (nothing changed now);
    `changes` the keys changed; `moved` the ponds that followed a shop-wide default."""

    applied: Effective
    changes: list[Change] = field(default_factory=list)
    errors: list[SettingError] = field(default_factory=list)
    replayed: bool = False
    moved: list[int] = field(default_factory=list)


def _shop_effective(stored: dict[str, Any] | None, fallback: Fallback) -> Effective:
    stored = stored or {}
    return Effective(
        PondSettings.from_stored(stored),
        str(stored.get("timezone") or fallback.timezone),
        str(stored.get("language") or fallback.language),
    )


def _shop_stored(value: Effective, fallback: Fallback) -> dict[str, Any]:
    stored: dict[str, Any] = value.settings.overrides()
    for name in POND_COLUMNS:
        if value.value(name) != getattr(fallback, name):
            stored[name] = value.value(name)
    return stored


def _pond_effective(pond: Pond) -> Effective:
    return Effective(PondSettings.from_stored(pond.settings), pond.timezone, pond.language)


async def shop_defaults(session: AsyncSession, fallback: Fallback) -> Effective:
    """The shop-wide defaults every pond starts with."""
    stored = await session.scalar(
        select(col(ShopSettings.settings)).where(col(ShopSettings.id) == SHOP_ROW)
    )
    return _shop_effective(stored, fallback)


async def shop_settings(session: AsyncSession) -> PondSettings:
    """The shop-wide defaults of the numbers: what applies outside any pond (a private
    chat, an import)."""
    stored = await session.scalar(
        select(col(ShopSettings.settings)).where(col(ShopSettings.id) == SHOP_ROW)
    )
    return PondSettings.from_stored(stored)


async def pond_defaults(session: AsyncSession, fallback: Fallback) -> dict[str, Any]:
    """The columns of a new pond's row: the shop-wide defaults."""
    defaults = await shop_defaults(session, fallback)
    return {
        "settings": defaults.settings.overrides(),
        "timezone": defaults.timezone,
        "language": defaults.language,
    }


async def pond_effective(
    session: AsyncSession, chat_id: int, fallback: Fallback
) -> tuple[Effective, Effective] | None:
    """The pond's settings and the shop-wide defaults; None for a pond we don't know.
    The shop-wide settings are the shop's values (whatever an old pond row holds)."""
    pond = await session.get(Pond, chat_id)
    if pond is None:
        return None
    mine, shop = _pond_effective(pond), await shop_defaults(session, fallback)
    wide = {k: shop.value(k) for k in SHOP_WIDE}
    return Effective(mine.settings.changed(**wide), mine.timezone, mine.language), shop


async def _replayed(session: AsyncSession, source_key: str) -> bool:
    found = await session.scalar(
        select(col(SettingsAudit.id)).where(col(SettingsAudit.source_key) == source_key).limit(1)
    )
    return found is not None


def _audit(
    session: AsyncSession, chat_id: int | None, changes: list[Change], actor_id: int | None,
    source_key: str, now: datetime,
) -> None:
    for c in changes:
        session.add(SettingsAudit(
            chat_id=chat_id, key=c.key, old_value=c.old[:600], new_value=c.new[:600],
            actor_id=actor_id, source_key=source_key, created_at=now,
        ))


def _changes(old: Effective, new: Effective) -> list[Change]:
    return [Change(k, old.text(k), new.text(k)) for k in new.differing(old)]


async def change_pond(
    session: AsyncSession,
    chat_id: int,
    args: str,
    *,
    actor_id: int | None,
    source_key: str,
    now: datetime | None = None,
) -> Outcome | None:
    """Apply `/settings` pairs `args` to pond `chat_id` (all or nothing; see
    `games.settings.apply_pairs`); None for a pond we don't know. A shop-wide setting is
    refused (`shop_wide` errors). The pond's row is locked first, so two changes at once
    apply one after the other."""
    now = now or utcnow()
    pond = (
        await session.scalars(
            select(Pond).where(col(Pond.chat_id) == chat_id).with_for_update()
        )
    ).first()
    if pond is None:
        return None
    old = _pond_effective(pond)
    if await _replayed(session, source_key):
        return Outcome(old, replayed=True)
    new, errors = apply_pairs(old, args)
    wide = shop_wide_keys(args)
    if wide:
        errors = [SettingError("shop_wide", k) for k in wide] + [
            e for e in errors if e.key not in wide
        ]
    if errors:
        return Outcome(old, errors=errors)
    changes = _changes(old, new)
    if changes:
        await session.execute(
            update(Pond)
            .where(col(Pond.chat_id) == chat_id)
            .values(settings=new.settings.overrides(), timezone=new.timezone,
                    language=new.language, updated_at=now)
        )
        _audit(session, chat_id, changes, actor_id, source_key, now)
    return Outcome(new, changes)


async def change_shop(
    session: AsyncSession,
    args: str,
    fallback: Fallback,
    *,
    actor_id: int | None,
    source_key: str,
    now: datetime | None = None,
) -> Outcome:
    """Apply `/settings` pairs `args` to the shop-wide defaults (all or nothing), and
    move every pond whose value of a changed key was the old default (every pond, for a
    shop-wide setting)."""
    now = now or utcnow()
    table = ShopSettings.__table__  # type: ignore[attr-defined]
    await session.execute(
        insert_for(session, table)
        .values(id=SHOP_ROW, settings={}, updated_at=now)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    stored = (
        await session.scalars(
            select(col(ShopSettings.settings))
            .where(col(ShopSettings.id) == SHOP_ROW)
            .with_for_update()
        )
    ).first()
    old = _shop_effective(stored, fallback)
    if await _replayed(session, source_key):
        return Outcome(old, replayed=True)
    new, errors = apply_pairs(old, args)
    if errors:
        return Outcome(old, errors=errors)
    changes = _changes(old, new)
    if not changes:
        return Outcome(new)
    await session.execute(
        update(ShopSettings)
        .where(col(ShopSettings.id) == SHOP_ROW)
        .values(settings=_shop_stored(new, fallback), updated_at=now)
    )
    _audit(session, None, changes, actor_id, source_key, now)
    keys = [c.key for c in changes]
    if "points_expiry_days" in keys:
        await expiry.switched(
            session, old.settings.points_expiry_days, new.settings.points_expiry_days, now=now
        )
    moved: list[int] = []
    ponds = (
        await session.scalars(
            select(Pond)
            .where(col(Pond.status) != PondStatus.migrated)
            .order_by(col(Pond.chat_id))
            .with_for_update()
        )
    ).all()
    for pond in ponds:
        mine = _pond_effective(pond)
        follow = {
            k: new.value(k) for k in keys if k in SHOP_WIDE or mine.value(k) == old.value(k)
        }
        if not follow:
            continue
        numbers = {k: v for k, v in follow.items() if k not in POND_COLUMNS}
        settings = mine.settings.changed(**numbers) if numbers else mine.settings
        await session.execute(
            update(Pond)
            .where(col(Pond.chat_id) == pond.chat_id)
            .values(
                settings=settings.overrides(),
                timezone=follow.get("timezone", pond.timezone),
                language=follow.get("language", pond.language),
                updated_at=now,
            )
        )
        moved.append(pond.chat_id)
    return Outcome(new, changes, moved=moved)


async def audit(
    session: AsyncSession, chat_id: int | None, limit: int = 50
) -> list[SettingsAudit]:
    """The latest changes of pond `chat_id` (None: of the shop-wide defaults), newest first."""
    where = (
        col(SettingsAudit.chat_id).is_(None)
        if chat_id is None
        else col(SettingsAudit.chat_id) == chat_id
    )
    rows = await session.scalars(
        select(SettingsAudit).where(where).order_by(col(SettingsAudit.id).desc()).limit(limit)
    )
    return list(rows.all())


async def changed_since(
    session: AsyncSession, after: int | None
) -> tuple[int, set[int | None]]:
    """The newest audit id, and the ponds changed after audit id `after` (None among
    them: a shop-wide default changed, so any pond may have). With `after` None, only
    the newest id (where to look from)."""
    newest = int(await session.scalar(select(func.max(col(SettingsAudit.id)))) or 0)
    if after is None or newest <= after:
        return newest, set()
    chats = await session.scalars(
        select(col(SettingsAudit.chat_id)).where(col(SettingsAudit.id) > after).distinct()
    )
    return newest, set(chats.all())
