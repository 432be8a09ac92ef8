"""Switching points expiry on (F14) and the shop-wide settings, in storage/settings.py and
storage/expiry.py, on SQLite and PostgreSQL: the shop-wide change that switches expiry on
moves the lots' epoch in its own transaction (so points earned before count as one lot
of the switch-on), a change of N while on, a replayed or repeated command do not, off
then on does again; the reminders recorded under the old setting and not sent are
dropped. A pond's change of a shop-wide setting is refused and changes nothing; a shop-
wide change moves every pond; a pond shows the shop's values."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlmodel import col

from games import expiry as rules
from storage import expiry, ledger, repo
from storage import settings as store
from storage.db import Database
from storage.models import ExpiryNotice, LedgerKind, PointsLotEpoch, Pond, SettingsAudit

TZ = ZoneInfo("Asia/Shanghai")
FALLBACK = store.Fallback("Asia/Shanghai", "zh")
MIGRATED = date(2025, 1, 1)
ALICE = 7
POND_A, POND_B = -1001, -1002


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), TZ).astimezone(UTC)


async def _setup(db: Database) -> None:
    """Lots began on 2025-01-01 (the migration); Alice earned 100 a month later."""
    async with db.transaction() as s:
        await s.execute(update(PointsLotEpoch).values(lots_from=at(MIGRATED, 0)))
        await repo.upsert_member(s, repo.UserInfo(ALICE, "Alice"))
        await ledger.award(s, user_id=ALICE, amount=100, kind=LedgerKind.checkin, key="old",
                           now=at(date(2025, 2, 1)))


async def _shop(db: Database, args: str, day: date, key: str) -> store.Outcome:
    async with db.transaction() as s:
        return await store.change_shop(s, args, FALLBACK, actor_id=1, source_key=key,
                                       now=at(day))


async def _epoch(db: Database) -> datetime | None:
    async with db.transaction(readonly=True) as s:
        found = await expiry.epoch(s)
    return found.astimezone(UTC) if found is not None else None


async def _due(db: Database, today: date, days: int) -> int:
    """What the daily job of `today` would expire of Alice's points, with N = `days`."""
    through = rules.last_expired_day(today, days)
    cuts = {through: datetime.combine(through + timedelta(days=1), time(), TZ)}
    async with db.transaction(readonly=True) as s:
        lots_from = await expiry.epoch(s)
        [sums] = await expiry.sums(s, cuts, users=[ALICE], lots_from=lots_from)
    return rules.plan(sums, through, []).expire


async def test_switching_expiry_on_starts_the_lots_again_once(db: Database) -> None:
    await _setup(db)
    on = date(2026, 2, 5)  # 400 days after the migration
    assert await _due(db, on + timedelta(days=1), 180) == 100  # what the old epoch did
    out = await _shop(db, "points_expiry_days=180", on, "c1")
    assert [c.key for c in out.changes] == ["points_expiry_days"]
    assert await _epoch(db) == at(on)
    assert await _due(db, on + timedelta(days=1), 180) == 0
    assert await _due(db, on + timedelta(days=179), 180) == 0
    assert await _due(db, on + timedelta(days=180), 180) == 100
    # The same command again (a redelivered update) and another one with the same value:
    # no change, the epoch stays.
    assert (await _shop(db, "points_expiry_days=180", on + timedelta(days=3), "c1")).replayed
    again = await _shop(db, "points_expiry_days=180", on + timedelta(days=10), "c2")
    assert again.changes == []
    # N changed while on: only the age changes.
    await _shop(db, "points_expiry_days=200 points_expiry_reminder_days=3",
                on + timedelta(days=30), "c3")
    assert await _epoch(db) == at(on)
    assert await _due(db, on + timedelta(days=200), 200) == 100
    # Off, then on again: the lots begin again at the second switch-on.
    await _shop(db, "points_expiry_days=0", on + timedelta(days=60), "c4")
    assert await _epoch(db) == at(on)
    back = on + timedelta(days=90)
    await _shop(db, "points_expiry_days=180", back, "c5")
    assert await _epoch(db) == at(back)
    assert await _due(db, on + timedelta(days=200), 180) == 0
    assert await _due(db, back + timedelta(days=180), 180) == 100
    async with db.transaction(readonly=True) as s:
        keys = (await s.scalars(
            select(col(SettingsAudit.source_key)).order_by(col(SettingsAudit.id))
        )).all()
    assert keys == ["c1", "c3", "c3", "c4", "c5"]


async def test_a_change_of_the_setting_drops_the_reminders_not_sent(db: Database) -> None:
    await _setup(db)
    on = date(2026, 2, 5)
    await _shop(db, "points_expiry_days=30", on, "on")
    async with db.transaction() as s:
        for day, sent in ((on, None), (on - timedelta(days=1), at(on))):
            s.add(ExpiryNotice(user_id=ALICE, lot_day=day, expires_on=day + timedelta(days=30),
                               points=100, created_at=at(on), sent_at=sent))
    await _shop(db, "points_expiry_days=0", on + timedelta(days=25), "off")
    async with db.transaction(readonly=True) as s:
        assert await expiry.unsent(s, on + timedelta(days=25)) == []
        left = (await s.scalars(select(col(ExpiryNotice.lot_day)))).all()
    assert left == [on - timedelta(days=1)]  # what was sent stays on record


async def test_a_pond_cannot_set_a_shop_wide_setting_and_shows_the_shops(db: Database) -> None:
    async with db.transaction() as s:
        for chat_id in (POND_A, POND_B):
            await repo.upsert_pond(s, chat_id, title=str(chat_id), chat_type="supergroup")
        # A value a pond stored before shop-wide settings were refused in ponds.
        await s.execute(update(Pond).where(col(Pond.chat_id) == POND_B)
                        .values(settings={"birthday_points": 7, "churn_days": 9}))
    for args in ("birthday_points=80", "checkin_quiet_below=5 points_expiry_days=30",
                 "churn_days=x segment_min_orders=2"):
        async with db.transaction() as s:
            out = await store.change_pond(s, POND_A, args, actor_id=1, source_key=args)
        assert out is not None and out.changes == [], args
        assert {e.code for e in out.errors} == {"shop_wide"}, args
    async with db.transaction(readonly=True) as s:
        assert await store.audit(s, POND_A) == []
        assert (await s.get(Pond, POND_A)).settings == {}  # type: ignore[union-attr]
        found = await store.pond_effective(s, POND_B, FALLBACK)
    assert found is not None
    mine, shop = found
    assert (mine.settings.birthday_points, mine.settings.churn_days) == (50, 30)
    assert mine.differing(shop) == []
    # The shop-wide change moves every pond, the one with an old value of its own too.
    out = await _shop(db, "birthday_points=60 churn_days=45", date(2026, 2, 5), "wide")
    assert sorted(out.moved) == sorted([POND_A, POND_B])
    async with db.transaction(readonly=True) as s:
        for chat_id in (POND_A, POND_B):
            settings = await repo.pond_settings(s, chat_id)
            assert (settings.birthday_points, settings.churn_days) == (60, 45)
