"""The sandbox's quick actions through its API: 300 members check in at once and the bot
stays within 20 messages a minute to the pond (the board is edited, coalesced); a 429
from Telegram is waited out and shows on the meter; bad requests are refused."""

from __future__ import annotations

import asyncio

import aiohttp

from bot.demo.web import GROUP_PER_MINUTE, STORM, sandbox


async def settled(sb: object, within: float = 60.0) -> None:
    emu = sb.emu  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while emu.pending_updates:
        assert loop.time() < deadline, f"{emu.pending_updates} updates pending"
        await asyncio.sleep(0.1)


async def test_a_storm_and_a_429_through_the_sandbox() -> None:
    async with sandbox(port=0) as (sb, url), aiohttp.ClientSession() as http:
        async with http.post(url + "api/action/storm", json={}) as r:
            assert r.status == 200
        await settled(sb)
        checked = [e for e in sb.emu.events
                   if e["kind"] == "user_message" and e.get("text") == "签到"]
        assert len(checked) == STORM
        async with http.get(url + "api/state") as r:
            meter = (await r.json())["meter"]
        assert 1 <= meter["last_minute"] <= GROUP_PER_MINUTE

        async with http.post(url + "api/action/429", json={}) as r:
            assert r.status == 200
        async with http.post(url + "api/send", json={
            "chat_id": sb.pond, "user_id": sb.cast.alice, "text": "/points"}) as r:
            assert r.status == 200
        await sb.emu.wait_for_message(sb.pond, timeout=30)  # after the 429's retry_after
        async with http.get(url + "api/state") as r:
            assert (await r.json())["meter"]["refused"] >= 1

        for body in ({"chat_id": sb.pond, "user_id": 42, "text": "hi"},
                     {"chat_id": -5, "user_id": sb.cast.alice, "text": "hi"},
                     {"chat_id": sb.pond, "user_id": sb.cast.alice, "text": " "}):
            async with http.post(url + "api/send", json=body) as r:
                assert r.status == 400
        async with http.post(url + "api/action/nothing", json={}) as r:
            assert r.status == 404
        assert sb.emu.violations == []
