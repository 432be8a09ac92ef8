"""The scripted pond of `pondbot demo`, scene by scene.

Each feature adds one scene: an async function `(emu, cast) -> None` appended to
`SCENES`. A scene acts through the emulator as the pond's people would and waits for
the bot's answers, so the printed transcript reads as a real chat.

Scenes run on the loop's clock, which the demo makes virtual: their pauses, timeouts
and the closes they wait for cost no real time, and "now" is `emu.wall_clock()`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.emulator import Emulator


@dataclass(frozen=True)
class Cast:
    pond: int
    owner: int  # the shop's owner: creator of the group, so an operator
    alice: int
    bob: int
    mei: int
    pause: float

    async def say(
        self, emu: Emulator, chat_id: int, user_id: int, text: str, expect: str | None = None
    ) -> dict[str, Any] | None:
        """`user_id` writes `text`; with `expect`, wait for the bot's reply containing it."""
        emu.send_message(chat_id, user_id, text)
        reply = None
        if expect is not None:
            reply = await emu.wait_for_message(chat_id, said(expect), timeout=15)
        await asyncio.sleep(self.pause)
        return reply


Scene = Callable[[Emulator, Cast], Awaitable[None]]


def said(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: text in str(m.get("text") or m.get("caption") or "")


SHOP_OWNER = 1001  # in OPERATOR_IDS: the group they create is a pond of the shop


async def setup_pond(emu: Emulator, *, pause: float) -> Cast:
    cast = Cast(
        pond=-1001000000001, owner=SHOP_OWNER, alice=1002, bob=1003, mei=1004, pause=pause
    )
    emu.add_user(cast.owner, "老板娘", username="shop_owner", language_code="zh-hans")
    emu.add_user(cast.alice, "Alice", username="alice", language_code="zh-hans")
    emu.add_user(cast.bob, "阿强", username="bob_qiang", language_code="zh-hans")
    emu.add_user(cast.mei, "小美", username="xiaomei", language_code="zh-hans")
    emu.create_group(
        cast.pond, "小美的鱼塘 · 老客福利群", members=[cast.alice], admins=[cast.owner]
    )
    emu.add_bot_to_group(cast.pond, cast.owner, as_admin=True)
    await emu.wait_for_message(cast.pond, timeout=15, since=0)
    emu.join(cast.pond, cast.bob)
    emu.join(cast.pond, cast.mei)
    return cast


async def points_scene(emu: Emulator, c: Cast) -> None:
    await c.say(emu, c.alice, c.alice, "/start", "/points")
    await c.say(emu, c.pond, c.alice, "/help", "/top")
    await c.say(emu, c.pond, c.mei, "大家好！我是新来的～")
    await c.say(emu, c.pond, c.owner, "/give @alice 50 晒单奖励", "+50")
    await c.say(emu, c.pond, c.owner, "/give @xiaomei 30 新人见面礼", "+30")
    await c.say(emu, c.pond, c.bob, "/give @bob_qiang 1000", "⛔")
    await c.say(emu, c.pond, c.owner, "/take @alice 10 兑换小样", "−10")
    await c.say(emu, c.pond, c.owner, "/give @alice 很多", "⚠️")
    await c.say(emu, c.pond, c.alice, "/points", "40")
    await c.say(emu, c.pond, c.mei, "/birthday 03-08", "🎂")  # a birthday goes by DM
    await c.say(emu, c.alice, c.alice, "/birthday 11-05", "🎂")
    await c.say(emu, c.pond, c.bob, "/top", "🏆")


async def checkin_scene(emu: Emulator, c: Cast) -> None:
    """A check-in morning: the board, buttons and 签到, a double click, the streak board."""
    emu.send_message(c.pond, c.owner, "/board")
    board = await emu.wait_for_message(c.pond, lambda m: bool(m.get("reply_markup")), timeout=15)
    button = board["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    for who in (c.alice, c.bob):
        await emu.wait_callback_answer(
            emu.click(c.pond, who, board["message_id"], button), timeout=15
        )
        await asyncio.sleep(c.pause)
    await c.say(emu, c.pond, c.mei, "签到")
    await c.say(emu, c.pond, c.owner, "签到")
    again = emu.click(c.pond, c.alice, board["message_id"], button)  # a double click
    await emu.wait_callback_answer(again, timeout=15)
    await emu.wait_for_event(
        lambda e: e["kind"] == "edit" and e["chat_id"] == c.pond and "4" in str(e.get("text")),
        timeout=20,
    )
    await c.say(emu, c.pond, c.bob, "/top streak", "🔥")


async def games_scene(emu: Emulator, c: Cast) -> None:
    """Guess the price and a vote side by side (short rounds: the scene waits for both
    closes), then an invite link that brings a friend in. The pond has been busy, so the
    outbox paces the bot within the group's 20 messages a minute: waits are generous."""
    await c.say(emu, c.pond, c.owner, "/guessprice 89 12s 50 玫瑰精华小样礼盒")
    post = await emu.wait_for_message(c.pond, said("玫瑰精华小样礼盒"), timeout=60)
    await c.say(emu, c.pond, c.owner, "/vote 10s 下期上新选哪款？ | 玫瑰面霜 | 山茶花精华")
    vote = await emu.wait_for_message(c.pond, said("下期上新选哪款"), timeout=60)
    buttons = [b["callback_data"] for row in vote["reply_markup"]["inline_keyboard"] for b in row]
    for who, option in ((c.alice, 1), (c.bob, 0), (c.mei, 1), (c.bob, 1)):
        await emu.wait_callback_answer(
            emu.click(c.pond, who, vote["message_id"], buttons[option]), timeout=15
        )
        await asyncio.sleep(c.pause)
    await c.say(emu, c.pond, c.alice, "/guess 99")
    emu.send_message(c.pond, c.bob, "88", reply_to=post["message_id"])
    await asyncio.sleep(c.pause)
    await c.say(emu, c.pond, c.mei, "/guess ￥８５．５")
    await emu.wait_for_message(c.pond, said("📊"), timeout=60, since=0)
    await emu.wait_for_message(c.pond, said("¥89"), timeout=60, since=0)
    emu.send_message(c.pond, c.alice, "/invite")
    reply = await emu.wait_for_message(c.pond, said("t.me/+"), timeout=60)
    link = next(w for w in str(reply.get("text")).split() if w.startswith("https://t.me/+"))
    friend = 1005
    emu.add_user(friend, "小红", username="xiaohong", language_code="zh-hans")
    emu.join(c.pond, friend, invite_link=link)
    await asyncio.sleep(c.pause)
    emu.send_message(c.pond, friend, "签到")
    await asyncio.sleep(1.0)
    emu.send_message(c.pond, c.alice, "/invite")
    await emu.wait_for_message(c.pond, said("t.me/+"), timeout=60)


async def red_packet_scene(emu: Emulator, c: Cast) -> None:
    """The owner drops a lucky-draw packet; the crowd grabs (one taps twice); then a
    password packet (口令红包) grabbed by typing the password."""
    extra = [(1011, "小李", "xiaoli_fan"), (1012, "阿珍", "azhen_88")]
    for uid, name, username in extra:
        emu.add_user(uid, name, username=username, language_code="zh-hans")
        emu.join(c.pond, uid)
    emu.send_message(c.pond, c.owner, "/redpacket 100 5")
    packet = await emu.wait_for_message(
        c.pond, lambda m: bool(m.get("reply_markup")) and "🧧" in str(m.get("text")), timeout=15
    )
    data = packet["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    grabbers = [c.alice, c.bob, c.alice, c.mei, *(uid for uid, _, _ in extra)]
    for who in grabbers:
        await emu.wait_callback_answer(
            emu.click(c.pond, who, packet["message_id"], data), timeout=15
        )
        await asyncio.sleep(c.pause)

    def over(event: dict[str, Any]) -> bool:
        message = emu.messages_in(c.pond)
        return any(m["message_id"] == packet["message_id"] and "🏆" in str(m.get("text"))
                   for m in message)

    await emu.wait_for_event(over, timeout=60)
    emu.send_message(c.pond, c.owner, "/redpacket 20 2 pwd=老客福利")
    await emu.wait_for_message(c.pond, said("老客福利"), timeout=15)
    await c.say(emu, c.pond, c.mei, "老客福利")
    await c.say(emu, c.pond, c.bob, "老客福利")
    await asyncio.sleep(1.0)


async def promo_scene(emu: Emulator, c: Cast) -> None:
    """A sale five days out: the owner sets up the campaign, writes a post due in 5 s,
    previews it in private, confirms, and the post lands in the pond on time."""
    today = datetime.fromtimestamp(emu.wall_clock(), ZoneInfo("Asia/Shanghai")).date()
    sale = today + timedelta(days=5)
    await c.say(emu, c.pond, c.owner, f"/campaign 店庆 {sale:%m-%d}", "📅")
    await c.say(emu, c.owner, c.owner, "/start", "/points")  # previews go to a linked DM
    emu.send_message(
        c.pond,
        c.owner,
        "/promo at +5s {campaign}{phase}：距大促还有{days_left}天，今晚8点直播间见！\n"
        "[进店逛逛](https://shop.example.com/sale)",
    )
    control = await emu.wait_for_message(
        c.owner, lambda m: "pp:ok:" in str(m.get("reply_markup")), timeout=30
    )
    ok = control["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await emu.wait_callback_answer(
        emu.click(c.owner, c.owner, control["message_id"], ok), timeout=15
    )
    await emu.wait_for_message(
        c.pond,
        lambda m: "直播间" in str(m.get("text")) and "reply_to_message" not in m,
        timeout=60,
        since=0,
    )
    await c.say(emu, c.pond, c.owner, "/plan 200 5", "🧮")


async def shop_scene(emu: Emulator, c: Cast) -> None:
    """The owner records Alice's purchase (points and a tier), stocks the shop with a
    coupon and sets up the lottery; Alice redeems (the code arrives in her DM only),
    Bob has no private chat yet and gets his code once he says /start; members draw
    on the 🎰 board, answered by toasts."""
    await c.say(emu, c.pond, c.owner, "/order @alice 299.50 TB20261111001", "299")
    await c.say(emu, c.owner, c.owner, "/item add 20 10 满99减10券", "#")
    added = await emu.wait_for_message(c.owner, said("满99减10券"), timeout=15, since=0)
    found = re.search(r"#(\d+)", str(added.get("text")))
    assert found is not None, added
    item_id = found.group(1)
    await c.say(emu, c.owner, c.owner, "/prize add 3 - points=5 5积分", "5积分")
    await c.say(emu, c.owner, c.owner, f"/prize add 1 3 item={item_id} 满99减10券", "满99减10券")
    await c.say(emu, c.owner, c.owner, "/prize add 6 - none 谢谢参与", "谢谢参与")
    await c.say(emu, c.pond, c.alice, "/shop", "满99减10券")
    await c.say(emu, c.pond, c.alice, f"/redeem {item_id}")
    await emu.wait_for_message(c.alice, said("满99减10券"), timeout=30)
    await c.say(emu, c.pond, c.bob, f"/redeem {item_id}", "/start")
    await c.say(emu, c.bob, c.bob, "/start")
    await emu.wait_for_message(c.bob, said("满99减10券"), timeout=30)
    emu.send_message(c.pond, c.owner, "/lottery")
    board = await emu.wait_for_message(
        c.pond, lambda m: bool(m.get("reply_markup")) and "🎰" in str(m.get("reply_markup")),
        timeout=30,
    )
    button = board["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    for who in (c.alice, c.mei, c.bob):
        await emu.wait_callback_answer(
            emu.click(c.pond, who, board["message_id"], button), timeout=15
        )
        await asyncio.sleep(c.pause)
    await c.say(emu, c.alice, c.alice, "/mine", "满99减10券")


async def tools_scene(emu: Emulator, c: Cast) -> None:
    """The operators' tools: a setting changed, a vote opened by mistake and cancelled, a
    red-packet drop scheduled a few seconds out, the day's tasks, the pond's figures with
    a chart, the members' list sent to the owner's private chat, a survey into the
    profiles and the pond's segments. The pond has been
    busy: the bot keeps within 20 messages a minute there, so the waits are generous."""

    async def told(chat_id: int, user_id: int, text: str, expect: str) -> None:
        emu.send_message(chat_id, user_id, text)
        await emu.wait_for_message(chat_id, said(expect), timeout=90)
        await asyncio.sleep(c.pause)

    await told(c.pond, c.owner, "/settings guess_quiet_below=5", "guess_quiet_below")
    await told(c.pond, c.owner, "/vote 1d 测试投票（发错了） | 是 | 否", "测试投票")
    await told(c.pond, c.owner, "/vote cancel", "测试投票")
    emu.send_message(c.pond, c.owner, "/redpacket at +3s 30 3")
    await emu.wait_for_message(
        c.pond, lambda m: bool(m.get("reply_markup")) and "🧧" in str(m.get("text")), timeout=90
    )
    await told(c.pond, c.alice, "/tasks", "📋")
    emu.send_message(c.pond, c.owner, "/stats")
    await emu.wait_for_message(c.pond, lambda m: "photo" in m, timeout=90)
    emu.send_message(c.pond, c.owner, "/export members")
    await emu.wait_for_message(c.owner, lambda m: "document" in m, timeout=90)
    # A survey whose answers go to the members' profiles, and the pond's segments.
    emu.send_message(c.pond, c.owner, "/survey 1d 肤质 你的肤质？ | 干性 | 油性 | 混合性")
    survey = await emu.wait_for_message(c.pond, said("你的肤质"), timeout=90)
    buttons = [b["callback_data"] for row in survey["reply_markup"]["inline_keyboard"] for b in row]
    await emu.wait_callback_answer(
        emu.click(c.pond, c.alice, survey["message_id"], buttons[2]), timeout=15
    )
    emu.send_message(c.pond, c.owner, "/segments")
    await emu.wait_for_message(c.pond, lambda m: "photo" in m and "分层" in str(m), timeout=90)


SCENES: list[Scene] = [
    points_scene,
    checkin_scene,
    games_scene,
    red_packet_scene,
    promo_scene,
    shop_scene,
    tools_scene,
]
