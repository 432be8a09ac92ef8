"""A small round-robin HTTP load balancer in front of several webhook instances.

Each request goes to the next instance in turn; an instance that refuses the
connection (not started yet, or dead) is skipped for the next one and left out of the
turns for `DOWN_FOR` seconds (then tried again), so a request is only refused (502)
when no instance answers. A request an instance dropped half-way
(killed while handling it) is answered 502 and not sent elsewhere: like Telegram's
own, the sender resends it. ``hits`` counts what each instance answered.

Used by the tests of several instances and by ``bench/replicas.py``; in-process
(aiohttp), so the counts are at hand and no configuration file is written. In front
of real instances HAProxy or nginx does the same job (``option redispatch``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Sequence

import aiohttp
from aiohttp import web

__all__ = ["Balancer"]

# Hop-by-hop headers and those aiohttp sets itself are not forwarded.
_SKIPPED = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
DOWN_FOR = 1.0


class Balancer:
    """``async with Balancer(["http://127.0.0.1:8081", …]) as lb: lb.url``"""

    def __init__(self, backends: Sequence[str], host: str = "127.0.0.1", port: int = 0) -> None:
        self.backends = [b.rstrip("/") for b in backends]
        self.host = host
        self.port = port
        self.hits: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()  # refused connections, per instance
        self.dropped: Counter[str] = Counter()  # connections lost mid-request
        self.unavailable = 0  # requests no instance took
        self._turn = itertools.count()
        self._down: dict[str, float] = {}  # instance -> loop time it is tried again
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Balancer:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=120, connect=2),
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Balancer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _order(self) -> list[str]:
        """This request's instances to try: the live ones from the next in turn on,
        then those marked down."""
        now = asyncio.get_running_loop().time()
        live = [b for b in self.backends if self._down.get(b, 0.0) <= now]
        down = [b for b in self.backends if b not in live]
        if live:
            k = next(self._turn) % len(live)
            live = live[k:] + live[:k]
        return live + down

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIPPED}
        for backend in self._order():
            try:
                async with self._session.request(
                    request.method, backend + request.path_qs, data=body, headers=headers,
                    allow_redirects=False,
                ) as resp:
                    payload = await resp.read()
                    self.hits[backend] += 1
                    answer = web.Response(body=payload, status=resp.status)
                    if resp.content_type:
                        answer.headers["Content-Type"] = resp.headers.get(
                            "Content-Type", resp.content_type
                        )
                    return answer
            except aiohttp.ClientConnectorError:
                self.skipped[backend] += 1  # not listening: the next one
                self._down[backend] = asyncio.get_running_loop().time() + DOWN_FOR
                continue
            except (TimeoutError, aiohttp.ClientError):
                self.dropped[backend] += 1
                return web.Response(status=502, text="instance lost the request")
        self.unavailable += 1
        return web.Response(status=502, text="no instance available")
