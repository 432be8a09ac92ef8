"""Two real bot processes (`pondbot run --webhook`) behind a round-robin balancer, on one
PostgreSQL database and one Redis, with the emulator posting updates as Telegram does:
a grab storm split across both is exact; a broadcast from the leader while both answer
a crowd stays inside Telegram's limits; the leader killed during a scheduled broadcast
is replaced within 10 s and every pond gets one copy. The heavy versions (10,000 grabs,
five kills) are in bench/replicas.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import Emulator
from bot.emulator.limits import send_rates
from bot.emulator.server import Member
from tests.e2e.conftest import OPERATOR, OWNER, POND
from tests.rig.replicas import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CROWD = 150
SHARES = 40
FIRST = 70_000


def with_button(m: dict[str, Any]) -> bool:
    return bool(m.get("reply_markup")) and "🧧" in str(m.get("text") or "")


@pytest.fixture
async def cluster(
    emu: Emulator, pond: int, tmp_path: Path, pg_url: str, redis_url: str
) -> AsyncIterator[Cluster]:
    async with Cluster(emu, tmp_path, pg_url, redis_url, operator_ids=str(OPERATOR)) as c:
        try:
            yield c
        finally:
            logs = c.logs()
            assert emu.token not in logs and emu.token.split(":")[1] not in logs


async def test_a_grab_storm_split_across_two_instances_is_exact(
    emu: Emulator, cluster: Cluster
) -> None:
    emu.add_bot_to_group(POND, OWNER, as_admin=True)
    await emu.wait_for_message(POND, timeout=30, since=0)  # the welcome
    for i in range(CROWD):
        emu.add_user(FIRST + i, f"会员{i}", username=f"crowd_{i}")
    emu.send_message(POND, OPERATOR, f"/redpacket {SHARES * 25} {SHARES}")
    post = await emu.wait_for_message(POND, with_button, timeout=30)
    data = post["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    before = Counter(cluster.balancer.hits)

    queries = [emu.click(POND, FIRST + i, post["message_id"], data) for i in range(CROWD)]
    queries += [emu.click(POND, FIRST + 3, post["message_id"], data) for _ in range(4)]
    answers = [await emu.wait_callback_answer(q, timeout=60) for q in queries]
    assert all(a is not None for a in answers), cluster.logs()
    answered = Counter(e["query_id"] for e in emu.events if e["kind"] == "callback_answer")
    assert sorted(answered) == sorted(queries) and set(answered.values()) == {1}
    await cluster.idle()

    served = cluster.balancer.hits - before
    assert len(served) == 2 and min(served.values()) >= CROWD // 4, served  # both worked
    [(packet_id, total)] = await cluster.query("SELECT id, total FROM red_packet")
    grabs = await cluster.query(
        "SELECT user_id, delta FROM ledger_entry WHERE idem_key LIKE $1",
        f"rp:{packet_id}:grab:%",
    )
    assert len(grabs) == SHARES and len({u for u, _ in grabs}) == SHARES
    assert sum(d for _, d in grabs) == total == SHARES * 25
    assert all(FIRST <= u < FIRST + CROWD and d >= 1 for u, d in grabs)
    assert await cluster.invariant_ok()
    emu.assert_no_violations()


def posts_in(emu: Emulator, chat_id: int, text: str) -> list[dict[str, Any]]:
    """The bot's messages with `text` that are posts (previews are replies)."""
    return [
        m for m in emu.messages_in(chat_id)
        if m.get("from", {}).get("id") == emu.bot_id and m.get("text") == text
        and "reply_to_message" not in m
    ]


async def seed_ponds(cluster: Cluster, emu: Emulator, ids: list[int], members: int = 0) -> None:
    """Ponds the bot already serves (rows in its database, the bot a member there),
    each with `members` members of its own (user ids `chat_id * -1 % 10**6 * 10 + k`)."""
    emu.add_user(OPERATOR, "Operator", username="operator")
    for i, chat_id in enumerate(ids):
        people = [member_of(chat_id, k) for k in range(members)]
        for uid in people:
            emu.add_user(uid, f"会员{uid}")
        emu.create_group(chat_id, f"鱼塘 {i}", members=people)
        emu.chats[chat_id].members[emu.bot_id] = Member("member")
    for cid, title in [(cid, f"鱼塘 {i}") for i, cid in enumerate(ids)]:
        await cluster.query(
            "INSERT INTO pond (chat_id, title, chat_type, status, timezone, language, settings, "
            "trust, created_at, updated_at) VALUES ($1, $2, 'supergroup', 'active', "
            "'Asia/Shanghai', 'zh', '{}', 'approved', now(), now())", cid, title,
        )


def member_of(chat_id: int, k: int) -> int:
    return (-chat_id) % 10**6 * 10 + k


async def confirm_promo(emu: Emulator, text: str) -> int:
    """The operator schedules `text` in a few seconds in the private chat and confirms."""
    emu.send_message(OPERATOR, OPERATOR, text)
    control = await emu.wait_for_message(
        OPERATOR, lambda m: "pp:ok:" in str(m.get("reply_markup") or ""), timeout=30
    )
    data = control["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    answer = await emu.wait_callback_answer(
        emu.click(OPERATOR, OPERATOR, control["message_id"], data), timeout=30
    )
    assert answer is not None and "✅" in str(answer.get("text")), answer
    return int(data.rsplit(":", 1)[1])


BROADCAST_PONDS = 80
TALKERS = 40


async def test_a_broadcast_while_both_answer_a_crowd_stays_inside_the_limits(
    emu: Emulator, cluster: Cluster
) -> None:
    ids = [-1004000000000 - i for i in range(BROADCAST_PONDS)]
    await seed_ponds(cluster, emu, ids, members=1)
    text = "双十二 全场5折 🎉"
    await confirm_promo(emu, f"/promo at +5s {text}")
    before = Counter(cluster.balancer.hits)
    start = emu.clock()
    # While the leader broadcasts, members of half the ponds ask for their points: both
    # instances answer in the ponds, on the same shared budget.
    await asyncio.sleep(4.5)
    for chat_id in ids[:TALKERS]:
        emu.send_message(chat_id, member_of(chat_id, 0), "/points")
    report = await emu.wait_for_message(OPERATOR, lambda m: "📣" in str(m.get("text")),
                                        timeout=90)
    await cluster.idle()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while sum(1 for c in ids[:TALKERS] for m in emu.messages_in(c)
              if "reply_to_message" in m) < TALKERS:
        assert loop.time() < deadline, cluster.logs()
        await asyncio.sleep(0.2)

    copies = Counter(len(posts_in(emu, c, text)) for c in ids)
    assert copies == {1: BROADCAST_PONDS}, copies
    assert str(BROADCAST_PONDS) in report["text"]
    served = cluster.balancer.hits - before
    assert len(served) == 2, served
    sends = [s for s in emu.sends if s["at"] >= start]
    rates = send_rates(sends)
    print(f"\nbroadcast + crowd through 2 instances: {rates}; served {dict(served)}")
    assert rates["refused"] == 0, rates  # neither outran the limits shared in Redis
    assert rates["per_second"] <= 30 and rates["per_group_minute"] <= 20, rates
    assert emu.stats.flood_429 == 0
    emu.assert_no_violations()


FAILOVER_PONDS = 150


async def wait_leader(cluster: Cluster, within: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (leaders := await cluster.leaders()):
        assert loop.time() < deadline, "no leader:\n" + cluster.logs()
        await asyncio.sleep(0.05)
    assert len(leaders) == 1, [i.name for i in leaders]
    return leaders[0]


async def test_the_leader_killed_during_a_broadcast_is_replaced_and_no_pond_gets_two(
    emu: Emulator, cluster: Cluster
) -> None:
    ids = [-1005000000000 - i for i in range(FAILOVER_PONDS)]
    await seed_ponds(cluster, emu, ids)
    text = "年货节 满100减20 🧧"
    await confirm_promo(emu, f"/promo at +4s {text}")
    leader = await wait_leader(cluster, 10)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40
    while sum(len(posts_in(emu, c, text)) for c in ids) < 30:  # the broadcast is under way
        assert loop.time() < deadline, cluster.logs()
        await asyncio.sleep(0.02)
    leader.kill()
    killed_at = loop.time()
    successor = await wait_leader(cluster, 10)
    takeover = loop.time() - killed_at
    assert successor is not leader and takeover < 10, takeover

    report = await emu.wait_for_message(
        OPERATOR, lambda m: "📣" in str(m.get("text")), timeout=90, since=0
    )
    done = loop.time() - killed_at
    copies = {c: len(posts_in(emu, c, text)) for c in ids}
    print(f"\nleader {leader.name} killed mid-broadcast: {successor.name} leads after "
          f"{takeover:.1f} s, the broadcast finished {done:.1f} s after the kill; "
          f"copies per pond {Counter(copies.values())}")
    assert Counter(copies.values()) == {1: FAILOVER_PONDS}, Counter(copies.values())
    assert str(FAILOVER_PONDS) in report["text"]
    states = dict(await cluster.query(
        "SELECT state, COUNT(*) FROM broadcast_delivery GROUP BY state"))
    assert states == {"sent": FAILOVER_PONDS}, states
    assert emu.stats.flood_429 == 0
