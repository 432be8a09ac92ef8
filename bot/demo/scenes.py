"""The scripted pond of `pondbot demo`, scene by scene.

Each feature adds one scene: an async function `(emu, cast) -> None` appended to
`SCENES`. A scene acts through the emulator as the pond's people would and waits for
the bot's answers, so the printed transcript reads as a real chat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

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


async def setup_pond(emu: Emulator, *, pause: float) -> Cast:
    cast = Cast(pond=-1001000000001, owner=1001, alice=1002, bob=1003, mei=1004, pause=pause)
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
    await c.say(emu, c.pond, c.bob, "/top", "🏆")


SCENES: list[Scene] = [
    points_scene,
]
