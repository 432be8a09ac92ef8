"""`pondbot demo --web`: the demo's pond played in a browser.

The emulator and the real bot start as in `pondbot demo` (long polling, a fresh SQLite
file, nothing from the network); instead of a script, a person plays: the page at
http://127.0.0.1:8088 shows the pond's chat and each person's private chat, lets one act
as any of them (type, press inline buttons), shows the bot's toasts and its edits in
place as they happen (server-sent events), a row of quick actions (a member joins, 300
members check in at once, the group becomes a supergroup, Telegram answers 429), and a
meter of what the bot sent to the pond in the last minute against the 20 a minute limit.
The bot also serves the members' page (F15) on a free local port: a `web_app` button
(`/me`) opens it in a new tab with initData signed for the chat's owner, as Telegram's
client would.

The page's API only drives the emulator's users; the bot sees nothing but Bot API
updates, exactly as in production.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bot.config import Settings
from bot.demo.scenes import SHOP_OWNER, Cast, setup_pond
from bot.emulator import Emulator
from games.webapp_auth import sign

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("web_static")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
GROUP_PER_MINUTE = 20  # Telegram's limit the meter shows
STORM = 300  # members in the "check in at once" action
_STORM_BASE = 3_000_000  # user ids of the storm's members
_JOINER_BASE = 2_000_000  # user ids of members who join through the page
SUPERGROUP_ID = -1001000000999  # the pond's id once upgraded


@dataclass
class Sandbox:
    emu: Emulator
    cast: Cast
    pond: int
    people: list[dict[str, Any]]
    joiners: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    stormed: bool = False

    def person(self, user_id: int) -> dict[str, Any] | None:
        return next((p for p in self.people if p["id"] == user_id), None)


SANDBOX = web.AppKey("sandbox", Sandbox)


def _message(m: dict[str, Any], open_page: Callable[[str], str]) -> dict[str, Any]:
    sender = m.get("from") or {}
    markup = (m.get("reply_markup") or {}).get("inline_keyboard") or []
    return {
        "message_id": m["message_id"],
        "from_id": sender.get("id"),
        "from_name": " ".join(
            x for x in (sender.get("first_name"), sender.get("last_name")) if x
        ) or sender.get("username") or "",
        "is_bot": bool(sender.get("is_bot")),
        "text": m.get("text") or m.get("caption") or _service(m),
        "edited": "edit_date" in m,
        "buttons": [
            [
                {
                    "text": b.get("text", ""),
                    "data": b.get("callback_data"),
                    "url": open_page(b["web_app"]["url"]) if b.get("web_app") else b.get("url"),
                }
                for b in row
            ]
            for row in markup
        ],
    }


def _service(m: dict[str, Any]) -> str:
    if m.get("new_chat_members"):
        return "➕ " + ", ".join(u.get("first_name", "") for u in m["new_chat_members"])
    if m.get("migrate_to_chat_id") or m.get("migrate_from_chat_id"):
        return "⬆️ supergroup"
    if m.get("photo"):
        return "🖼"
    return ""


def _static(name: str) -> web.Response:
    return web.Response(body=(STATIC / name).read_bytes(),
                        content_type=_TYPES[Path(name).suffix], charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def _index(_request: web.Request) -> web.Response:
    return _static("index.html")


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in {p.name for p in STATIC.iterdir() if p.suffix in _TYPES}:
        raise web.HTTPNotFound()
    return _static(name)


def _meter(sb: Sandbox) -> dict[str, Any]:
    """What the bot sent to the pond in the last minute, and how many of its requests
    there Telegram answered 429 (over the limits, or injected by the quick action)."""
    now, wall = sb.emu.clock(), sb.emu.wall_clock()
    sent = [s for s in sb.emu.sends if s["chat_id"] == sb.pond and now - s["at"] < 60]
    faults = [e for e in sb.emu.events[-2000:]
              if e["kind"] == "fault" and e["chat_id"] == sb.pond and wall - e["time"] < 60]
    return {"last_minute": len(sent), "limit": GROUP_PER_MINUTE,
            "refused": sum(1 for s in sent if not s["ok"]) + len(faults)}


async def _state(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    return web.json_response({
        "pond": sb.pond,
        "title": sb.emu.chats[sb.pond].title if sb.pond in sb.emu.chats else "",
        "people": sb.people,
        "seq": len(sb.emu.events),
        "meter": _meter(sb),
    })


async def _chat(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    try:
        chat_id = int(request.match_info["chat_id"])
    except ValueError:
        raise web.HTTPBadRequest() from None
    if chat_id not in sb.emu.chats:
        return web.json_response({"messages": []})
    messages = [
        _message(m, lambda url: _signed(sb, url, chat_id))
        for m in sb.emu.messages_in(chat_id)
    ][-80:]
    return web.json_response({"messages": messages})


def _signed(sb: Sandbox, url: str, chat_id: int) -> str:
    """A `web_app` button's page as a Telegram client opens it: the URL with the
    initData of the private chat's owner, signed with the bot's token (the sandbox plays
    Telegram's part)."""
    user = sb.emu.users.get(chat_id)
    if user is None:  # a web_app button outside a private chat: Telegram refuses those
        return url
    data = sign(
        {
            "query_id": f"sandbox{chat_id}",
            "user": json.dumps(user.to_dict(), ensure_ascii=False, separators=(",", ":")),
            "auth_date": str(int(time.time())),
        },
        sb.emu.token,
    )
    return f"{url}#tgWebAppData={quote(data, safe='')}&tgWebAppVersion=7.0"


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="JSON expected") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="JSON object expected")
    return body


def _who(sb: Sandbox, body: dict[str, Any]) -> tuple[int, int]:
    user_id, chat_id = body.get("user_id"), body.get("chat_id")
    if not isinstance(user_id, int) or sb.person(user_id) is None:
        raise web.HTTPBadRequest(text="unknown person")
    if chat_id not in (sb.pond, user_id):
        raise web.HTTPBadRequest(text="the pond or the person's own private chat")
    assert isinstance(chat_id, int)
    return chat_id, user_id


async def _send(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    body = await _body(request)
    chat_id, user_id = _who(sb, body)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > 4096:
        raise web.HTTPBadRequest(text="text: 1-4096 characters")
    sb.emu.send_message(chat_id, user_id, text)
    return web.json_response({"ok": True})


async def _click(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    body = await _body(request)
    chat_id, user_id = _who(sb, body)
    message_id, data = body.get("message_id"), body.get("data")
    if not isinstance(message_id, int) or not isinstance(data, str):
        raise web.HTTPBadRequest(text="message_id and data")
    query_id = sb.emu.click(chat_id, user_id, message_id, data)
    return web.json_response({"query_id": query_id})


async def _storm(sb: Sandbox) -> None:
    """`STORM` members join and then all type 签到 within a moment."""
    ids = [_STORM_BASE + i for i in range(STORM)]
    if not sb.stormed:
        for uid in ids:
            sb.emu.add_user(uid, f"鱼友{uid - _STORM_BASE + 1}", language_code="zh-hans")
            sb.emu.join(sb.pond, uid)
        sb.stormed = True
    for uid in ids:
        sb.emu.send_message(sb.pond, uid, "签到")


async def _action(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    name = request.match_info["name"]
    if name == "join":
        n = next(sb.joiners)
        uid = _JOINER_BASE + n
        sb.emu.add_user(uid, f"新朋友{n}", language_code="zh-hans")
        sb.emu.join(sb.pond, uid)
        sb.people.append({"id": uid, "name": f"新朋友{n}", "role": "member"})
    elif name == "storm":
        await _storm(sb)
    elif name == "supergroup":
        if sb.pond == SUPERGROUP_ID:
            raise web.HTTPConflict(text="already a supergroup")
        sb.emu.migrate_group(sb.pond, SUPERGROUP_ID)
        sb.pond = SUPERGROUP_ID
    elif name == "429":
        sb.emu.inject_fault("sendMessage", chat_id=sb.pond, kind="429", times=1, retry_after=5)
        sb.emu.inject_fault("editMessageText", chat_id=sb.pond, kind="429", times=1,
                            retry_after=5)
    else:
        raise web.HTTPNotFound()
    return web.json_response({"ok": True, "pond": sb.pond})


_EVENT_KEYS = ("seq", "kind", "actor", "chat_id", "message_id", "user_id", "user_name", "text",
               "show_alert", "new_chat_id")


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each emulator event as it happens (a chat to redraw, a toast)."""
    sb = request.app[SANDBOX]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
    })
    await response.prepare(request)
    seen = len(sb.emu.events)
    try:
        while True:
            events = sb.emu.events[seen:]
            seen += len(events)
            for event in events:
                data = {k: event.get(k) for k in _EVENT_KEYS if k in event}
                await response.write(f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode())
            meter = json.dumps({"kind": "meter", **_meter(sb)})
            await response.write(f"data: {meter}\n\n".encode())
            await asyncio.sleep(0.25)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


def sandbox_app(sb: Sandbox) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[SANDBOX] = sb
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name:[a-z0-9_.-]+}", _asset)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/chat/{chat_id}", _chat)
    app.router.add_get("/api/events", _events)
    app.router.add_post("/api/send", _send)
    app.router.add_post("/api/click", _click)
    app.router.add_post("/api/action/{name}", _action)
    return app


def _people(cast: Cast) -> list[dict[str, Any]]:
    return [
        {"id": cast.owner, "name": "老板娘", "role": "operator"},
        {"id": cast.alice, "name": "Alice", "role": "member"},
        {"id": cast.bob, "name": "阿强", "role": "member"},
        {"id": cast.mei, "name": "小美", "role": "member"},
    ]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def sandbox(host: str = "127.0.0.1", port: int = 8088
                  ) -> AsyncIterator[tuple[Sandbox, str]]:
    """The emulator, the real bot and the page's server, for as long as the context
    lasts; yields the sandbox and the page's address."""
    from bot.app import serve_polling

    with tempfile.TemporaryDirectory(prefix="pondbot-sandbox-") as tmp:
        async with Emulator() as emu:
            page_port = _free_port(host)  # the members' page (/me), served by the bot
            settings = Settings(
                bot_token=emu.token,
                database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'sandbox.db'}",
                telegram_api_base=emu.url,
                operator_ids=frozenset({SHOP_OWNER}),
                log_level="WARNING",
                webapp_url=f"http://{host}:{page_port}/app/",
                webapp_host=host,
                webapp_port=page_port,
            )
            stop = asyncio.Event()
            bot = asyncio.create_task(serve_polling(settings, stop))
            runner: web.AppRunner | None = None
            try:
                cast = await setup_pond(emu, pause=0)
                sb = Sandbox(emu, cast, cast.pond, _people(cast))
                runner = web.AppRunner(sandbox_app(sb), access_log=None,
                                       shutdown_timeout=0.5)
                await runner.setup()
                site = web.TCPSite(runner, host, port)
                await site.start()
                bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                yield sb, f"http://{host}:{bound}/"
            finally:
                if runner is not None:
                    await runner.cleanup()
                stop.set()
                await asyncio.wait_for(bot, timeout=30)


async def serve_sandbox(host: str = "127.0.0.1", port: int = 8088) -> None:
    """Serve until Ctrl+C or SIGTERM; then the bot, the emulator and the page stop and
    the sandbox's database is thrown away."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with sandbox(host, port) as (_sb, url):
        print(f"pondbot sandbox: open {url} (Ctrl+C to stop)", flush=True)
        await stop.wait()


def run_sandbox(port: int = 8088) -> int:
    from services.logs import setup_logging

    setup_logging("WARNING")
    with suppress(KeyboardInterrupt):
        asyncio.run(serve_sandbox(port=port))
    return 0
