"""Settings changed with `/settings` (storage/settings.py), on SQLite and PostgreSQL:
all or nothing, audited once per changed key and command, shop-wide defaults that the
ponds on them follow, and the audit as the signal other processes watch."""

from __future__ import annotations

from sqlalchemy import select

from games.settings import (
    Effective,
    PondSettings,
    apply_pairs,
    format_value,
    parse_value,
    setting_names,
)
from storage import repo
from storage import settings as store
from storage.db import Database
from storage.models import Pond, SettingsAudit

FALLBACK = store.Fallback("Asia/Shanghai", "zh")
A, B = -1001, -1002


async def _ponds(db: Database, *chat_ids: int) -> None:
    async with db.transaction() as s:
        for chat_id in chat_ids:
            await repo.upsert_pond(s, chat_id, title=str(chat_id), chat_type="supergroup")


async def _audit(db: Database) -> list[tuple[int | None, str, str, str, str]]:
    async with db.transaction(readonly=True) as s:
        rows = (await s.scalars(select(SettingsAudit).order_by(SettingsAudit.id))).all()  # type: ignore[arg-type]
    return [(r.chat_id, r.key, r.old_value, r.new_value, r.source_key) for r in rows]


async def _pond(db: Database, chat_id: int) -> Pond:
    async with db.transaction(readonly=True) as s:
        row = await s.get(Pond, chat_id)
    assert row is not None
    return row


def test_every_value_reads_back_as_it_is_shown() -> None:
    defaults = Effective(PondSettings(), "Asia/Shanghai", "zh")
    for name in setting_names():
        shown = defaults.text(name)
        assert format_value(name, parse_value(name, shown)) == shown, name
    changed, errors = apply_pairs(
        defaults, "checkin_milestones=- promo_cap_exempt_phases=- tiers=-"
    )
    assert errors == []
    assert changed.settings.checkin_milestones == {}
    assert changed.settings.promo_cap_exempt_phases == ()
    assert changed.settings.tiers == ""
    assert parse_value("redpacket_members_may_send", "OFF") is False
    assert parse_value("checkin_base", "８") == 8  # full-width digits
    assert parse_value("timezone", "america/new_york") == "America/New_York"


async def test_a_pond_change_is_all_or_nothing_and_audited_once(db: Database) -> None:
    await _ponds(db, A)
    async with db.transaction() as s:
        bad = await store.change_pond(s, A, "checkin_base=8 vote_points=-1", actor_id=7,
                                      source_key="k1")
    assert bad is not None and [e.key for e in bad.errors] == ["vote_points"]
    assert await _audit(db) == []
    async with db.transaction() as s:
        done = await store.change_pond(s, A, "checkin_base=8 timezone=America/New_York",
                                       actor_id=7, source_key="k2")
        unknown = await store.change_pond(s, -9, "checkin_base=8", actor_id=7, source_key="k3")
    assert done is not None and [c.key for c in done.changes] == ["timezone", "checkin_base"]
    assert unknown is None
    async with db.transaction() as s:
        again = await store.change_pond(s, A, "checkin_base=8 timezone=America/New_York",
                                        actor_id=7, source_key="k2")
        same = await store.change_pond(s, A, "checkin_base=8", actor_id=7, source_key="k4")
    assert again is not None and again.replayed and again.changes == []
    assert same is not None and not same.replayed and same.changes == []
    assert await _audit(db) == [
        (A, "timezone", "Asia/Shanghai", "America/New_York", "k2"),
        (A, "checkin_base", "5", "8", "k2"),
    ]
    row = await _pond(db, A)
    assert (row.settings, row.timezone) == ({"checkin_base": 8}, "America/New_York")


async def test_ponds_on_a_default_follow_it_and_new_ponds_start_with_it(db: Database) -> None:
    await _ponds(db, A, B)
    async with db.transaction() as s:
        await store.change_pond(s, A, "checkin_base=8 language=en", actor_id=7, source_key="p")
        out = await store.change_shop(
            s, "checkin_base=6 language=en timezone=Europe/Berlin", FALLBACK,
            actor_id=1, source_key="s",
        )
    assert [c.key for c in out.changes] == ["timezone", "language", "checkin_base"]
    assert sorted(out.moved) == sorted([A, B])
    a, b = await _pond(db, A), await _pond(db, B)
    assert (a.settings, a.language, a.timezone) == ({"checkin_base": 8}, "en", "Europe/Berlin")
    assert (b.settings, b.language, b.timezone) == ({"checkin_base": 6}, "en", "Europe/Berlin")
    # Pond A's language now equals the default: it follows the next change of it.
    async with db.transaction() as s:
        await store.change_shop(s, "language=zh", FALLBACK, actor_id=1, source_key="s2")
        await repo.upsert_pond(s, -1003, title="new", chat_type="supergroup")
        found = await store.pond_effective(s, A, FALLBACK)
    assert (await _pond(db, A)).language == "zh"
    new = await _pond(db, -1003)
    assert (new.settings, new.language, new.timezone) == ({"checkin_base": 6}, "zh",
                                                          "Europe/Berlin")
    assert found is not None
    mine, defaults = found
    assert mine.differing(defaults) == ["checkin_base"]
    async with db.transaction(readonly=True) as s:
        shop = await store.shop_defaults(s, FALLBACK)
        rows = await store.audit(s, None)
    assert (shop.settings.checkin_base, shop.timezone, shop.language) == (6, "Europe/Berlin", "zh")
    async with db.transaction(readonly=True) as s:
        assert await store.shop_settings(s) == shop.settings
    assert [(r.key, r.old_value, r.new_value) for r in rows] == [
        ("language", "en", "zh"),
        ("checkin_base", "5", "6"),
        ("language", "zh", "en"),
        ("timezone", "Asia/Shanghai", "Europe/Berlin"),
    ]


async def test_the_audit_tells_which_ponds_changed(db: Database) -> None:
    await _ponds(db, A, B)
    async with db.transaction(readonly=True) as s:
        start, none = await store.changed_since(s, None)
    assert (start, none) == (0, set())
    async with db.transaction() as s:
        await store.change_pond(s, B, "language=en", actor_id=7, source_key="x")
    async with db.transaction(readonly=True) as s:
        seen, chats = await store.changed_since(s, start)
        assert chats == {B}
        assert await store.changed_since(s, seen) == (seen, set())
    async with db.transaction() as s:
        await store.change_shop(s, "vote_points=3", FALLBACK, actor_id=1, source_key="y")
    async with db.transaction(readonly=True) as s:
        assert (await store.changed_since(s, seen))[1] == {None}
