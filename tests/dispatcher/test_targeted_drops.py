"""Red-packet drops `to=<segment>` (F6, F10) through the real Dispatcher: the packet
fires in the group saying whom it is for, and only the pond's members in that segment
when it fired may grab it — linked DM or not, by button or by typed password. Anyone
else is refused with a toast naming the segment and changes nothing (no share, no
ledger entry, the counter as it was); the segment's linked members are still told by DM;
an untargeted drop still pays anyone."""

from __future__ import annotations

from datetime import timedelta

from aiogram.methods import AnswerCallbackQuery
from aiogram.types import Chat, Message, User
from sqlalchemy import func, select

from storage.models import LedgerEntry, RedPacket
from tests.dispatcher.conftest import ADMIN_ID, GROUP_ID
from tests.dispatcher.test_promo import T0, Rig, group, rig  # noqa: F401 (fixtures)
from tests.dispatcher.test_segments import seed
from tests.rig.client import GroupClient, person
from tests.rig.fake_session import BOT_ID

GOLD_LINKED, GOLD_UNLINKED, KEY = 11, 12, 13
# user id -> (orders as days ago, yuan each, DM linked, last seen days ago): RFM as the
# pond's defaults read it
SHOP = {
    GOLD_LINKED: ([5, 40, 80], 150, True, 1),  # gold: recent, 3 orders, ¥450
    GOLD_UNLINKED: ([2, 30, 60], 200, False, 1),  # gold, never opened a chat with the bot
    KEY: ([10], 500, True, 1),  # key development: recent and ¥500, but one order
}


async def packets(pond: Rig) -> dict[str | None, RedPacket]:
    """The packets made so far, by segment (None: untargeted)."""
    async with pond.db.transaction(readonly=True) as s:
        rows = (await s.execute(select(RedPacket))).scalars().all()
    return {p.segment: p for p in rows}


async def packet(pond: Rig, packet_id: int | None) -> RedPacket:
    async with pond.db.transaction(readonly=True) as s:
        row = await s.get(RedPacket, packet_id)
    assert row is not None
    return row


async def red_packet_credits(pond: Rig, user_id: int) -> list[int]:
    async with pond.db.transaction(readonly=True) as s:
        rows = await s.execute(
            select(LedgerEntry.delta).where(
                LedgerEntry.user_id == user_id,  # type: ignore[arg-type]
                LedgerEntry.kind == "red_packet",  # type: ignore[arg-type]
            )
        )
        return list(rows.scalars())


async def shares_taken(pond: Rig) -> int:
    async with pond.db.transaction(readonly=True) as s:
        return int(await s.scalar(select(func.sum(RedPacket.taken))) or 0)


def post_text(pond: Rig, packet_id: int | None) -> str:
    """The packet's post in the group (the message with its grab button)."""
    for m in pond.sent(GROUP_ID):
        data = [b.callback_data for row in (m.reply_markup.inline_keyboard if m.reply_markup
                                            else []) for b in row]
        if f"rp:{packet_id}" in data:
            return str(m.text)
    raise AssertionError(f"packet {packet_id} was not posted")


async def press(pond: Rig, who: GroupClient, chat: Chat, red: RedPacket) -> str:
    """Press the packet's button on its post: the toast (answered exactly once)."""
    assert red.message_id is not None
    post = Message(message_id=red.message_id, date=pond.h.now, chat=chat,
                   from_user=User(id=BOT_ID, is_bot=True, first_name="PondBot"), text="🧧")
    qid = await who.click(post, f"rp:{red.id}")
    answers = [a for a in pond.session.requests_of(AnswerCallbackQuery)
               if a.callback_query_id == qid]
    assert len(answers) == 1, f"query {qid} answered {len(answers)} times"
    await pond.h.settle()
    return answers[0].text or ""


async def test_a_drop_to_gold_pays_only_gold_members_and_an_untargeted_one_anyone(
    rig: Rig, group: Chat  # noqa: F811
) -> None:
    await seed(rig.db, T0, SHOP)
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    said = await rig.say(boss, "/redpacket at +10m 30 3 equal to=gold")
    assert "only this pond's members in segment gold (重要价值) can grab" in said, said
    await rig.say(boss, "/redpacket at +10m 30 3 equal")  # the same time, for everyone
    await rig.tick(T0 + timedelta(minutes=10))
    await rig.tick(T0 + timedelta(minutes=11))
    made = await packets(rig)
    assert set(made) == {"gold", None}
    gold, everyone = made["gold"], made[None]
    assert "For our gold (重要价值) members only" in post_text(rig, gold.id)
    assert "members only" not in post_text(rig, everyone.id)

    key = rig.h.member(group, person(KEY, "Kay"))
    toast = await press(rig, key, group, gold)
    assert toast.startswith("🎯") and "重要价值" in toast, toast
    assert await red_packet_credits(rig, KEY) == []
    assert (await packet(rig, gold.id)).taken == 0
    assert await shares_taken(rig) == 0

    # A gold member who never opened a chat with the bot grabs all the same.
    unlinked = rig.h.member(group, person(GOLD_UNLINKED, "Goldie"))
    assert "🎉" in await press(rig, unlinked, group, gold)
    assert await red_packet_credits(rig, GOLD_UNLINKED) == [10]
    assert "🎯" in await press(rig, key, group, gold)  # still not theirs
    assert "🎉" in await press(rig, key, group, everyone)
    assert await red_packet_credits(rig, KEY) == [10]
    assert (await packet(rig, gold.id)).taken == 1

    # The segment's linked member was told by DM that the packet is theirs; nobody else.
    await rig.tick(T0 + timedelta(minutes=30))
    [dm] = rig.sent(GOLD_LINKED)
    assert f"#{gold.id}" in dm.text and "only for our gold (重要价值) members" in dm.text
    assert rig.sent(GOLD_UNLINKED) == [] and rig.sent(KEY) == []


async def test_a_typed_password_is_refused_outside_the_segment(
    rig: Rig, group: Chat  # noqa: F811
) -> None:
    await seed(rig.db, T0, SHOP)
    boss = rig.h.member(group, person(ADMIN_ID, "Admin"))
    await rig.say(boss, "/redpacket at +10m 20 2 equal pwd=芝麻开门 to=gold")
    await rig.tick(T0 + timedelta(minutes=10))
    await rig.tick(T0 + timedelta(minutes=11))
    gold = (await packets(rig))["gold"]
    key = rig.h.member(group, person(KEY, "Kay"))
    posted = len(rig.sent(GROUP_ID))
    await key.send("芝麻开门")
    await rig.h.settle()
    assert await red_packet_credits(rig, KEY) == []
    assert (await packet(rig, gold.id)).taken == 0
    assert len(rig.sent(GROUP_ID)) == posted  # no "grabbed" line in the group
    # Its button tells them whose packet it is, not to type a password they can't use.
    toast = await press(rig, key, group, gold)
    assert toast.startswith("🎯") and "芝麻开门" not in toast, toast
    member = rig.h.member(group, person(GOLD_LINKED, "Goldie"))
    await member.send("芝麻开门")
    await rig.h.settle()
    assert await red_packet_credits(rig, GOLD_LINKED) == [10]
    assert (await packet(rig, gold.id)).taken == 1
