"""/start, /help, /points, /top, /give, /take through the real Dispatcher."""

from __future__ import annotations

import asyncio

from aiogram.methods import SendMessage
from aiogram.types import Chat

from storage import ledger, repo
from storage.models import LedgerKind
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID, OPERATOR_ID
from tests.rig.client import Harness, group_chat, person, private_chat
from tests.rig.fake_session import admin


async def balances(h: Harness) -> dict[int, int]:
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        rows = await repo.top_members(s, 1000)
    return {m.user_id: m.balance for m in rows}


async def invariant_ok(h: Harness) -> bool:
    async with h.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        return (await ledger.check_invariant(s)).ok


async def test_help_lists_operator_commands_only_for_operators(
    harness: Harness, group: Chat
) -> None:
    member = harness.member(group, person(1, "Alice", "alice"))
    adm = harness.member(group, person(ADMIN_ID, "Admin", "shop_admin"))
    await member.send("/help")
    await adm.send("/help@pondbot_test_bot")
    await member.send("/help@some_other_bot")  # addressed to another bot: ignored
    await harness.settle()
    texts = harness.replies(GROUP_ID)
    assert len(texts) == 2
    assert "/points" in texts[0] and "/give" not in texts[0]
    assert "/give" in texts[1] and "/take" in texts[1]


async def test_start_in_private_links_dm(harness: Harness) -> None:
    user = person(5, "Bob", "bob", language_code="en")
    dm = harness.member(private_chat(user), user)
    await dm.send("/start")
    await harness.settle()
    [text] = harness.replies(user.id)
    assert "linked" in text  # English for an English-speaking user
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        from storage.models import Member

        row = await s.get(Member, 5)
    assert row is not None and row.dm_linked


async def test_give_take_points_and_top(harness: Harness, group: Chat) -> None:
    alice = harness.member(group, person(1, "Alice <b>&</b>", "alice"))
    op = harness.member(group, person(OPERATOR_ID, "Op"))
    await alice.send("hello")  # first message records her
    await op.send("/give @alice 50 thanks for the review")
    await op.send("/take @ALICE 20")
    await alice.send("/points")
    await alice.send("/top")
    await harness.settle()
    texts = harness.replies(GROUP_ID)
    assert "+50" in texts[0] and "Alice &lt;b&gt;&amp;&lt;/b&gt;" in texts[0]
    assert "thanks for the review" in texts[0]
    assert "−20" in texts[1] and "30" in texts[1]
    assert "<b>30</b>" in texts[2] and "#1" in texts[2]
    assert "Alice &lt;b&gt;" in texts[3] and "30" in texts[3]
    assert await balances(harness) == {1: 30}
    assert await invariant_ok(harness)


async def test_group_admin_is_operator_and_reply_form(harness: Harness, group: Chat) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    adm = harness.member(group, person(ADMIN_ID, "Admin", "shop_admin"))
    hers = await alice.send("I bought the dress!")
    await adm.send("/give 15 晒单奖励", reply_to=hers)
    await harness.settle()
    assert "+15" in harness.replies(GROUP_ID)[0]
    assert await balances(harness) == {1: 15}


async def test_member_cannot_give(harness: Harness, group: Chat) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    bob = harness.member(group, person(2, "Bob", "bob"))
    await alice.send("hi")
    await bob.send("/give @alice 50 free points")
    await bob.send("/give @bob 50")
    await harness.settle()
    texts = harness.replies(GROUP_ID)
    assert len(texts) == 2 and all("⛔" in t for t in texts)
    assert await balances(harness) == {}


async def test_replayed_update_pays_once_and_answers_once(harness: Harness, group: Chat) -> None:
    alice = harness.member(group, person(1, "Alice", "alice"))
    op = harness.member(group, person(OPERATOR_ID, "Op"))
    await alice.send("hi")
    msg = op.message("/give @alice 50")
    uid = harness.next_update_id()
    await asyncio.gather(*(op.resend(msg, uid) for _ in range(10)))
    await op.resend(msg, uid)
    await harness.settle()
    assert await balances(harness) == {1: 50}
    assert len(harness.replies(GROUP_ID)) == 1
    assert await invariant_ok(harness)


async def test_redelivery_after_restart_still_pays_once(harness: Harness, group: Chat) -> None:
    """After a restart the process no longer remembers update ids: the ledger's
    idempotency key (the command message) must stop the second payment by itself."""
    alice = harness.member(group, person(1, "Alice", "alice"))
    op = harness.member(group, person(OPERATOR_ID, "Op"))
    await alice.send("hi")
    msg = op.message("/give @alice 50")
    await asyncio.gather(*(op.resend(msg, harness.next_update_id()) for _ in range(10)))
    await harness.settle()
    assert await balances(harness) == {1: 50}
    assert len(harness.replies(GROUP_ID)) == 1
    assert await invariant_ok(harness)


async def test_hostile_input_changes_nothing(harness: Harness, group: Chat) -> None:
    alice = harness.member(group, person(1, "<b>&</b> 🐟", "alice"))
    op = harness.member(group, person(OPERATOR_ID, "Op"))
    await alice.send("x" * 5000)
    await op.send("/give @alice 10")
    await harness.settle()
    before = await balances(harness)
    n_before = len(harness.replies(GROUP_ID))
    bad = [
        "/give",
        "/give @x abc",
        "/give 1 -5",
        "/give @alice 99999999999999999999999",
        "/give @alice abc",
        "/take @alice 11",
        "/give @nobody_here 5",
        "/give @alice 0",
        "/give @alice 5 " + "r" * 300,
        "/take",
        "/give 🐟 5",
        "/give @alice 1e9",
        "/give " + "9" * 5000,
    ]
    for text in bad:
        await op.send(text)
    await harness.settle()
    texts = harness.replies(GROUP_ID)[n_before:]
    assert len(texts) == len(bad)
    assert all(t.startswith(("⚠️", "用法")) for t in texts), texts
    assert all(len(t) < 300 for t in texts)
    assert await balances(harness) == before == {1: 10}
    assert await invariant_ok(harness)


async def test_anonymous_admin_is_operator_but_never_credited(
    harness: Harness, group: Chat
) -> None:
    anon = harness.member(group, person(1087968824, "Group", "GroupAnonymousBot"))
    alice = harness.member(group, person(1, "Alice", "alice"))
    await alice.send("hi")
    await anon.send("/give @alice 7", sender_chat=group)
    await anon.send("/points", sender_chat=group)
    await harness.settle()
    assert await balances(harness) == {1: 7}
    async with harness.db.transaction(readonly=True) as s:  # type: ignore[attr-defined]
        assert await repo.get_member(s, 1087968824) is None


async def test_every_reply_goes_through_sendmessage_with_html(
    harness: Harness, group: Chat
) -> None:
    alice = harness.member(group, person(1, "A&B", "alice"))
    await alice.send("/points")
    await harness.settle()
    [req] = harness.session.requests_of(SendMessage)
    assert req.parse_mode == "HTML" or harness.bot.default.parse_mode == "HTML"


async def test_ranks_and_top_are_per_pond_and_shop_wide_in_a_dm(
    harness: Harness, group: Chat
) -> None:
    other = group_chat(-1009000000003, "Pond B")
    for chat_id in (GROUP_ID, other.id):  # both groups are ponds of the shop
        harness.session.admins.setdefault(chat_id, []).append(admin(person(OPERATOR_ID, "Op")))
    alice = harness.member(group, person(1, "Alice", "alice"))  # pond A: 40
    bob = harness.member(other, person(2, "Bob", "bob"))  # pond B only: 100
    carol_a = harness.member(group, person(3, "Carol", "carol"))  # both ponds: 50
    carol_b = harness.member(other, person(3, "Carol", "carol"))
    dave = harness.member(group, person(4, "Dave", "dave"))  # was in pond A: 200
    for who in (alice, bob, carol_a, carol_b, dave):
        await who.send("hi")
    await dave.leave()
    async with harness.db.transaction() as s:  # type: ignore[attr-defined]
        for user_id, points in ((1, 40), (2, 100), (3, 50), (4, 200)):
            await ledger.award(s, user_id=user_id, amount=points, kind=LedgerKind.admin_adjust,
                               key=f"seed:{user_id}")
    carol_dm = harness.member(private_chat(carol_a.user), carol_a.user)
    for who in (carol_a, carol_b, carol_dm):
        await who.send("/points")
        await who.send("/top")
    await harness.settle()
    points_a, top_a = harness.replies(GROUP_ID)[-2:]
    points_b, top_b = harness.replies(other.id)[-2:]
    points_dm, top_dm = harness.replies(carol_a.user.id)[-2:]
    assert "#1" in points_a and "#2" in points_b and "#3" in points_dm  # the same 50 points
    assert "Carol" in top_a and "Alice" in top_a
    assert "Bob" not in top_a and "Dave" not in top_a  # only in B; left A
    assert "Bob" in top_b and "Carol" in top_b and "Alice" not in top_b
    assert all(n in top_dm for n in ("Dave", "Bob", "Carol", "Alice"))
    assert top_dm.index("Dave") < top_dm.index("Bob") < top_dm.index("Carol")


async def test_streak_leaderboard_is_per_pond(harness: Harness, group: Chat) -> None:
    other = group_chat(-1009000000004, "Pond B")
    harness.session.admins.setdefault(GROUP_ID, []).append(admin(person(OPERATOR_ID, "Op")))
    harness.session.admins[other.id] = [admin(person(OPERATOR_ID, "Op"))]
    await harness.member(group, person(1, "Alice", "alice")).send("签到")
    await harness.member(other, person(2, "Bob", "bob")).send("签到")
    a = harness.member(group, person(3, "Carol", "carol"))
    await a.send("/top streak")
    await harness.member(private_chat(a.user), a.user).send("/top streak")
    await harness.settle()
    in_a = harness.replies(GROUP_ID)[-1]
    in_dm = harness.replies(a.user.id)[-1]
    assert "Alice" in in_a and "Bob" not in in_a
    assert "Alice" in in_dm and "Bob" in in_dm
