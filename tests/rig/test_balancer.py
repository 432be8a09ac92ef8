"""The round-robin balancer of the multi-instance tests: turns, a dead instance skipped,
502 when none answers, the request passed on as it came."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web

from tests.rig.balancer import Balancer


async def backend(name: str) -> tuple[web.AppRunner, str]:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({
            "name": name, "path": request.path_qs, "body": body.decode(),
            "secret": request.headers.get("X-Telegram-Bot-Api-Secret-Token"),
        }, status=201 if request.path == "/created" else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nobody listens once closed


@pytest.fixture
async def pair() -> AsyncIterator[list[tuple[web.AppRunner, str]]]:
    backends = [await backend("a"), await backend("b")]
    try:
        yield backends
    finally:
        for runner, _ in backends:
            await runner.cleanup()


async def test_turns_skip_the_dead_and_pass_requests_on(
    pair: list[tuple[web.AppRunner, str]],
) -> None:
    (_, a), (_, b) = pair
    dead = dead_url()
    async with Balancer([a, dead, b]) as lb, ClientSession() as http:
        names = []
        for i in range(6):
            async with http.post(f"{lb.url}/hook?x={i}", data=b'{"update_id": 1}',
                                 headers={"X-Telegram-Bot-Api-Secret-Token": "s"}) as r:
                assert r.status == 200
                got = await r.json()
                assert got["path"] == f"/hook?x={i}" and got["body"] == '{"update_id": 1}'
                assert got["secret"] == "s"
                names.append(got["name"])
        assert sorted(names) == ["a", "a", "a", "b", "b", "b"]
        # Refused once, then left out of the turns for a while.
        assert lb.skipped[dead] == 1 and lb.hits[a] == lb.hits[b] == 3
        async with http.get(f"{lb.url}/created") as r:
            assert r.status == 201  # the instance's status, as it answered


async def test_no_instance_answers_502() -> None:
    async with Balancer([dead_url(), dead_url()]) as lb, ClientSession() as http:
        async with http.post(f"{lb.url}/hook", data=b"{}") as r:
            assert r.status == 502
        assert lb.unavailable == 1
