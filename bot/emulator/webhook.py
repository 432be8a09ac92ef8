"""Webhook delivery as Telegram does it: once ``setWebhook`` has a url, every queued
update is POSTed there as JSON (with ``X-Telegram-Bot-Api-Secret-Token`` when a secret
was set), by up to ``max_connections`` requests at a time; an update stays queued and
is sent again, after a growing pause, until its answer is a 200. A 200 may carry a Bot
API call in its body (a multipart form with a ``method`` field): it is executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["Delivery", "WebhookSender"]

log = logging.getLogger(__name__)

JSON = dict[str, Any]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_MAX_CONNECTIONS = 40  # Telegram's default


@dataclass
class Delivery:
    """One POST of one update: when (emulator clock), its answer (0: no answer)."""

    update_id: int
    at: float
    status: int
    seconds: float


@dataclass
class WebhookSender:
    """The workers posting updates for one ``setWebhook``.

    ``take`` hands out the oldest queued update nobody is posting (None: none),
    ``done`` removes a delivered one, ``release`` puts one back for another try.
    ``wait`` blocks until the queue may have changed (or the timeout passes)."""

    url: str
    secret: str | None
    max_connections: int
    take: Callable[[], Any | None]
    done: Callable[[Any], None]
    release: Callable[[Any], None]
    wait: Callable[[float], Awaitable[None]]
    execute: Callable[[str, dict[str, Any]], Awaitable[Any]]
    clock: Callable[[], float]
    retry_first: float = 0.05
    retry_cap: float = 2.0
    request_timeout: float = 60.0
    deliveries: list[Delivery] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None
    _stopping: bool = False

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            connector=aiohttp.TCPConnector(limit=self.max_connections, force_close=False),
        )
        self._tasks = [
            asyncio.ensure_future(self._worker()) for _ in range(max(1, self.max_connections))
        ]

    async def stop(self) -> None:
        # The flag as well as the cancel: a wait_for that finishes as it is cancelled
        # swallows the cancellation.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _worker(self) -> None:
        while not self._stopping:
            queued = self.take()
            if queued is None:
                await self.wait(1.0)
                continue
            delivered = False
            try:
                delivered = await self._deliver(queued)
            finally:
                if delivered:
                    self.done(queued)
                else:
                    self.release(queued)

    async def _deliver(self, queued: Any) -> bool:
        """Post one update until it is answered 200 (False only when cancelled)."""
        delay = self.retry_first
        while not self._stopping:
            if await self._post_once(queued.update):
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_cap)
        return False

    async def _post_once(self, update: JSON) -> bool:
        assert self._session is not None
        headers = {SECRET_HEADER: self.secret} if self.secret else {}
        started = self.clock()
        status = 0
        body: tuple[str, dict[str, Any]] | None = None
        try:
            async with self._session.post(self.url, json=update, headers=headers) as resp:
                status = resp.status
                if status == 200:
                    body = await self._method_in(resp)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.debug("webhook: update %s not delivered: %s", update.get("update_id"), exc)
        self.deliveries.append(
            Delivery(int(update["update_id"]), started, status, self.clock() - started)
        )
        if status != 200:
            return False
        if body is not None:
            with contextlib.suppress(Exception):  # the bot sees nothing of its failure
                await self.execute(*body)
        return True

    @staticmethod
    async def _method_in(resp: aiohttp.ClientResponse) -> tuple[str, dict[str, Any]] | None:
        """A Bot API call answered in the webhook response, if any."""
        if not resp.content_type.startswith("multipart/"):
            await resp.read()
            return None
        reader = aiohttp.MultipartReader.from_response(resp)
        fields: dict[str, Any] = {}
        while True:
            part = await reader.next()
            if part is None:
                break
            if isinstance(part, aiohttp.BodyPartReader) and part.name:
                fields[part.name] = await part.text()
        method = fields.pop("method", None)
        return (str(method), fields) if method else None
