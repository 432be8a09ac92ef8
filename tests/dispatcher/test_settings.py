"""`/settings` (SPEC F12) through the real Dispatcher: the list, changes that take
effect at once (time zone and language included, in this process and in another one),
refusals that change nothing, replays, and the shop-wide defaults in a private chat."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from games.settings import Effective, PondSettings, setting_names
from services.i18n import make_i18n, speaking
from services.texts import settings as texts
from storage import repo
from storage.db import Database
from storage.models import Pond, SettingsAudit
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, OPERATOR_ID, running
from tests.dispatcher.test_checkin import WallClock, entries, served, settle, typed
from tests.rig.client import Harness, group_chat, person, private_chat, utf16_len

UTC = dt.UTC
POND = group_chat(GROUP_ID, "Pond")


def prepare(h: Harness, at: dt.datetime) -> WallClock:
    clock = WallClock(at)
    h.dp["clock"] = clock
    h.dp["boards"].interval = 0.0
    served(h, GROUP_ID)
    return clock


async def audit_rows(db: Database) -> list[SettingsAudit]:
    async with db.transaction(readonly=True) as s:
        return list((await s.scalars(select(SettingsAudit).order_by(SettingsAudit.id))).all())  # type: ignore[arg-type]


async def pond_row(db: Database, chat_id: int = GROUP_ID) -> Pond:
    async with db.transaction(readonly=True) as s:
        row = await s.get(Pond, chat_id)
    assert row is not None
    return row


def test_every_setting_has_a_description_in_both_languages() -> None:
    assert set(texts.DESCRIPTIONS) == {*PondSettings.model_fields, "timezone", "language"}
    assert set(setting_names()) == set(texts.DESCRIPTIONS)
    i18n = make_i18n()
    for name in setting_names():
        with speaking(i18n, "zh"):
            zh = texts.describe(name)
        with speaking(i18n, "en"):
            en = texts.describe(name)
        assert en == texts.DESCRIPTIONS[name] and zh != en, name


def test_a_long_list_is_split_under_the_limit() -> None:
    current = Effective(PondSettings(), "Asia/Shanghai", "zh")
    with speaking(make_i18n(), "en"):
        for limit in (700, 1500):
            messages = texts.listing(current, current, shop_wide=False, limit=limit)
            assert len(messages) > 1 and all(len(m) <= limit for m in messages)
            text = "\n".join(messages)
            assert all(f"<code>{name}</code> = " in text for name in setting_names())
            assert messages[-1].endswith(texts.usage())


async def test_the_list_shows_every_setting_its_default_and_fits_telegram(
    harness: Harness, bot_db: Database
) -> None:
    prepare(harness, dt.datetime(2025, 3, 1, 1, tzinfo=UTC))
    admin = harness.member(POND, person(ADMIN_ID, "Admin", "shop_admin"))
    await admin.send("/settings")
    await harness.settle()
    replies = harness.replies(GROUP_ID)
    assert all(utf16_len(r) <= 4096 for r in replies)
    text = "\n".join(replies)
    assert "全部是全店默认值" in text
    for name in setting_names():
        assert f"<code>{name}</code> = " in text, name
    assert "<code>checkin_milestones</code> = 7:20,30:100 · 默认" in text
    assert "<code>timezone</code> = Asia/Shanghai · 默认" in text

    await harness.member(POND, person(OPERATOR_ID, "Op")).send("/settings checkin_base=8")
    await admin.send("/settings")
    await harness.settle()
    text = "\n".join(harness.replies(GROUP_ID)[len(replies) + 1:])
    assert "1 项与全店默认不同" in text
    assert "<code>checkin_base</code> = <b>8</b>（默认 5）" in text


async def test_a_change_pays_at_the_next_checkin_and_is_audited_once(
    harness: Harness, bot_db: Database
) -> None:
    prepare(harness, dt.datetime(2025, 3, 1, 1, tzinfo=UTC))
    alice = harness.member(POND, person(1, "Alice", "alice"))
    admin = harness.member(POND, person(OPERATOR_ID, "Op", "shop_op"))  # points: shop-level
    await alice.send("签到")
    await settle(harness)
    change = admin.message("/settings checkin_base=8 checkin_milestones=2:50")
    update_id = harness.next_update_id()
    await admin.resend(change, update_id)
    await harness.settle()
    assert "checkin_base</code>: 5 → <b>8</b>" in harness.replies(GROUP_ID)[-1]
    # Telegram delivers the command again after a restart (the new process has no
    # memory of it): nothing changes twice, no second audit row, no second answer.
    async with running(bot_db) as restarted:
        served(restarted, GROUP_ID)
        await restarted.member(POND, admin.user).resend(change, update_id)
        await restarted.settle()
        assert restarted.replies(GROUP_ID) == []
    rows = await audit_rows(bot_db)
    assert [(r.chat_id, r.key, r.old_value, r.new_value, r.actor_id) for r in rows] == [
        (GROUP_ID, "checkin_base", "5", "8", OPERATOR_ID),
        (GROUP_ID, "checkin_milestones", "7:20,30:100", "2:50", OPERATOR_ID),
    ]
    harness.dp["clock"].next_day()
    await typed(alice, "签到", harness.dp["clock"].now)
    await settle(harness)
    paid = [e.delta for e in await entries(harness, 1)]
    assert paid == [5, 8 + 1, 50]  # base 8, the streak step, the day-2 milestone


async def test_a_bad_pair_or_a_member_changes_nothing(harness: Harness, bot_db: Database) -> None:
    prepare(harness, dt.datetime(2025, 3, 1, 1, tzinfo=UTC))
    admin = harness.member(POND, person(OPERATOR_ID, "Op", "shop_op"))  # points: shop-level
    alice = harness.member(POND, person(1, "Alice", "alice"))
    await admin.send("/settings checkin_base=8 checkin_streak_cap=-1 timezone=Mars/Base")
    await admin.send("/settings chekin_base=8 language=fr")
    await admin.send("/settings tiers=VIP2:300:9.5,VIP1:0.01:9.8")
    await alice.send("/settings checkin_base=1000")
    await admin.send("/settings " + " ".join(f"x{i}=1" for i in range(30)))
    await harness.settle()
    bounds, unknown, tiers, member, many = harness.replies(GROUP_ID)
    assert "还有 20 处" in many and utf16_len(many) < 4096
    assert "checkin_streak_cap</code>：应为0 到 10000 之间的整数" in bounds
    assert "timezone</code>：应为IANA 时区名称" in bounds and "什么都没有改" in bounds
    assert "没有 <code>chekin_base</code>" in unknown and "<code>checkin_base</code>" in unknown
    assert "language</code>：应为以下之一：zh | en" in unknown
    assert "tiers</code>" in tiers and "thresholds must rise" in tiers
    assert "只有" in member or "⛔" in member
    assert await audit_rows(bot_db) == []
    assert (await pond_row(bot_db)).settings == {}
    async with bot_db.transaction(readonly=True) as s:
        assert (await repo.pond_settings(s, GROUP_ID)).checkin_base == 5


async def test_a_ponds_own_admin_cannot_change_how_many_points_are_paid(
    harness: Harness, bot_db: Database
) -> None:
    """Points are shop-wide: a pond admin who could set a check-in to 10,000 points or
    their own give cap to millions could mint. They change the rest (quiet thresholds,
    time zone, language …); the points economy is the shop's own operators' call."""
    prepare(harness, dt.datetime(2025, 3, 1, 1, tzinfo=UTC))
    admin = harness.member(POND, person(ADMIN_ID, "Admin", "shop_admin"))
    for attempt in ("checkin_base=10000", "operator_give_daily_cap=99999999",
                    "checkin_quiet_below=5 points_per_yuan=100", "tiers=VIP9:0.01:1"):
        await admin.send(f"/settings {attempt}")
        await harness.settle()
        answer = harness.replies(GROUP_ID)[-1]
        assert "OPERATOR_IDS" in answer and "⛔" in answer, attempt
    assert await audit_rows(bot_db) == []
    await admin.send("/settings checkin_quiet_below=5")
    await harness.settle()
    assert "checkin_quiet_below" in harness.replies(GROUP_ID)[-1]
    assert (await pond_row(bot_db)).settings == {"checkin_quiet_below": 5}


async def test_a_new_timezone_moves_the_ponds_day_at_once(
    harness: Harness, bot_db: Database
) -> None:
    wall = prepare(harness, dt.datetime(2025, 3, 1, 4, 50, tzinfo=UTC))  # Shanghai 12:50
    alice = harness.member(POND, person(1, "Alice", "alice"))
    admin = harness.member(POND, person(ADMIN_ID, "Admin", "shop_admin"))
    await alice.send("签到")  # Mar 1 in Shanghai; the pond is now known to this process
    await settle(harness)
    # Mar 2, 12:55 in Shanghai is still Mar 1, 23:55 in New York.
    wall.set(dt.datetime(2025, 3, 2, 4, 55, tzinfo=UTC))
    await admin.send("/settings timezone=America/New_York")
    await harness.settle()
    assert "Asia/Shanghai → <b>America/New_York</b>" in harness.replies(GROUP_ID)[-1]
    wall.set(dt.datetime(2025, 3, 2, 4, 58, tzinfo=UTC))
    await typed(alice, "签到", wall.now)  # 23:58 in New York: Mar 1, already checked in
    wall.set(dt.datetime(2025, 3, 2, 5, 0, 30, tzinfo=UTC))
    await typed(alice, "签到", wall.now)  # 00:00:30 in New York: the new day
    await settle(harness)
    assert [e.idem_key for e in await entries(harness, 1)] == [
        "checkin:1:2025-03-01", "checkin:1:2025-03-02"
    ]


async def test_language_en_switches_the_ponds_replies(harness: Harness) -> None:
    prepare(harness, dt.datetime(2025, 3, 1, 1, tzinfo=UTC))
    admin = harness.member(POND, person(ADMIN_ID, "Admin", "shop_admin"))
    alice = harness.member(POND, person(1, "Alice", "alice"))
    await alice.send("/points")
    await admin.send("/settings language=en")
    await alice.send("签到")
    await settle(harness)
    replies = harness.replies(GROUP_ID)
    assert "积分" in replies[0]
    assert replies[1].startswith("✅ Settings changed:") and "zh → <b>en</b>" in replies[1]
    assert "Alice checked in: +5 points" in replies[2]


async def test_another_process_sees_a_new_timezone_within_its_poll(
    harness: Harness, bot_db: Database
) -> None:
    wall = prepare(harness, dt.datetime(2025, 3, 1, 4, 50, tzinfo=UTC))
    async with running(bot_db) as other:
        other.dp["clock"] = wall
        other.dp["boards"].interval = 0.0
        served(other, GROUP_ID)
        other.dp["tracking"]._settings_poll = 0.0  # look at the audit on every update
        alice_there = other.member(POND, person(1, "Alice", "alice"))
        await alice_there.send("签到")  # the other process knows the pond (Shanghai)
        await settle(other)
        wall.set(dt.datetime(2025, 3, 2, 4, 55, tzinfo=UTC))
        admin = harness.member(POND, person(ADMIN_ID, "Admin", "shop_admin"))
        await admin.send("/settings timezone=America/New_York")
        await harness.settle()
        wall.set(dt.datetime(2025, 3, 2, 4, 58, tzinfo=UTC))  # Mar 1 in New York
        await typed(alice_there, "签到", wall.now)
        await settle(other)
        assert [e.idem_key for e in await entries(other, 1)] == ["checkin:1:2025-03-01"]


async def test_shop_wide_defaults_in_a_private_chat(harness: Harness, bot_db: Database) -> None:
    wall = prepare(harness, dt.datetime(2025, 3, 1, 1, tzinfo=UTC))
    other = group_chat(-1009000000003, "Other pond")
    served(harness, other.id)
    alice = harness.member(POND, person(1, "Alice", "alice"))
    bob = harness.member(other, person(2, "Bob", "bob"))
    await alice.send("/points")
    await bob.send("/points")  # both ponds known, with the built-in defaults
    op_user = person(OPERATOR_ID, "Op")
    await harness.member(POND, op_user).send("/settings checkin_base=8")  # this pond's own
    op = harness.member(private_chat(op_user), op_user)
    await op.send("/settings checkin_base=7 language=en")
    stranger_user = person(3, "Carol")
    stranger = harness.member(private_chat(stranger_user), stranger_user)
    await stranger.send("/settings checkin_base=1")
    await harness.settle()
    said = harness.replies(OPERATOR_ID)[-1]
    assert "Shop-wide defaults changed" in said or "全店默认设置已修改" in said
    assert "2 个鱼塘" in said or "2 pond(s)" in said  # language followed in both
    assert "⛔" in harness.replies(3)[-1]
    rows = await audit_rows(bot_db)
    assert [(r.chat_id, r.key, r.new_value) for r in rows[-2:]] == [
        (None, "language", "en"), (None, "checkin_base", "7")
    ]
    await alice.send("签到")
    await bob.send("签到")
    await settle(harness)
    assert [e.delta for e in await entries(harness, 1)] == [8]  # its own value stays
    assert [e.delta for e in await entries(harness, 2)] == [7]  # follows the default
    assert "Bob checked in: +7 points" in "\n".join(harness.replies(other.id))
    # The list in the private chat shows the shop-wide defaults against the built-ins.
    await op.send("/settings")
    await harness.settle()
    listing = "\n".join(harness.replies(OPERATOR_ID)[1:])
    assert "<code>checkin_base</code> = <b>7</b>" in listing
    # A group seen for the first time starts with the shop-wide defaults.
    third = group_chat(-1009000000004, "Third pond")
    served(harness, third.id)
    carol = harness.member(third, person(4, "Dan"))
    wall.next_day()
    await carol.send("签到")
    await settle(harness)
    assert [e.delta for e in await entries(harness, 4)] == [7]
    assert (await pond_row(bot_db, third.id)).language == "en"


async def test_a_shop_wide_setting_is_refused_in_a_pond_and_set_in_private(
    harness: Harness, bot_db: Database
) -> None:
    """Birthdays, points expiry and segments are the shop's: the jobs read the shop-wide
    values, so a pond's own value would change nothing. In a pond, whoever asks is told
    where it is set and nothing is stored; in a private chat a global operator sets it,
    and the pond's list shows the shop's value."""
    prepare(harness, dt.datetime(2025, 3, 1, 1, tzinfo=UTC))
    admin = harness.member(POND, person(ADMIN_ID, "Admin", "shop_admin"))
    op_user = person(OPERATOR_ID, "Op")
    op_in_pond = harness.member(POND, op_user)
    await admin.send("/settings birthday_points=100")
    await op_in_pond.send("/settings checkin_base=6 points_expiry_days=30")
    await op_in_pond.send("/settings churn_days=abc")
    await harness.settle()
    told = harness.replies(GROUP_ID)
    assert len(told) == 3
    for answer, key in zip(told, ("birthday_points", "points_expiry_days", "churn_days"),
                           strict=True):
        assert f"<code>{key}</code> 是全店统一的设置" in answer, answer
        assert "私聊" in answer and "什么都没有改" in answer, answer
    assert "checkin_base" not in told[1]
    assert await audit_rows(bot_db) == []
    assert (await pond_row(bot_db)).settings == {}
    # Set shop-wide, by a global operator in a private chat: the pond shows it.
    op = harness.member(private_chat(op_user), op_user)
    await op.send("/settings birthday_points=100")
    await harness.settle()
    assert "birthday_points</code>: 50 → <b>100</b>" in harness.replies(OPERATOR_ID)[-1]
    rows = await audit_rows(bot_db)
    assert [(r.chat_id, r.key, r.new_value) for r in rows] == [(None, "birthday_points", "100")]
    await admin.send("/settings")
    await harness.settle()
    listing = "\n".join(harness.replies(GROUP_ID)[3:])
    assert "<code>birthday_points</code> = 100 · 全店统一" in listing
    assert "<code>points_expiry_days</code> = 0 · 全店统一" in listing
