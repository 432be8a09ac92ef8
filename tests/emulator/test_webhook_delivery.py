"""Webhook delivery: updates POSTed to the url setWebhook gave, with the secret header,
retried until a 200, at most ``max_connections`` at a time; the send log's rates."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramConflictError
from aiohttp import MultipartWriter, web

from bot.emulator import Emulator, FakeClock
from bot.emulator.limits import max_in_window, send_rates
from tests.emulator.conftest import BOB, CAROL

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Hook:
    """A webhook endpoint on a free port whose answers a test decides."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, object], str | None]] = []
        self.answer: Handler = self._ok
        self.runner: web.AppRunner | None = None
        self.url = ""

    @staticmethod
    async def _ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append((body, request.headers.get("X-Telegram-Bot-Api-Secret-Token")))
        return await self.answer(request)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def update_ids(self) -> list[int]:
        return [int(body["update_id"]) for body, _ in self.received]  # type: ignore[call-overload]


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    endpoint = Hook()
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.stop()


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_updates_are_posted_with_the_secret_and_getupdates_conflicts(
    bot: Bot, emu: Emulator, pond: int, hook: Hook
) -> None:
    assert await bot.set_webhook(hook.url, secret_token="s3cret", max_connections=5)
    info = await bot.get_webhook_info()
    assert info.url == hook.url
    with pytest.raises(TelegramConflictError):
        await bot.get_updates(timeout=0)
    emu.send_message(pond, BOB, "签到")
    emu.send_message(pond, CAROL, "hello")
    await until(lambda: emu.pending_updates == 0 and len(hook.received) >= 3)
    texts = [body.get("message", {}).get("text") for body, _ in hook.received]  # type: ignore[attr-defined]
    assert {"签到", "hello"} <= set(texts)
    assert {secret for _, secret in hook.received} == {"s3cret"}
    assert len(set(hook.update_ids())) == len(hook.received)  # each once: all were 200
    assert all(d.status == 200 for d in emu.webhook_deliveries)
    assert (await bot.get_webhook_info()).pending_update_count == 0

    # Without a secret, no header; deleteWebhook brings long polling back.
    assert await bot.set_webhook(hook.url)
    emu.send_message(pond, BOB, "again")
    await until(lambda: emu.pending_updates == 0)
    assert hook.received[-1][1] is None
    assert await bot.delete_webhook()
    emu.send_message(pond, BOB, "polled")
    updates = await bot.get_updates(timeout=1)
    assert [u.message.text for u in updates if u.message] == ["polled"]
    assert hook.received[-1][0].get("message", {}).get("text") == "again"  # type: ignore[attr-defined]


async def test_an_update_is_retried_until_answered_200(
    bot: Bot, emu: Emulator, pond: int, hook: Hook
) -> None:
    answers = iter([500, 503, 401, 200])

    async def flaky(request: web.Request) -> web.StreamResponse:
        return web.Response(status=next(answers))

    await bot.set_webhook(hook.url, max_connections=1)
    await until(lambda: emu.pending_updates == 0)  # the bot's joining
    hook.answer = flaky
    emu.send_message(pond, BOB, "once")
    await until(lambda: emu.pending_updates == 0)
    assert [d.status for d in emu.webhook_deliveries][-4:] == [500, 503, 401, 200]
    assert Counter(hook.update_ids()).most_common(1)[0][1] == 4

    # Nobody listening (connection refused): kept and sent once the endpoint is back.
    port = int(hook.url.split(":")[2].split("/")[0])
    await hook.stop()
    emu.send_message(pond, CAROL, "while down")
    await until(lambda: sum(d.status == 0 for d in emu.webhook_deliveries) >= 2)
    assert emu.pending_updates == 1
    hook.answer = Hook._ok
    await hook.start(port)
    await until(lambda: emu.pending_updates == 0)
    assert hook.received[-1][0]["message"]["text"] == "while down"  # type: ignore[index]


async def test_at_most_max_connections_at_once(
    bot: Bot, emu: Emulator, pond: int, hook: Hook
) -> None:
    busy = peak = 0

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        await asyncio.sleep(0.05)
        busy -= 1
        return web.json_response({})

    hook.answer = slow
    await bot.set_webhook(hook.url, max_connections=3)
    await until(lambda: emu.pending_updates == 0)  # the bot's joining
    for i in range(12):
        emu.send_message(pond, BOB, f"m{i}")
    await until(lambda: emu.pending_updates == 0)
    assert peak == 3
    assert Counter(hook.update_ids()).most_common(1)[0][1] == 1


async def test_a_method_in_the_answer_is_executed(
    bot: Bot, emu: Emulator, pond: int, hook: Hook
) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        writer = MultipartWriter("form-data")
        for name, value in (("method", "sendMessage"), ("chat_id", str(pond)),
                            ("text", "answered in the webhook reply")):
            part = writer.append(value)
            part.set_content_disposition("form-data", name=name)
        return web.Response(body=writer)

    await bot.set_webhook(hook.url)
    await until(lambda: emu.pending_updates == 0)
    hook.answer = reply
    emu.send_message(pond, BOB, "hi")
    message = await emu.wait_for_message(pond, timeout=5)
    assert message["text"] == "answered in the webhook reply"


def read_log(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_the_send_log_measures_rates(
    bot: Bot, emu: Emulator, pond: int, clock: FakeClock, tmp_path: Path
) -> None:
    emu.send_log = str(tmp_path / "sends.jsonl")
    for i in range(5):
        await bot.send_message(pond, f"burst {i}")
    clock.advance(2.0)
    await bot.send_message(pond, "later")
    rates = emu.send_rates()
    assert rates["per_second"] == 5 and rates["per_chat_second"] == 5
    assert rates["per_group_minute"] == 6 and rates["busiest_group"] == pond
    assert rates["sent"] == 6 and rates["refused"] == 0
    logged = read_log(tmp_path / "sends.jsonl")
    assert logged == emu.sends
    assert send_rates(logged, chat_ids=[BOB])["sent"] == 0


def test_max_in_window_counts_like_the_limiter() -> None:
    assert max_in_window([], 1.0) == 0
    assert max_in_window([0.0, 0.5, 1.0, 1.4], 1.0) == 3  # (0.4, 1.4]: 0.5, 1.0, 1.4
    assert max_in_window([0.0, 60.0], 60.0) == 1
