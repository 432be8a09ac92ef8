"""`pondbot demo` on virtual time: every scene is played, in order, within the limits.

The demo's pond waits out vote and guess closes, a post due in seconds, a scheduled red
packet and a couple of minutes of sending paced within a group's 20 messages a minute;
on the virtual-time loop all of that passes at once, and the emulator checks its flood
limits on the same clock the bot paces on.
"""

from __future__ import annotations

import asyncio
import time

from bot.demo import play
from bot.demo.vtime import VirtualTimeLoop, run_virtual
from bot.emulator.limits import FloodRules
from services.clock import SystemClock

# One line the bot writes in each scene, in the order the scenes play.
SCENE_MARKS = [
    ("setup", "🐟 大家好，小美的鱼塘"),
    ("points", "⛔ 只有本群管理员可以这样做。"),
    ("points", "🏆"),
    ("checkin", "🔥 连签排行榜"),
    ("games: vote closed", "共 3 人投票，谢谢大家！"),
    ("games: guess closed", "🎉 价格揭晓！玫瑰精华小样礼盒：¥89"),
    ("games: invite", "已邀请进群：1 人"),
    ("red packet", "🏆 手气最佳"),
    ("password packet", "🔑 口令：老客福利"),
    ("promo: the post on time", "[小美的鱼塘 · 老客福利群] 🤖 bot: 店庆预热：距大促还有5天"),
    ("promo: plan", "🧮 目标测算"),
    ("shop: the code in a DM", "[DM 阿强] 🤖 bot: 🎁 你兑换的 满99减10券"),
    ("shop: lottery", "🎰 幸运抽奖"),
    ("shop: mine", "🧾 我的兑换"),
    ("tools: setting", "guess_quiet_below: 3 → 5"),
    ("tools: vote cancelled", "🚫 本投票已取消"),
    ("tools: scheduled packet", "⏰ 定时红包"),
    ("tools: tasks", "📋 今日任务 — Alice"),
    ("tools: stats chart", "[photo] 📊"),
    ("tools: export", "📄 members：7 行"),
    ("tools: survey", "📋 问卷：你的肤质？"),
    ("tools: segments", "[photo] 👥 本群 7 位会员的分层"),
]


def test_the_demo_plays_every_scene_in_order_within_the_limits() -> None:
    started = time.monotonic()
    played, loop = run_virtual(play)
    took = time.monotonic() - started
    text = played.transcript

    at = -1
    for scene, mark in SCENE_MARKS:
        found = text.find(mark, at + 1)
        assert found >= 0, f"{scene}: {mark!r} missing or out of order\n{text}"
        at = found
    assert played.violations == []

    # The limits held on the virtual clock: the emulator refused nothing, and no
    # window of what the bot sent holds more than Telegram allows.
    rules = FloodRules()
    assert played.flood_429 == 0
    assert played.rates["refused"] == 0
    assert played.rates["per_group_minute"] <= rules.group_per_minute
    assert played.rates["per_second"] <= rules.global_per_second
    # Pacing within 20 messages a minute took the pond minutes of its time, not ours.
    assert played.rates["per_group_minute"] >= rules.group_per_minute - 2
    assert played.elapsed > 100
    assert loop.jumps > 0
    assert took < played.elapsed / 2, (took, played.elapsed)


def test_virtual_time_jumps_only_when_nothing_is_left_to_do() -> None:
    """A long sleep passes at once; a thread at work (SQLite runs on threads) holds the
    clock until its result is back, so a timer never overtakes it. The bot's real clock
    reads the loop's time, so under this loop it is virtual too."""
    order: list[str] = []

    def work() -> None:
        time.sleep(0.2)  # real work on a worker thread
        order.append("thread done")

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def timer() -> None:
            await asyncio.sleep(5)
            order.append("timer")

        task = asyncio.create_task(timer())
        await asyncio.to_thread(work)
        order.append(f"after thread at {loop.time() - start:.0f}")
        await task
        await SystemClock().sleep(3600)
        assert SystemClock().monotonic() == loop.time()  # what the outbox paces on
        return loop.time() - start

    started = time.monotonic()
    elapsed, loop = run_virtual(main)
    assert order == ["thread done", "after thread at 0", "timer"]
    assert 3605 <= elapsed < 3606
    assert time.monotonic() - started < 5
    assert isinstance(loop, VirtualTimeLoop)
    assert loop.elapsed == elapsed
