"""F1 trust boundary: only the shop's groups are ponds; a stranger's group gets one
notice and nothing else; `/ponds`; pond operators' daily /give cap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiogram.methods import GetChatAdministrators, TelegramMethod
from aiogram.types import (
    Chat,
    ChatMemberLeft,
    ChatMemberMember,
    ChatMemberUpdated,
    Message,
    User,
)
from sqlalchemy import func, select

from storage import migrate, repo
from storage import promo as promo_store
from storage.db import Database
from storage.models import LedgerEntry, Member, Membership, Pond, PondTrust, RedPacket
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, OPERATOR_ID, running
from tests.rig.client import GroupClient, Harness, group_chat, person, private_chat
from tests.rig.fake_session import BOT_ID, BOT_USERNAME, admin, owner

STRANGER_GROUP = -1007000000001
STRANGER = person(700_001, "Mallory", "mallory")  # admin of their own group only
ALICE = person(1, "Alice", "alice")
BOB = person(2, "Bob", "bob_b")
OP = person(OPERATOR_ID, "Op", "op")
BOT = User(id=BOT_ID, is_bot=True, first_name="PondBot", username=BOT_USERNAME)


def strangers_group(h: Harness, chat_id: int = STRANGER_GROUP) -> Chat:
    """A group whose admins are the stranger alone: no global operator among them."""
    h.session.admins[chat_id] = [owner(STRANGER)]
    return group_chat(chat_id, "Mallory's <b>group</b>")


def sent_to(h: Harness, chat_id: int) -> list[TelegramMethod[object]]:
    """Every request aimed at the chat, except reading its admin list."""
    return [
        r for r in h.session.requests
        if getattr(r, "chat_id", None) == chat_id and not isinstance(r, GetChatAdministrators)
    ]


async def ledger_total(h: Harness) -> tuple[int, int]:
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        count = await s.scalar(select(func.count()).select_from(LedgerEntry))
        total = await s.scalar(select(func.coalesce(func.sum(LedgerEntry.delta), 0)))  # type: ignore[arg-type]
    return int(count or 0), int(total or 0)


async def balance(h: Harness, user_id: int) -> int:
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        member = await s.get(Member, user_id)
    return member.balance if member else 0


async def pond_row(db: Database, chat_id: int) -> Pond | None:
    async with db.transaction(readonly=True) as s:
        return await s.get(Pond, chat_id)


def bot_status(
    chat: Chat, by: User, old: str, new: str, *, date: datetime | None = None
) -> ChatMemberUpdated:
    states = {
        "left": ChatMemberLeft(user=BOT),
        "member": ChatMemberMember(user=BOT),
        "administrator": admin(BOT, can_invite_users=True),
    }
    return ChatMemberUpdated(
        chat=chat,
        from_user=by,
        date=date or datetime.now(UTC),
        old_chat_member=states[old],
        new_chat_member=states[new],
    )


async def told(h: Harness, client: GroupClient, text: str) -> str:
    await client.send(text)
    await h.settle()
    return h.session.sent_texts(client.chat.id)[-1]


# -- a stranger's group ------------------------------------------------------------------


async def test_a_strangers_group_mints_nothing_and_hears_one_notice(bot_db: Database) -> None:
    async with running(bot_db) as h:
        pond = group_chat(GROUP_ID, "Shop pond")
        op = h.member(pond, OP)
        alice_in_pond = h.member(pond, ALICE)
        await alice_in_pond.send("hi")
        await told(h, op, "/give @alice 100 welcome")
        assert await balance(h, ALICE.id) == 100
        before = await ledger_total(h)

        group = strangers_group(h)
        mallory = h.member(group, STRANGER)
        bob = h.member(group, BOB)
        alice = h.member(group, ALICE)
        await mallory.send("/give 700001 1000000 mine")  # to themselves
        await mallory.send("/give @alice 500")  # to a member of the shop
        await mallory.send("/take @alice 100")  # drain a member
        await mallory.send("/redpacket 100 5")  # funded by the shop
        await bob.send("/checkin")
        await alice.send("签到")
        await bob.send("/points")
        await mallory.send("/board")
        await h.settle()

        assert await ledger_total(h) == before  # nobody's balance moved
        assert await balance(h, ALICE.id) == 100
        assert await balance(h, BOB.id) == 0 and await balance(h, STRANGER.id) == 0
        requests = sent_to(h, group.id)
        assert len(requests) == 1  # the one notice, nothing else
        notice = h.session.sent_texts(group.id)[0]
        assert str(STRANGER_GROUP) in notice and "/ponds approve" in notice
        async with bot_db.transaction(readonly=True) as s:
            seats = await s.scalar(
                select(func.count()).select_from(Membership).where(
                    Membership.chat_id == STRANGER_GROUP  # type: ignore[arg-type]
                )
            )
        assert seats == 0  # nobody recorded there

        # The pond of the shop is unaffected: Alice checks in there.
        await alice_in_pond.send("签到")
        await h.settle()
        assert await balance(h, ALICE.id) > 100

    # Another process: the notice was said once for good.
    async with running(bot_db) as h2:
        h2.session.admins[STRANGER_GROUP] = [owner(STRANGER)]
        await h2.member(group_chat(STRANGER_GROUP, "x"), BOB).send("/checkin")
        await h2.member(group_chat(STRANGER_GROUP, "x"), STRANGER).send("/give 2 5")
        await h2.settle()
        assert sent_to(h2, STRANGER_GROUP) == []
    row = await pond_row(bot_db, STRANGER_GROUP)
    assert row is not None and row.trust == PondTrust.stranger


async def test_a_stranger_adding_the_bot_gets_the_notice_not_a_welcome(harness: Harness) -> None:
    group = strangers_group(harness)
    await harness.feed_event(my_chat_member=bot_status(group, STRANGER, "left", "administrator"))
    await harness.settle()
    texts = harness.session.sent_texts(group.id)
    assert len(texts) == 1 and str(STRANGER_GROUP) in texts[0]
    await harness.member(group, STRANGER).send("/give 700001 50")
    await harness.settle()
    assert len(sent_to(harness, group.id)) == 1
    assert await ledger_total(harness) == (0, 0)


async def test_a_global_operator_adding_the_bot_trusts_the_group_at_once(
    harness: Harness,
) -> None:
    group = strangers_group(harness)  # the operator is not even an admin there
    await harness.feed_event(my_chat_member=bot_status(group, OP, "left", "member"))
    await harness.settle()
    assert len(harness.session.sent_texts(group.id)) == 1  # the welcome
    row = await pond_row(harness.db, group.id)  # type: ignore[attr-defined]
    assert row is not None and row.trust == PondTrust.approved and row.trusted_by == OPERATOR_ID
    # Its admin is an operator of this pond now (within the daily cap).
    mallory = harness.member(group, STRANGER)
    await harness.member(group, BOB).send("hello")
    assert "+50" in await told(harness, mallory, "/give @bob_b 50")
    assert await balance(harness, BOB.id) == 50


async def test_promoting_and_demoting_a_global_operator_decides_again(harness: Harness) -> None:
    group = strangers_group(harness)
    mallory = harness.member(group, STRANGER)
    await mallory.send("/points")
    await harness.settle()
    assert len(sent_to(harness, group.id)) == 1  # the notice
    promoted = admin(OP)
    harness.session.admins[group.id] = [owner(STRANGER), promoted]
    await harness.feed_event(
        chat_member=ChatMemberUpdated(
            chat=group, from_user=STRANGER, date=harness.now,
            old_chat_member=ChatMemberMember(user=OP), new_chat_member=promoted,
        )
    )
    row = await pond_row(harness.db, group.id)  # type: ignore[attr-defined]
    assert row is not None and row.trust == PondTrust.operator
    assert "0" in await told(harness, mallory, "/points")  # served now
    harness.session.admins[group.id] = [owner(STRANGER)]
    await harness.feed_event(
        chat_member=ChatMemberUpdated(
            chat=group, from_user=STRANGER, date=harness.now,
            old_chat_member=promoted, new_chat_member=ChatMemberMember(user=OP),
        )
    )
    row = await pond_row(harness.db, group.id)  # type: ignore[attr-defined]
    assert row is not None and row.trust == PondTrust.stranger
    served = len(sent_to(harness, group.id))
    await mallory.send("/points")
    await harness.settle()
    assert len(sent_to(harness, group.id)) == served  # silent again (the notice was said)


# -- /ponds --------------------------------------------------------------------------------


async def test_ponds_approve_makes_a_pond_and_revoke_stops_it(harness: Harness) -> None:
    group = strangers_group(harness)
    mallory = harness.member(group, STRANGER)
    bob = harness.member(group, BOB)
    await bob.send("/checkin")
    await harness.settle()
    dm = harness.member(private_chat(OP), OP)

    listing = await told(harness, dm, "/ponds")
    assert str(STRANGER_GROUP) in listing and "&lt;b&gt;group&lt;/b&gt;" in listing

    approved = await told(harness, dm, f"/ponds approve {STRANGER_GROUP}")
    assert "✅" in approved and str(STRANGER_GROUP) in approved
    assert "✅" in await told(harness, dm, f"/ponds approve {STRANGER_GROUP}")  # already
    await bob.send("/checkin")
    await harness.settle()
    assert await balance(harness, BOB.id) > 0  # a pond now
    assert "+10" in await told(harness, mallory, "/give @bob_b 10 thanks")

    revoked = await told(harness, dm, f"/ponds revoke {STRANGER_GROUP}")
    assert "🚫" in revoked
    before = await ledger_total(harness)
    quiet = len(sent_to(harness, group.id))
    await mallory.send("/give @bob_b 10 again")
    await bob.send("签到")
    await harness.settle()
    assert await ledger_total(harness) == before
    assert len(sent_to(harness, group.id)) == quiet
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        entries = await s.scalar(
            select(func.count()).select_from(LedgerEntry).where(
                LedgerEntry.chat_id == STRANGER_GROUP  # type: ignore[arg-type]
            )
        )
    assert entries and entries >= 2  # the check-in and the give: nothing deleted
    listing = await told(harness, dm, "/ponds")
    assert "🚫" in listing or "revoked" in listing or "撤销" in listing


async def test_ponds_refuses_others_and_bad_ids(harness: Harness, group: Chat) -> None:
    bob_dm = harness.member(private_chat(BOB), BOB)
    assert "⛔" in await told(harness, bob_dm, "/ponds")
    pond_admin = harness.member(group, person(ADMIN_ID, "Admin", "shop_admin"))
    assert "⛔" in await told(harness, pond_admin, f"/ponds approve {STRANGER_GROUP}")
    dm = harness.member(private_chat(OP), OP)
    for bad in ("/ponds approve", "/ponds approve abc", "/ponds approve 12345",
                "/ponds nuke -100123", "/ponds approve -1 -2"):
        answer = await told(harness, dm, bad)
        assert "/ponds approve" in answer, bad
    assert str(-100999) in await told(harness, dm, "/ponds approve -100999")  # unknown
    assert await pond_row(harness.db, -100999) is None  # type: ignore[attr-defined]
    in_group = await told(harness, harness.member(group, OP), "/ponds")
    assert "/ponds" in in_group


# -- ponds from before the boundary ----------------------------------------------------------


async def test_ponds_from_before_the_boundary_are_checked_on_their_first_update(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await migrate.aupgrade(url, "0007")
    db = Database(url)
    old_pond, old_stranger, old_quiet = -1008000000001, -1008000000002, -1008000000003
    try:
        async with db.engine.begin() as conn:
            for chat_id in (old_pond, old_stranger, old_quiet):
                await conn.exec_driver_sql(
                    "INSERT INTO pond (chat_id, title, chat_type, status, timezone, language, "
                    "settings, created_at, updated_at) VALUES (?, 'old', 'supergroup', "
                    "'active', 'Asia/Shanghai', 'zh', '{}', '2026-01-01 00:00:00', "
                    "'2026-01-01 00:00:00')",
                    (chat_id,),
                )
        await migrate.aupgrade(url)
        assert (await pond_row(db, old_pond)).trust == PondTrust.unchecked  # type: ignore[union-attr]
        async with running(db) as h:
            h.session.admins[old_stranger] = [owner(STRANGER)]  # no global operator
            await h.member(group_chat(old_pond, "old"), BOB).send("/checkin")
            await h.member(group_chat(old_stranger, "old"), BOB).send("/checkin")
            await h.settle()
            assert len(h.session.sent_texts(old_stranger)) == 1  # the notice
        assert (await pond_row(db, old_pond)).trust == PondTrust.operator  # type: ignore[union-attr]
        assert (await pond_row(db, old_stranger)).trust == PondTrust.stranger  # type: ignore[union-attr]
        async with db.transaction(readonly=True) as s:
            targets = [p.chat_id for p in await promo_store.active_ponds(s)]
        assert old_pond in targets and old_stranger not in targets  # no broadcasts there
        assert old_quiet not in targets  # not checked yet: nobody wrote there

        # At start, groups never checked are checked in the background.
        async with running(db) as h:
            await h.dp.emit_startup(bot=h.bot)
            try:
                for _ in range(200):
                    if (await pond_row(db, old_quiet)).trust != PondTrust.unchecked:  # type: ignore[union-attr]
                        break
                    await asyncio.sleep(0.02)
            finally:
                await h.dp.emit_shutdown(bot=h.bot)
            assert h.session.sent_texts(old_quiet) == []  # checked silently
        assert (await pond_row(db, old_quiet)).trust == PondTrust.operator  # type: ignore[union-attr]
        async with db.transaction(readonly=True) as s:
            targets = [p.chat_id for p in await promo_store.active_ponds(s)]
        assert old_quiet in targets
    finally:
        await db.dispose()


async def test_an_admin_list_telegram_cannot_give_decides_nothing(harness: Harness) -> None:
    group = strangers_group(harness)
    harness.session.fail_next("getChatAdministrators", error_code=502)
    await harness.member(group, BOB).send("/checkin")
    await harness.settle()
    assert sent_to(harness, group.id) == []  # not served, and nothing said yet
    row = await pond_row(harness.db, group.id)  # type: ignore[attr-defined]
    assert row is not None and row.trust == PondTrust.unchecked


# -- the daily /give cap of pond operators -----------------------------------------------


async def test_pond_operators_give_within_a_daily_cap(harness: Harness, group: Chat) -> None:
    day = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)  # 18:00 in Asia/Shanghai
    now = [day]
    harness.dp["clock"] = lambda: now[0]
    pond_admin = harness.member(group, person(ADMIN_ID, "Admin", "shop_admin"))
    await harness.member(group, BOB).send("hi")
    assert "+1500" in await told(harness, pond_admin, "/give @bob_b 1500")
    refused = await told(harness, pond_admin, "/give @bob_b 600 more")
    assert "500" in refused and "⛔" in refused
    assert await balance(harness, BOB.id) == 1500  # nothing changed
    assert "+500" in await told(harness, pond_admin, "/give @bob_b 500")
    assert "⛔" in await told(harness, pond_admin, "/give @bob_b 1")
    assert await balance(harness, BOB.id) == 2000
    # Taking is not giving; a global operator has no cap.
    assert "−100" in await told(harness, pond_admin, "/take @bob_b 100")
    op = harness.member(group, OP)
    assert "+5000" in await told(harness, op, "/give @bob_b 5000")
    # The pond's next local day (16:00 UTC is midnight in Shanghai): a fresh allowance.
    now[0] = day + timedelta(hours=6)
    assert "+2000" in await told(harness, pond_admin, "/give @bob_b 2000")
    assert await balance(harness, BOB.id) == 1500 + 500 - 100 + 5000 + 2000
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        actors = (
            await s.execute(
                select(LedgerEntry.actor_id, LedgerEntry.ref).where(  # type: ignore[call-overload]
                    LedgerEntry.kind == "admin_adjust"
                )
            )
        ).all()
    assert (ADMIN_ID, "") in actors and (OPERATOR_ID, "") in actors  # audited as ever


async def test_the_cap_is_a_pond_setting(harness: Harness, group: Chat) -> None:
    async with harness.db.transaction() as s:  # type: ignore[attr-defined]
        await repo.upsert_pond(s, GROUP_ID, title="t", chat_type="supergroup")
        await repo.change_pond_settings(s, GROUP_ID, operator_give_daily_cap=30)
    pond_admin = harness.member(group, person(ADMIN_ID, "Admin", "shop_admin"))
    await harness.member(group, BOB).send("hi")
    assert "+30" in await told(harness, pond_admin, "/give @bob_b 30")
    assert "⛔" in await told(harness, pond_admin, "/give @bob_b 1")
    assert await balance(harness, BOB.id) == 30


async def test_a_pond_admins_shop_funded_packets_count_against_the_cap(
    harness: Harness, group: Chat
) -> None:
    """A packet the shop pays is points handed out like a /give: a pond's own admin
    cannot mint past the daily cap with packets either; a global operator can."""
    async with harness.db.transaction() as s:  # type: ignore[attr-defined]
        await repo.upsert_pond(s, GROUP_ID, title="t", chat_type="supergroup")
        await repo.change_pond_settings(s, GROUP_ID, operator_give_daily_cap=100)
    pond_admin = harness.member(group, person(ADMIN_ID, "Admin", "shop_admin"))
    await harness.member(group, BOB).send("hi")
    await pond_admin.send("/redpacket 80 4")
    refused = await told(harness, pond_admin, "/redpacket 50 5")
    assert "⛔" in refused and "20" in refused
    assert "+20" in await told(harness, pond_admin, "/give @bob_b 20")
    assert "⛔" in await told(harness, pond_admin, "/give @bob_b 1")
    await harness.member(group, OP).send("/redpacket 500 5")
    await harness.settle()
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        totals = sorted((await s.execute(select(RedPacket.total))).scalars())
    assert totals == [80, 500]


async def test_a_pond_admins_orders_count_against_the_cap(harness: Harness, group: Chat) -> None:
    """Purchase points are the shop's points too: a pond's own admin recording orders
    cannot mint past the daily cap; an order over it changes nothing; a global
    operator's orders are not counted."""
    async with harness.db.transaction() as s:  # type: ignore[attr-defined]
        await repo.upsert_pond(s, GROUP_ID, title="t", chat_type="supergroup")
        await repo.change_pond_settings(s, GROUP_ID, operator_give_daily_cap=300)
    pond_admin = harness.member(group, person(ADMIN_ID, "Admin", "shop_admin"))
    await harness.member(group, BOB).send("hi")
    assert "250" in await told(harness, pond_admin, "/order @bob_b 250.40 A-1")
    refused = await told(harness, pond_admin, "/order @bob_b 60 A-2")
    assert "⛔" in refused and "50" in refused
    assert await balance(harness, BOB.id) == 250
    assert "⛔" not in await told(harness, harness.member(group, OP), "/order @bob_b 5000 A-3")
    assert await balance(harness, BOB.id) == 5250
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        spent = await s.scalar(select(Member.lifetime_spent_cents).where(Member.user_id == BOB.id))
    assert spent == 25040 + 500000  # the refused order recorded nothing


async def test_the_daily_allowance_is_counted_exactly_on_every_backend(db: Database) -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC).date()
    async with db.transaction() as s:
        await repo.upsert_pond(s, GROUP_ID, title="t", chat_type="supergroup")
        assert await repo.take_give_allowance(s, GROUP_ID, ADMIN_ID, day, 1500, 2000) == 500
        assert await repo.take_give_allowance(s, GROUP_ID, ADMIN_ID, day, 501, 2000) is None
        assert await repo.give_allowance_left(s, GROUP_ID, ADMIN_ID, day, 2000) == 500
        assert await repo.take_give_allowance(s, GROUP_ID, ADMIN_ID, day, 500, 2000) == 0
        # Another operator, another day: allowances of their own.
        assert await repo.take_give_allowance(s, GROUP_ID, 5, day, 2000, 2000) == 0
        next_day = day + timedelta(days=1)
        assert await repo.take_give_allowance(s, GROUP_ID, ADMIN_ID, next_day, 1, 2000) == 1999
        # Trust changes only from the states it is allowed to.
        assert await repo.set_trust(s, GROUP_ID, PondTrust.revoked, actor_id=OPERATOR_ID)
        assert not await repo.set_trust(
            s, GROUP_ID, PondTrust.operator, only_from=frozenset({PondTrust.unchecked})
        )
        assert await repo.claim_stranger_notice(s, GROUP_ID)
        assert not await repo.claim_stranger_notice(s, GROUP_ID)
        record = await repo.pond_record(s, GROUP_ID)
    assert record is not None and record.trust == PondTrust.revoked
    assert record.trusted_by == OPERATOR_ID and not record.served


async def test_an_approved_pond_stays_a_pond_when_it_becomes_a_supergroup(
    harness: Harness,
) -> None:
    old = group_chat(-4007, "Small group").model_copy(update={"type": "group"})
    new_id = -1004000000007
    harness.session.admins[old.id] = [owner(STRANGER)]
    harness.session.admins[new_id] = [owner(STRANGER)]  # no global operator in either
    await harness.feed_event(my_chat_member=bot_status(old, OP, "left", "member"))
    new = group_chat(new_id, "Small group")
    await harness.feed_event(
        message=Message(
            message_id=1, date=harness.now, chat=new, from_user=STRANGER,
            migrate_from_chat_id=old.id,
        )
    )
    await harness.feed_event(
        message=Message(
            message_id=99, date=harness.now, chat=old, from_user=STRANGER,
            migrate_to_chat_id=new_id,
        )
    )
    await harness.member(new, BOB).send("/checkin")
    await harness.settle()
    assert await balance(harness, BOB.id) > 0
    assert all(str(new_id) not in t for t in harness.session.sent_texts(new_id))  # no notice
    row = await pond_row(harness.db, new_id)  # type: ignore[attr-defined]
    assert row is not None and row.trust == PondTrust.approved
