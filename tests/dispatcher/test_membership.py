"""F1: ponds registered and retired, members joining and leaving, migration."""

from __future__ import annotations

from aiogram.types import (
    Chat,
    ChatMemberBanned,
    ChatMemberLeft,
    ChatMemberMember,
    ChatMemberUpdated,
    Message,
    User,
)
from sqlalchemy import select

from storage.models import LedgerEntry, Member, Membership, Pond, SaleCampaign, SalesPlan
from tests.dispatcher.conftest import OPERATOR_ID
from tests.rig.client import Harness, group_chat, person, private_chat
from tests.rig.fake_session import BOT_ID, BOT_USERNAME, admin

BOT = User(id=BOT_ID, is_bot=True, first_name="PondBot", username=BOT_USERNAME)


def _bot_status(chat: Chat, harness: Harness, old: str, new: str) -> ChatMemberUpdated:
    states = {
        "left": ChatMemberLeft(user=BOT),
        "member": ChatMemberMember(user=BOT),
        "kicked": ChatMemberBanned(user=BOT, until_date=0),
    }
    return ChatMemberUpdated(
        chat=chat,
        from_user=person(OPERATOR_ID, "Op"),
        date=harness.now,
        old_chat_member=states[old],
        new_chat_member=states[new],
    )


async def _pond(h: Harness, chat_id: int) -> Pond | None:
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        return await s.get(Pond, chat_id)


async def test_bot_added_and_removed(harness: Harness) -> None:
    chat = group_chat(-100777, "New pond")
    await harness.feed_event(my_chat_member=_bot_status(chat, harness, "left", "member"))
    await harness.settle()
    pond = await _pond(harness, chat.id)
    assert pond is not None and pond.status == "active" and pond.timezone == "Asia/Shanghai"
    assert len(harness.replies(chat.id)) == 1  # a welcome
    await harness.feed_event(my_chat_member=_bot_status(chat, harness, "member", "left"))
    pond = await _pond(harness, chat.id)
    assert pond is not None and pond.status == "inactive"
    await harness.feed_event(my_chat_member=_bot_status(chat, harness, "left", "member"))
    pond = await _pond(harness, chat.id)
    assert pond is not None and pond.status == "active"


async def test_blocking_the_bot_unlinks_the_dm_and_unblocking_links_it(harness: Harness) -> None:
    dora = person(31, "Dora")
    dm = harness.member(private_chat(dora), dora)

    async def linked() -> bool:
        async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
            member = await s.get(Member, dora.id)
        assert member is not None
        return member.dm_linked

    await dm.send("/start")
    assert await linked()
    blocked = _bot_status(private_chat(dora), harness, "member", "kicked")
    await harness.feed_event(my_chat_member=blocked.model_copy(update={"from_user": dora}))
    assert not await linked()
    unblocked = _bot_status(private_chat(dora), harness, "kicked", "member")
    await harness.feed_event(my_chat_member=unblocked.model_copy(update={"from_user": dora}))
    assert await linked()


async def test_join_leave_recorded_and_bots_ignored(harness: Harness, group: Chat) -> None:
    carol = harness.member(group, person(3, "Carol", "carol"))
    await carol.join()
    other_bot = harness.member(
        group, User(id=555, is_bot=True, first_name="Spam", username="spam_bot")
    )
    await other_bot.join()
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        m = await s.get(Membership, (group.id, 3))
        assert m is not None and m.status == "member" and m.joined_at is not None
        assert await s.get(Member, 555) is None
    await carol.leave()
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        m = await s.get(Membership, (group.id, 3))
        assert m is not None and m.status == "left" and m.left_at is not None


async def test_a_member_recorded_as_gone_who_speaks_again_is_present(
    harness: Harness, group: Chat
) -> None:
    """A rejoin the bot did not see (no `chat_member` update): the member's next message
    in the pond records them present again, so they count in the pond's ranks."""
    carol = harness.member(group, person(3, "Carol", "carol"))
    await carol.send("hello")
    await carol.leave()
    await carol.send("back again")
    await harness.settle()
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        m = await s.get(Membership, (group.id, 3))
        assert m is not None and m.status == "member" and m.left_at is None


async def test_names_kept_fresh(harness: Harness, group: Chat) -> None:
    await harness.member(group, person(4, "Dan", "dan")).send("hi")
    await harness.member(group, person(4, "Daniel", "dan_new")).send("hi again")
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        m = await s.get(Member, 4)
    assert m is not None and m.first_name == "Daniel" and m.username == "dan_new"


async def test_promotion_refreshes_admin_list(harness: Harness, group: Chat) -> None:
    dave = person(6, "Dave", "dave")
    client = harness.member(group, dave)
    await harness.member(group, person(1, "Alice", "alice")).send("hi")
    await client.send("/give @alice 5")  # not an admin (yet): refused, admin list cached
    harness.session.admins[group.id].append(admin(dave, can_invite_users=True))
    await harness.feed_event(
        chat_member=ChatMemberUpdated(
            chat=group,
            from_user=person(900_003, "Owner"),
            date=harness.now,
            old_chat_member=ChatMemberMember(user=dave),
            new_chat_member=harness.session.admins[group.id][-1],
        )
    )
    await client.send("/give @alice 5")
    await harness.settle()
    texts = harness.replies(group.id)
    assert "⛔" in texts[0] and "+5" in texts[1]


async def test_group_migration_keeps_everything(harness: Harness) -> None:
    old = Chat(id=-4242, type="group", title="Small pond")
    new = Chat(id=-1004242, type="supergroup", title="Small pond")
    alice = harness.member(old, person(1, "Alice", "alice"))
    op = harness.member(old, person(OPERATOR_ID, "Op"))
    await alice.send("hi")
    await op.send("/give @alice 40")
    await op.send("/campaign 双十一 11-11")  # what the operators set up goes along
    await op.send("/plan 200 5")
    service = Message(
        message_id=harness.next_message_id(old.id),
        date=harness.now,
        chat=old,
        from_user=person(OPERATOR_ID, "Op"),
        migrate_to_chat_id=new.id,
    )
    await harness.feed_event(message=service)
    await harness.feed_event(message=service)  # delivered twice: harmless
    await harness.member(new, person(1, "Alice", "alice")).send("/points")
    await harness.settle()
    assert "<b>40</b>" in harness.replies(new.id)[-1]
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        old_pond = await s.get(Pond, old.id)
        new_pond = await s.get(Pond, new.id)
        assert old_pond is not None and old_pond.status == "migrated"
        assert old_pond.migrated_to == new.id
        assert new_pond is not None and new_pond.status == "active"
        assert await s.get(Membership, (new.id, 1)) is not None
        assert await s.get(Membership, (old.id, 1)) is None
        entries = (await s.execute(select(LedgerEntry))).scalars().all()
        assert [e.delta for e in entries] == [40]
        campaigns = (await s.execute(select(SaleCampaign))).scalars().all()
        assert [(c.scope, c.name) for c in campaigns] == [(new.id, "双十一")]
        plans = (await s.execute(select(SalesPlan))).scalars().all()
        assert [(p.chat_id, p.sales, p.per_buyer) for p in plans] == [(new.id, 200, 5)]
    await harness.member(new, person(OPERATOR_ID, "Op")).send("/campaign")
    await harness.settle()
    assert "双十一" in harness.replies(new.id)[-1]
