"""A small round-robin HTTP load balancer in front of several webhook instances.

Each request goes to the next instance in turn; an instance that refuses the
connection (not started yet, or dead) is skipped for the next one, so a request is
only refused (502) when no instance answers. A request an instance dropped half-way
(killed while handling it) is answered 502 and not sent elsewhere: like Telegram's
own, the sender resends it. ``hits`` counts what each instance answered.

Used by the tests of several instances and by ``bench/replicas.py``; in-process
(aiohttp), so the counts are at hand and no configuration file is written. In front
of real instances HAProxy or nginx does the same job (``option redispatch``).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

import aiohttp
from aiohttp import web

__all__ = ["Balancer"]

# Hop-by-hop headers and those aiohttp sets itself are not forwarded.
_SKIPPED = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


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

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIPPED}
        first = next(self._turn)
        for i in range(len(self.backends)):
            backend = self.backends[(first + i) % len(self.backends)]
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
                continue
            except (TimeoutError, aiohttp.ClientError):
                self.dropped[backend] += 1
                return web.Response(status=502, text="instance lost the request")
        self.unavailable += 1
        return web.Response(status=502, text="no instance available")
