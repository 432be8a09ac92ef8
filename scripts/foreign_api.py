"""Run the real bot against a Bot API emulator this project did not write.

    .venv/bin/python scripts/foreign_api.py [--keep]

The project's own emulator (bot/emulator/) shares the project's reading of the Bot API;
this checks the bot against another one: npm's `telegram-test-api` (installed here into
a cache folder with the machine's npm when missing). It implements only a few methods
and bends some rules, so a small shim sits between the bot and it, and says what it
changed:

- `getUpdates` there returns at once and ignores `offset`: the shim holds a long poll
  until an update comes or the timeout passes, and gives `callback_query` the
  `chat_instance` field the Bot API requires and that emulator leaves out;
- its `getMe` leaves out the required `is_bot` (aiogram refuses the answer; the bot
  logs it and retries every 30 s): the shim answers `getMe` itself;
- methods it lacks (`setMyCommands`, `getChatAdministrators`, `getChatMember`, …) are
  answered by the shim with what Telegram would answer for a small test pond whose
  owner is an operator; each is counted and listed at the end.

Then `pondbot migrate` and `pondbot run` start on a fresh SQLite file, and a member and
an operator talk to the bot through that emulator's client API: /start in the private
chat, /checkin in the pond, the board's button, /points, an operator's /give, a shop red
packet grabbed by two members (one pressing twice). Every step
checks what the bot answered; the script exits 1 at the first step that fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "telegram-test-api@4.2.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pondbot-foreign-api"
TOKEN = "666:foreign-api-test-token-0000"  # that emulator's getMe answers id 666
BOT_ID, OPERATOR, MEMBER = 666, 2999, 4242
POND = -1001234000001

SERVER_JS = """
const TelegramServer = require('telegram-test-api');
const server = new TelegramServer({port: Number(process.argv[2]), host: '127.0.0.1',
                                   storeTimeout: 600});
server.start().then(() => console.log('listening'));
process.on('SIGTERM', () => server.stop().then(() => process.exit(0)));
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install() -> Path:
    """The folder holding node_modules/telegram-test-api (installed once)."""
    if not (CACHE / "node_modules" / "telegram-test-api").is_dir():
        if shutil.which("npm") is None:
            raise SystemExit("npm is needed to install telegram-test-api")
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CACHE),
                        PACKAGE], check=True, stdout=subprocess.DEVNULL)
    (CACHE / "server.js").write_text(SERVER_JS)
    return CACHE


def user(uid: int, name: str) -> dict[str, Any]:
    return {"id": uid, "is_bot": False, "first_name": name, "username": f"{name.lower()}_{uid}"}


class Shim:
    """Between the bot and the foreign emulator (see the module docstring)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.filled: Counter[str] = Counter()  # methods the shim answered itself
        self.passed: Counter[str] = Counter()  # methods the emulator answered
        self.calls: list[tuple[str, dict[str, Any]]] = []  # every bot request, in order
        self.http: ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await self._body(request)
        self.calls.append((method, body))
        if method == "getUpdates":
            return web.json_response(await self._updates(body))
        local = self._local(method, body)
        if local is not None:
            self.filled[method] += 1
            return web.json_response({"ok": True, "result": local})
        self.passed[method] += 1
        assert self.http is not None
        async with self.http.post(f"{self.upstream}/bot{TOKEN}/{method}", json=body) as r:
            return web.json_response(await r.json(), status=r.status)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        out: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, str):
                try:
                    out[key] = json.loads(value)
                except ValueError:
                    out[key] = value
        return out

    async def _updates(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.http is not None
        deadline = time.monotonic() + float(body.get("timeout") or 0)
        while True:
            async with self.http.post(f"{self.upstream}/bot{TOKEN}/getUpdates", json={}) as r:
                data = await r.json()
            if data.get("result") or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        for update in data.get("result", []):
            query = update.get("callback_query")
            if query is not None and "chat_instance" not in query:
                query["chat_instance"] = "shim-1"
        return dict(data)

    @staticmethod
    def _local(method: str, body: dict[str, Any]) -> Any:
        bot = {"id": BOT_ID, "is_bot": True, "first_name": "Test First name",
               "username": "TestNameBot"}
        owner = {"status": "creator", "user": user(OPERATOR, "Operator"), "is_anonymous": False}
        me = {"status": "administrator", "user": bot, "can_be_edited": False,
              "is_anonymous": False, "can_manage_chat": True, "can_delete_messages": True,
              "can_manage_video_chats": False, "can_restrict_members": True,
              "can_promote_members": False, "can_change_info": False,
              "can_invite_users": True, "can_post_stories": False,
              "can_edit_stories": False, "can_delete_stories": False,
              "can_send_welcome_messages": False,
              "can_pin_messages": True}
        if method == "getMe":  # theirs leaves out `is_bot`, which the Bot API requires
            return {**bot, "can_join_groups": True, "can_read_all_group_messages": False,
                    "supports_inline_queries": False}
        if method in ("setMyCommands", "deleteMyCommands", "setChatMenuButton",
                      "pinChatMessage", "unpinChatMessage"):
            return True
        if method == "getChatAdministrators":
            return [owner, me]
        if method == "getChatMember":
            uid = int(body.get("user_id", 0))
            if uid == OPERATOR:
                return owner
            if uid == BOT_ID:
                return me
            return {"status": "member", "user": user(uid, f"U{uid}")}
        if method == "getChat":
            return {"id": int(body.get("chat_id", 0)), "type": "supergroup", "title": "Pond"}
        return None


def _words(text: str) -> list[tuple[int, str]]:
    """(offset, word) of each space-separated word."""
    out, at = [], 0
    for word in text.split(" "):
        if word:
            out.append((at, word))
        at += len(word) + 1
    return out


class Client:
    """A person talking to the bot through the foreign emulator's client API."""

    def __init__(self, http: ClientSession, url: str, person: dict[str, Any],
                 chat: dict[str, Any]) -> None:
        self.http, self.url, self.person, self.chat = http, url, person, chat
        self.next_id = int(time.time()) % 100000 * 10

    async def say(self, text: str) -> None:
        message: dict[str, Any] = {"botToken": TOKEN, "from": self.person, "chat": self.chat,
                                   "date": int(time.time()), "text": text}
        if text.startswith("/"):
            word = text.split()[0]
            message["entities"] = [{"offset": 0, "length": len(word), "type": "bot_command"}]
        mentions = [{"offset": i, "length": len(w), "type": "mention"}
                    for i, w in _words(text) if w.startswith("@") and len(w) > 1]
        message["entities"] = message.get("entities", []) + mentions  # as Telegram marks them
        async with self.http.post(f"{self.url}/sendMessage", json=message) as r:
            assert (await r.json())["ok"]

    async def press(self, message: dict[str, Any], data: str) -> None:
        post = {"message_id": message["message_id"], "date": int(time.time()),
                "chat": self.chat, "from": {"id": BOT_ID, "is_bot": True,
                                            "first_name": "Test First name"},
                "text": message.get("text", "")}
        query = {"botToken": TOKEN, "from": self.person, "message": post, "data": data}
        async with self.http.post(f"{self.url}/sendCallback", json=query) as r:
            assert (await r.json())["ok"]


async def bot_messages(http: ClientSession, url: str) -> list[dict[str, Any]]:
    async with http.post(f"{url}/getUpdatesHistory", json={"token": TOKEN}) as r:
        history = (await r.json())["result"]
    out = []
    for update in history:
        if "message" in update and "chat_id" in update["message"]:
            out.append({**update["message"], "message_id": update["messageId"]})
    return out


async def wait_for(http: ClientSession, url: str, chat_id: int, seen: int, contains: str,
                   step: str, within: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        mine = [m for m in await bot_messages(http, url) if int(m["chat_id"]) == chat_id]
        for m in mine[seen:]:
            if contains in str(m.get("text", "")):
                return m
        await asyncio.sleep(0.2)
    got = [m.get("text") for m in await bot_messages(http, url) if int(m["chat_id"]) == chat_id]
    raise StepFailed(f"{step}: no message containing {contains!r} in {chat_id}; got {got}")


class StepFailed(Exception):
    pass


async def pond_count(http: ClientSession, url: str) -> int:
    """How many messages the bot has sent to the pond so far."""
    return len([m for m in await bot_messages(http, url) if int(m["chat_id"]) == POND])


def callback_buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for row in (message.get("reply_markup") or {}).get("inline_keyboard", [])
            for b in row if b.get("callback_data")]


async def press_answered(shim: Shim, who: Client, message: dict[str, Any], data: str,
                         what: str) -> str:
    """`who` presses a button of `message`; the text the bot answered the press with."""
    def answers() -> list[dict[str, Any]]:
        return [b for m, b in shim.calls if m == "answerCallbackQuery"]

    before = len(answers())
    await who.press(message, data)
    deadline = time.monotonic() + 20
    while len(answers()) == before:
        if time.monotonic() > deadline:
            raise StepFailed(f"{what}: the press was never answered")
        await asyncio.sleep(0.2)
    return str(answers()[-1].get("text"))


async def run(keep: bool) -> int:
    folder = install()
    port, shim_port = free_port(), free_port()
    node = await asyncio.create_subprocess_exec(
        "node", "server.js", str(port), cwd=folder, stdout=asyncio.subprocess.PIPE
    )
    assert node.stdout is not None
    if (await node.stdout.readline()).strip() != b"listening":
        raise SystemExit("telegram-test-api did not start")
    upstream = f"http://127.0.0.1:{port}"
    http = ClientSession()
    shim = Shim(upstream)
    shim.http = http
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", shim.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", shim_port).start()
    work = Path(tempfile.mkdtemp(prefix="pondbot-foreign-"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BOT_", "DATABASE_", "TELEGRAM_", "REDIS_", "WEBHOOK_"))}
    env.update({"BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE": f"http://127.0.0.1:{shim_port}",
                "DATABASE_URL": f"sqlite+aiosqlite:///{work / 'pond.db'}",
                "OPERATOR_IDS": str(OPERATOR), "LOG_LEVEL": "INFO",
                "PYTHONPATH": str(ROOT)})
    log = (work / "bot.log").open("w")
    bot: asyncio.subprocess.Process | None = None
    try:
        migrate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "migrate", cwd=work, env=env,
            stdout=asyncio.subprocess.DEVNULL,
        )
        if await migrate.wait() != 0:
            raise StepFailed("pondbot migrate failed")
        bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=work, env=env, stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        await steps(http, upstream, shim)
        print("all steps passed")
        return 0
    except StepFailed as failed:
        print(f"FAILED: {failed}")
        print(f"bot log: {work / 'bot.log'}")
        keep = True
        return 1
    finally:
        if bot is not None and bot.returncode is None:
            bot.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(bot.wait(), 30)
            except TimeoutError:
                bot.kill()
                await bot.wait()
        log.close()
        await runner.cleanup()
        await http.close()
        node.terminate()
        await node.wait()
        print(f"methods the emulator answered: {dict(shim.passed)}")
        print(f"methods the shim answered (not in that emulator): {dict(shim.filled)}")
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


async def steps(http: ClientSession, url: str, shim: Shim) -> None:
    pond = {"id": POND, "type": "supergroup", "title": "Foreign pond"}
    member = user(MEMBER, "Mei")
    alone = Client(http, url, member, {"id": MEMBER, "type": "private", "first_name": "Mei"})
    in_pond = Client(http, url, member, pond)
    operator = Client(http, url, user(OPERATOR, "Operator"), pond)
    deadline = time.monotonic() + 60
    while not any(m == "getUpdates" for m, _ in shim.calls):
        if time.monotonic() > deadline:
            raise StepFailed("the bot never polled")
        await asyncio.sleep(0.1)
    print("bot polling: ", sorted({m for m, _ in shim.calls}))

    await alone.say("/start")
    await wait_for(http, url, MEMBER, 0, "", "/start in the private chat")
    print("/start in the private chat: answered")

    await in_pond.say("/checkin")
    done = await wait_for(http, url, POND, 0, "+5", "/checkin in the pond")
    print(f"/checkin in the pond: answered: {str(done.get('text'))[:60]!r}")
    board = await wait_for(http, url, POND, 0, "📅", "the check-in board")
    buttons = callback_buttons(board)
    before = await pond_count(http, url)
    await operator.say("/points")
    shown = await wait_for(http, url, POND, before, "", "/points of the operator")
    print(f"/points: answered: {str(shown.get('text'))[:60]!r}")
    if not buttons:
        raise StepFailed(f"the check-in board has no button: {board}")
    said = await press_answered(shim, operator, board, str(buttons[0]["callback_data"]),
                                "the board's button")
    print(f"button pressed: answered {said!r}")
    before = await pond_count(http, url)
    await operator.say(f"/give @{member['username']} 30 welcome")
    await wait_for(http, url, POND, before, "30", "/give by the operator")
    before = await pond_count(http, url)
    await in_pond.say("/points")
    points = await wait_for(http, url, POND, before, "", "/points of the member")
    text = str(points.get("text"))
    print(f"/points of the member after /give 30: {text[:80]!r}")
    if "<b>35</b>" not in text:  # 5 for the check-in, 30 given
        raise StepFailed(f"/points does not show 5 + 30 points: {text!r}")

    # A shop red packet of 20 points in 2 shares: two members grab, the shares add up.
    lin = Client(http, url, user(MEMBER + 1, "Lin"), pond)
    await lin.say("hello")  # seen in the pond first, as members are
    before = await pond_count(http, url)
    await operator.say("/redpacket 20 2")
    packet = await wait_for(http, url, POND, before, "🧧", "/redpacket by the operator")
    grab = callback_buttons(packet)
    if not grab:
        raise StepFailed(f"the red packet has no button: {packet}")
    got = [  # Mei presses twice: paid once
        await press_answered(shim, who, packet, str(grab[0]["callback_data"]), "the red packet")
        for who in (in_pond, lin, in_pond)
    ]
    print(f"red packet presses answered: {got}")
    amounts = [int("".join(ch for ch in t if ch.isdigit())) for t in got[:2] if "🎉" in t]
    if len(amounts) != 2 or sum(amounts) != 20 or "🎉" in got[2]:
        raise StepFailed(f"the shares do not add up to 20 or a second grab was paid: {got}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the bot's folder and log")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.keep))


if __name__ == "__main__":
    raise SystemExit(main())
