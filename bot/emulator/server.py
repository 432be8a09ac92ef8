"""A local Telegram Bot API server with real state, spec validation and flood limits.

The bot talks to it exactly as to Telegram (``{base}/bot{token}/{method}``); tests and
``pondbot demo`` act as users through the methods of :class:`Emulator` or over the
JSON control API under ``/_emulator/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from bot.emulator.limits import FloodLimiter, FloodRules, send_rates
from bot.emulator.markup import ParseError, parse_entities, utf16_len
from bot.emulator.spec import ApiSpec, Upload, load_spec
from bot.emulator.transcript import buttons_of, render_transcript
from bot.emulator.webhook import DEFAULT_MAX_CONNECTIONS, Delivery, WebhookSender

__all__ = [
    "ANONYMOUS_ADMIN_ID",
    "DEFAULT_TOKEN",
    "ApiError",
    "Emulator",
    "EmulatorViolation",
    "Fault",
]

T = TypeVar("T")
JSON = dict[str, Any]

DEFAULT_TOKEN = "7000000001:AAEmulatorTokenForLocalPondbotRuns0000"
ANONYMOUS_ADMIN_ID = 1087968824
CHANNEL_BOT_ID = 136817688
TOKEN_RE = re.compile(r"(\d{1,20}):[A-Za-z0-9_-]{1,100}")
DEFAULT_UPDATES = frozenset(
    {
        "message", "edited_message", "channel_post", "edited_channel_post",
        "business_connection", "business_message", "edited_business_message",
        "deleted_business_messages", "inline_query", "chosen_inline_result",
        "callback_query", "shipping_query", "pre_checkout_query", "purchased_paid_media",
        "poll", "poll_answer", "my_chat_member", "chat_join_request", "chat_boost",
        "removed_chat_boost", "managed_bot", "guest_message",
    }
)
GROUP_TYPES = ("group", "supergroup")
ACTIVE_STATUSES = ("creator", "administrator", "member", "restricted")
ADMIN_RIGHTS = (
    "can_manage_chat", "can_delete_messages", "can_manage_video_chats",
    "can_restrict_members", "can_promote_members", "can_change_info", "can_invite_users",
    "can_post_stories", "can_edit_stories", "can_delete_stories", "can_pin_messages",
    "can_manage_topics", "can_send_welcome_messages",
)
# Bot API 10.3 (what aiogram 3.31 parses) requires this one beyond the 10.1 spec.
EXTRA_GIFT_TYPES = ("gifts_from_channels",)
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
_COMMAND_RE = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_MENTION_RE = re.compile(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{3,31}")


class ApiError(Exception):
    """An error answer of the Bot API."""

    def __init__(
        self, code: int, description: str, parameters: JSON | None = None, origin: str = "api"
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters
        # "api": the method's own answer; "flood": the flood limiter; "fault": injected.
        self.origin = origin

    def payload(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


class RawAnswer(Exception):
    """An answer that is not the Bot API's JSON: the HTML error page Telegram's front end
    serves during incidents, or a connection closed without any answer."""

    def __init__(self, status: int, body: str | None) -> None:
        super().__init__(f"{status} raw answer")
        self.status = status
        self.body = body  # None: close the connection without answering


HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
    "</body>\r\n</html>\r\n"
)


class EmulatorViolation(AssertionError):
    """The bot sent requests the Bot API spec does not allow."""


@dataclass
class Fault:
    method: str | None = None
    chat_id: int | None = None
    kind: str = "429"
    times: int = 1
    retry_after: int = 3
    migrate_to: int | None = None
    hang: float = 30.0


@dataclass
class User:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_bot: bool = False
    started: bool = False
    blocked: bool = False

    def to_dict(self) -> JSON:
        data: JSON = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        return data

    @property
    def display(self) -> str:
        return f"{self.first_name} {self.last_name or ''}".strip()


@dataclass
class Member:
    status: str
    rights: dict[str, bool] = field(default_factory=dict)


@dataclass
class Chat:
    id: int
    type: str
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    members: dict[int, Member] = field(default_factory=dict)
    messages: dict[int, JSON] = field(default_factory=dict)
    next_message_id: int = 1
    pinned: list[int] = field(default_factory=list)
    migrated_to: int | None = None
    invite_links: dict[str, JSON] = field(default_factory=dict)

    def to_dict(self) -> JSON:
        data: JSON = {"id": self.id, "type": self.type}
        for key in ("title", "username", "first_name", "last_name"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        return data

    @property
    def label(self) -> str:
        return self.title or f"DM {self.first_name or self.id}"


@dataclass
class CallbackRecord:
    query_id: str
    chat_id: int
    message_id: int
    user_id: int
    data: str
    forged: bool
    created: float
    answered: bool = False
    answer: JSON | None = None
    # Clock time of every answerCallbackQuery for this id that reached the method, the
    # refused ones (already answered, too old) included: a bot answers each query once.
    attempts: list[float] = field(default_factory=list)


@dataclass
class _Queued:
    update: JSON
    redeliver: bool = False
    posting: bool = False  # a webhook request with it is under way


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[int] = field(default_factory=Counter)
    retry_after_by_method: Counter[str] = field(default_factory=Counter)
    retry_after_by_chat: Counter[int] = field(default_factory=Counter)
    # 429s the flood limiter gave on its own (a bot that outruns Telegram's limits),
    # apart from injected faults, which are counted by kind and by method.
    flood_429_by_method: Counter[str] = field(default_factory=Counter)
    flood_429_by_chat: Counter[int] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    injected_by_method: Counter[str] = field(default_factory=Counter)

    @property
    def total_429(self) -> int:
        return sum(self.retry_after_by_method.values())

    @property
    def flood_429(self) -> int:
        return sum(self.flood_429_by_method.values())

    def to_dict(self) -> JSON:
        return {
            "requests": dict(self.requests),
            "errors": {str(k): v for k, v in self.errors.items()},
            "retry_after_by_method": dict(self.retry_after_by_method),
            "retry_after_by_chat": {str(k): v for k, v in self.retry_after_by_chat.items()},
            "total_429": self.total_429,
            "flood_429_by_method": dict(self.flood_429_by_method),
            "flood_429_by_chat": {str(k): v for k, v in self.flood_429_by_chat.items()},
            "flood_429": self.flood_429,
            "injected": dict(self.injected),
            "injected_by_method": dict(self.injected_by_method),
        }


def _is_message_method(name: str) -> bool:
    if name in ("sendChatAction", "sendMessageDraft"):
        return False
    return name.startswith(("send", "editMessage", "copyMessage", "forwardMessage")) or name in (
        "stopPoll",
        "stopMessageLiveLocation",
    )


class Emulator:
    """An in-process Bot API server. Use ``async with Emulator() as emu:``."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "pondbot_demo_bot",
        bot_first_name: str = "Pond Demo Bot",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        flood_limits: bool = True,
        flood_rules: FloodRules | None = None,
        privacy_mode: bool = False,
        callback_timeout: float = 15.0,
        spec: ApiSpec | None = None,
        send_log: str | None = None,
        webhook_retry_cap: float = 2.0,
    ) -> None:
        match = TOKEN_RE.fullmatch(token)
        if match is None:
            raise ValueError("token must look like 123456:ABC-DEF")
        self.token = token
        self.bot_id = int(match.group(1))
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.host = host
        self.port = port
        self.clock = clock
        self.wall_clock = wall_clock
        self.privacy_mode = privacy_mode
        self.callback_timeout = callback_timeout
        self.spec = spec or load_spec()
        self.limiter = FloodLimiter(clock, flood_rules or FloodRules(), enabled=flood_limits)

        self.users: dict[int, User] = {}
        self.chats: dict[int, Chat] = {}
        self.callback_queries: dict[str, CallbackRecord] = {}
        # Files users sent (documents): file_id -> (file_unique_id, file_path, content).
        self.files: dict[str, tuple[str, str, bytes]] = {}
        self.commands: dict[tuple[str, str], list[JSON]] = {}
        self.webhook: JSON = {}
        self.allowed_updates: frozenset[str] = DEFAULT_UPDATES
        self.faults: list[Fault] = []

        self.events: list[JSON] = []
        self.calls: list[JSON] = []
        self.errors: list[JSON] = []
        self.violations: list[JSON] = []
        self.warnings: list[str] = []
        self.stats = Stats()
        # Every message the bot tried to send (the methods the flood limits count), in
        # order: clock time, chat, whether the limits let it through. Appended as JSON
        # lines to ``send_log`` too when given. `send_rates()` measures it.
        self.sends: list[JSON] = []
        self.send_log = send_log
        # Every webhook POST: which update, when, the answer's status (0: none).
        self.webhook_deliveries: list[Delivery] = []
        self.webhook_retry_cap = webhook_retry_cap
        self._hook: WebhookSender | None = None
        self.updates: dict[int, JSON] = {}
        # Clock times: when an update was first handed to the bot in a getUpdates answer,
        # and when a later offset confirmed it (the bot is done with it).
        self.delivered_at: dict[int, float] = {}
        self.confirmed_at: dict[int, float] = {}

        self._queue: list[_Queued] = []
        self._next_update_id = 100_000_001
        self._query_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._poll_ids = itertools.count(1)
        self._polling = 0
        self._closing = False
        self._signal: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._handlers: dict[str, Callable[[JSON], Any]] = {
            "getMe": self._api_get_me,
            "getUpdates": self._api_get_updates,
            "deleteWebhook": self._api_delete_webhook,
            "setWebhook": self._api_set_webhook,
            "getWebhookInfo": self._api_get_webhook_info,
            "setMyCommands": self._api_set_my_commands,
            "getMyCommands": self._api_get_my_commands,
            "deleteMyCommands": self._api_delete_my_commands,
            "sendMessage": self._api_send_message,
            "sendPhoto": self._api_send_photo,
            "sendDocument": self._api_send_document,
            "getFile": self._api_get_file,
            "editMessageText": self._api_edit_message_text,
            "editMessageCaption": self._api_edit_message_caption,
            "editMessageReplyMarkup": self._api_edit_message_reply_markup,
            "deleteMessage": self._api_delete_message,
            "pinChatMessage": self._api_pin_chat_message,
            "unpinChatMessage": self._api_unpin_chat_message,
            "answerCallbackQuery": self._api_answer_callback_query,
            "getChat": self._api_get_chat,
            "getChatMember": self._api_get_chat_member,
            "getChatAdministrators": self._api_get_chat_administrators,
            "getChatMemberCount": self._api_get_chat_member_count,
            "createChatInviteLink": self._api_create_chat_invite_link,
            "sendPoll": self._api_send_poll,
            "stopPoll": self._api_stop_poll,
            "leaveChat": self._api_leave_chat,
            "close": lambda values: True,
            "logOut": lambda values: True,
        }

    # -- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def bot_user(self) -> JSON:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_route("GET", "/file/bot{token}/{path:.+}", self._handle_file)
        app.router.add_route("*", "/_emulator/{op}", self._handle_control)
        return app

    async def start(self) -> Emulator:
        self._closing = False
        self._runner = web.AppRunner(
            self.make_app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])
        return self

    async def stop(self) -> None:
        self._closing = True
        self._notify()
        await self._stop_webhook()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- waiting ------------------------------------------------------------------

    def _notify(self) -> None:
        if self._signal is not None:
            self._signal.set()
            self._signal = None

    async def _wait_until(self, check: Callable[[], T | None], timeout: float) -> T | None:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            if self._signal is None:
                self._signal = asyncio.Event()
            signal = self._signal
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), min(remaining, 1.0))

    # -- records ------------------------------------------------------------------

    def _event(self, kind: str, actor: str, chat: Chat | None = None, **data: Any) -> JSON:
        event: JSON = {
            "seq": len(self.events) + 1,
            "kind": kind,
            "actor": actor,
            "time": self.wall_clock(),
            "chat_id": chat.id if chat else None,
            "chat_title": chat.label if chat else None,
        }
        event.update(data)
        self.events.append(event)
        self._notify()
        return event

    @property
    def sent(self) -> list[JSON]:
        """What the bot did: messages, edits, deletions, pins, callback answers."""
        return [event for event in self.events if event["actor"] == "bot"]

    def transcript(self, chat_id: int | None = None) -> list[JSON]:
        return [e for e in self.events if chat_id is None or e["chat_id"] == chat_id]

    def render(self, chat_id: int | None = None) -> str:
        return render_transcript(self.transcript(chat_id))

    def messages_in(self, chat_id: int) -> list[JSON]:
        chat = self._chat(chat_id)
        return [copy.deepcopy(chat.messages[mid]) for mid in sorted(chat.messages)]

    def send_rates(self, chat_ids: Iterable[int] | None = None) -> JSON:
        """The busiest windows of what the bot sent (accepted or refused with a 429):
        overall per second, per chat per second, per group per minute."""
        return send_rates(self.sends, chat_ids)

    def _log_send(self, chat: Chat, method: str, ok: bool) -> None:
        entry = {"at": self.clock(), "time": self.wall_clock(), "chat_id": chat.id,
                 "group": chat.type in GROUP_TYPES, "method": method, "ok": ok}
        self.sends.append(entry)
        if self.send_log:
            with open(self.send_log, "a", encoding="utf-8") as out:
                out.write(json.dumps(entry) + "\n")

    def assert_no_violations(self) -> None:
        if self.violations:
            lines = [f"{v['method']}: {v['description']}" for v in self.violations]
            raise EmulatorViolation("Bot API spec violations:\n" + "\n".join(lines))

    def callback_answer(self, query_id: str) -> JSON | None:
        record = self.callback_queries.get(query_id)
        return None if record is None or record.answer is None else dict(record.answer)

    async def wait_callback_answer(self, query_id: str, timeout: float = 5.0) -> JSON | None:  # noqa: ASYNC109
        return await self._wait_until(lambda: self.callback_answer(query_id), timeout)

    def _last_user_seq(self, chat_id: int) -> int:
        for event in reversed(self.events):
            if event["chat_id"] == chat_id and event["actor"] == "user":
                return int(event["seq"])
        return 0

    async def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[JSON], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
        since: int | None = None,
    ) -> JSON:
        """The first bot message in ``chat_id`` after ``since`` (default: after the last
        thing a user did there) that satisfies ``predicate``; its current state."""
        start = self._last_user_seq(chat_id) if since is None else since

        def check() -> JSON | None:
            for event in self.events[start:]:
                if event["kind"] != "bot_message" or event["chat_id"] != chat_id:
                    continue
                message = self._chat(chat_id).messages.get(event["message_id"])
                if message is not None and (predicate is None or predicate(message)):
                    return copy.deepcopy(message)
            return None

        found = await self._wait_until(check, timeout)
        if found is None:
            raise TimeoutError(f"no matching bot message in chat {chat_id} within {timeout}s")
        return found

    async def wait_for_event(
        self, predicate: Callable[[JSON], bool], timeout: float = 5.0, since: int = 0  # noqa: ASYNC109
    ) -> JSON:
        def check() -> JSON | None:
            return next((e for e in self.events[since:] if predicate(e)), None)

        found = await self._wait_until(check, timeout)
        if found is None:
            raise TimeoutError(f"no matching event within {timeout}s")
        return found

    # -- updates ------------------------------------------------------------------

    def _emit(self, kind: str, payload: JSON, chat: Chat | None = None) -> JSON | None:
        """Create an update of ``kind`` if Telegram would send it to the bot now."""
        if kind not in self.allowed_updates:
            return None
        if kind == "chat_member" and (chat is None or not self._bot_is_admin(chat)):
            return None
        update_id = self._next_update_id
        update: JSON = {"update_id": update_id, kind: payload}
        self._next_update_id += 1
        self.updates[update_id] = update
        self._queue.append(_Queued(update))
        self._notify()
        return update

    def inject_update(self, raw: Mapping[str, Any]) -> JSON:
        """Queue a raw update as is (an ``update_id`` is assigned if missing)."""
        update = copy.deepcopy(dict(raw))
        if "update_id" not in update:
            update["update_id"] = self._next_update_id
        self._next_update_id = max(self._next_update_id, int(update["update_id"]) + 1)
        self.updates[int(update["update_id"])] = update
        self._queue.append(_Queued(update))
        self._notify()
        return update

    @property
    def polling(self) -> bool:
        """True while a getUpdates request is waiting for updates."""
        return self._polling > 0

    @property
    def pending_updates(self) -> int:
        """Updates queued for the bot and not yet confirmed by a later offset."""
        return len(self._queue)

    async def drained(self, within: float) -> None:
        """Until the bot has confirmed every queued update (by polling on past it, or by
        answering its webhook request 200): it has handled them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._queue:
            if loop.time() > deadline:
                raise TimeoutError(f"{self.pending_updates} updates still pending")
            await asyncio.sleep(0.05)

    @property
    def oldest_pending_update(self) -> int | None:
        """The smallest update id not yet confirmed (None: all confirmed): every update
        below it was handled by the bot, as far as Telegram can tell."""
        return min((int(q.update["update_id"]) for q in self._queue), default=None)

    def replay(self, update_ids: Iterable[int]) -> list[JSON]:
        """Deliver the same updates again with the same ids (as on redelivery)."""
        replayed = []
        for update_id in update_ids:
            update = self.updates[int(update_id)]
            self._queue.append(_Queued(copy.deepcopy(update), redeliver=True))
            replayed.append(update)
        self._notify()
        return replayed

    def _confirm(self, offset: int) -> None:
        keep: list[_Queued] = []
        gone: list[_Queued] = []
        if offset < 0:
            keep, gone = self._queue[offset:], self._queue[: len(self._queue) + offset]
        else:
            for queued in self._queue:
                held = queued.update["update_id"] >= offset or queued.redeliver
                (keep if held else gone).append(queued)
        now = self.clock()
        for queued in gone:
            self.confirmed_at.setdefault(int(queued.update["update_id"]), now)
        self._queue = keep

    def _take_pending(self, limit: int) -> list[JSON] | None:
        if self._closing:
            return []
        if not self._queue:
            return None
        batch = self._queue[:limit]
        now = self.clock()
        for queued in batch:
            queued.redeliver = False
            self.delivered_at.setdefault(int(queued.update["update_id"]), now)
        return [copy.deepcopy(q.update) for q in batch]

    # -- the HTTP surface ---------------------------------------------------------

    async def _read_params(
        self, request: web.Request, method: str
    ) -> tuple[dict[str, Any], dict[str, Upload]]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, Upload] = {}
        if request.method != "POST" or not request.body_exists:
            return params, files
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                for key, value in body.items():
                    params[key] = value if isinstance(value, str) else json.dumps(value)
            return params, files
        known = self.spec.fields_of(method)
        post = await request.post()
        for key, value in post.items():
            if isinstance(value, web.FileField):
                content = value.file.read()
                upload = Upload(value.filename, len(content), value.content_type, content)
                files[key] = upload
                if key in known:
                    params[key] = upload
            else:
                params[key] = str(value)
        return params, files

    @staticmethod
    def _json(payload: Any, status: int = 200) -> web.Response:
        return web.Response(
            text=json.dumps(payload, ensure_ascii=False),
            status=status,
            content_type="application/json",
        )

    async def _handle_api(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if token != self.token:
            return self._json(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, 401
            )
        method = self.spec.canonical_method(request.match_info["method"])
        if method is None:
            return self._json({"ok": False, "error_code": 404, "description": "Not Found"}, 404)
        params, files = await self._read_params(request, method)
        self.stats.requests[method] += 1
        try:
            result = await self._call(method, params, files)
        except ApiError as error:
            self._record_error(method, params, error)
            return self._json(error.payload(), error.code)
        except RawAnswer as raw:
            self.stats.errors[raw.status] += 1
            self.calls.append({"method": method, "params": self._printable(params),
                               "ok": False, "error_code": raw.status, "raw": True,
                               "at": self.clock()})
            if raw.body is None:
                if request.transport is not None:
                    request.transport.close()
                raise web.HTTPInternalServerError() from None  # never written: closed
            return web.Response(text=raw.body, status=raw.status, content_type="text/html")
        self.calls.append({"method": method, "params": self._printable(params), "ok": True,
                           "at": self.clock()})
        return self._json({"ok": True, "result": result})

    async def _handle_file(self, request: web.Request) -> web.Response:
        """A file download (`https://api.telegram.org/file/bot<token>/<file_path>`)."""
        if request.match_info["token"] != self.token:
            return self._json({"ok": False, "error_code": 401, "description": "Unauthorized"},
                              401)
        path = request.match_info["path"]
        for _unique, file_path, content in self.files.values():
            if file_path == path:
                self.calls.append({"method": "file", "params": {"path": path}, "ok": True,
                                   "at": self.clock()})
                return web.Response(body=content, content_type="application/octet-stream")
        return self._json({"ok": False, "error_code": 404, "description": "Not Found"}, 404)

    @staticmethod
    def _printable(params: Mapping[str, Any]) -> JSON:
        return {
            k: (f"<upload {v.filename} {v.size}B>" if isinstance(v, Upload) else v)
            for k, v in params.items()
        }

    def _record_error(self, method: str, params: Mapping[str, Any], error: ApiError) -> None:
        chat_id = self._raw_chat_id(params)
        self.stats.errors[error.code] += 1
        if error.code == 429:
            self.stats.retry_after_by_method[method] += 1
            if chat_id is not None:
                self.stats.retry_after_by_chat[chat_id] += 1
            if error.origin == "flood":
                self.stats.flood_429_by_method[method] += 1
                if chat_id is not None:
                    self.stats.flood_429_by_chat[chat_id] += 1
        record = {
            "method": method,
            "error_code": error.code,
            "description": error.description,
            "chat_id": chat_id,
            "origin": error.origin,
            "at": self.clock(),
            "params": self._printable(params),
        }
        self.errors.append(record)
        self.calls.append({**record, "ok": False})

    @staticmethod
    def _raw_chat_id(params: Mapping[str, Any]) -> int | None:
        raw = params.get("chat_id")
        if isinstance(raw, str) and re.fullmatch(r"-?\d{1,19}", raw.strip()):
            return int(raw)
        return None

    def _take_fault(self, method: str, chat_id: int | None) -> Fault | None:
        for fault in self.faults:
            if fault.method is None and method == "getUpdates":
                continue
            if fault.method is not None and fault.method.lower() != method.lower():
                continue
            if fault.chat_id is not None and fault.chat_id != chat_id:
                continue
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
            return fault
        return None

    async def _apply_fault(self, fault: Fault, chat_id: int | None) -> None:
        try:
            await self._raise_fault(fault, chat_id)
        except ApiError as error:
            error.origin = "fault"
            raise

    async def _raise_fault(self, fault: Fault, chat_id: int | None) -> None:
        chat = self.chats.get(chat_id) if chat_id is not None else None
        if fault.kind == "429":
            n = max(1, int(fault.retry_after))
            raise ApiError(429, f"Too Many Requests: retry after {n}", {"retry_after": n})
        if fault.kind == "403":
            if chat is not None and chat.type == "private":
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            raise ApiError(403, "Forbidden: bot was kicked from the group chat")
        if fault.kind == "500":
            raise ApiError(500, "Internal Server Error")
        if fault.kind == "502":
            raise ApiError(502, "Bad Gateway")
        if fault.kind == "migrate":
            if chat_id is None:
                raise ApiError(400, "Bad Request: chat not found")
            new_id = fault.migrate_to or int(f"-100{abs(chat_id)}")
            if chat is not None and chat.migrated_to is None:
                self.migrate_group(chat_id, new_id)
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": chat.migrated_to if chat and chat.migrated_to else new_id},
            )
        if fault.kind == "timeout":
            await asyncio.sleep(fault.hang)
            raise ApiError(504, "Gateway Timeout")
        if fault.kind == "html502":
            raise RawAnswer(502, HTML_502)
        if fault.kind == "reset":
            raise RawAnswer(0, None)
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    async def _call(
        self, method: str, params: dict[str, Any], files: dict[str, Upload]
    ) -> Any:
        raw_chat_id = self._raw_chat_id(params)
        fault = self._take_fault(method, raw_chat_id)
        if fault is not None:
            self.stats.injected[fault.kind] += 1
            self.stats.injected_by_method[method] += 1
            self._event("fault", "system", self.chats.get(raw_chat_id or 0),
                        method=method, description=f"injected {fault.kind}")
            await self._apply_fault(fault, raw_chat_id)
        validation = self.spec.validate_method(method, params, files)
        for warning in validation.warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)
        if not validation.ok:
            self._violation(method, validation.violations[0], params, validation.violations)
        values = validation.values
        flood_chat: Chat | None = None
        if _is_message_method(method) and "chat_id" in values:
            flood_chat = self._find_chat(values["chat_id"])
            if flood_chat is not None:
                is_group = flood_chat.type in GROUP_TYPES
                wait = self.limiter.check(flood_chat.id, is_group)
                if wait is not None:
                    self._log_send(flood_chat, method, ok=False)
                    raise ApiError(
                        429, f"Too Many Requests: retry after {wait}", {"retry_after": wait},
                        origin="flood",
                    )
        handler = self._handlers.get(method, self._api_generic)
        values["__method__"] = method
        result = handler(values)
        if isinstance(result, Awaitable):
            result = await result
        if flood_chat is not None:
            self.limiter.record(flood_chat.id, flood_chat.type in GROUP_TYPES)
            self._log_send(flood_chat, method, ok=True)
        return result

    def _violation(
        self,
        method: str,
        description: str,
        params: Mapping[str, Any],
        all_errors: list[str] | None = None,
    ) -> None:
        self.violations.append(
            {
                "method": method,
                "description": description,
                "all": all_errors or [description],
                "params": self._printable(params),
            }
        )
        raise ApiError(400, description)

    # -- state helpers ------------------------------------------------------------

    def _chat(self, chat_id: int) -> Chat:
        chat = self.chats.get(int(chat_id))
        if chat is None:
            raise KeyError(f"unknown chat {chat_id}")
        return chat

    def _find_chat(self, ref: Any) -> Chat | None:
        if isinstance(ref, int):
            chat = self.chats.get(ref)
            if chat is None and ref in self.users:
                chat = self._private_chat(ref)
            return chat
        if isinstance(ref, str) and ref.startswith("@"):
            name = ref[1:].lower()
            return next(
                (c for c in self.chats.values() if (c.username or "").lower() == name), None
            )
        return None

    def _api_chat(self, ref: Any) -> Chat:
        chat = self._find_chat(ref)
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        return chat

    def _ensure_user(self, user_id: int) -> User:
        user = self.users.get(user_id)
        if user is None:
            user = self.users[user_id] = User(user_id, f"User{user_id}")
        return user

    def _private_chat(self, user_id: int) -> Chat:
        chat = self.chats.get(user_id)
        if chat is None:
            user = self._ensure_user(user_id)
            chat = Chat(
                user_id,
                "private",
                username=user.username,
                first_name=user.first_name,
                last_name=user.last_name,
            )
            self.chats[user_id] = chat
        return chat

    def _bot_member(self, chat: Chat) -> Member:
        return chat.members.get(self.bot_id, Member("left"))

    def _bot_is_admin(self, chat: Chat) -> bool:
        return self._bot_member(chat).status in ("administrator", "creator")

    def _bot_can(self, chat: Chat, right: str) -> bool:
        if chat.type == "private":
            return True
        member = self._bot_member(chat)
        return member.status == "creator" or (
            member.status == "administrator" and member.rights.get(right, False)
        )

    def _check_access(self, chat: Chat) -> None:
        """The errors Telegram gives when the bot may not act in ``chat``."""
        if chat.migrated_to is not None:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": chat.migrated_to},
            )
        if chat.type == "private":
            user = self._ensure_user(chat.id)
            if user.blocked:
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            if not user.started:
                raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
            return
        if chat.type == "channel":
            return
        status = self._bot_member(chat).status
        kind = "supergroup chat" if chat.type == "supergroup" else "group chat"
        if status == "kicked":
            raise ApiError(403, f"Forbidden: bot was kicked from the {kind}")
        if status not in ACTIVE_STATUSES:
            raise ApiError(403, f"Forbidden: bot is not a member of the {kind}")

    def _member_dict(self, chat: Chat, user_id: int) -> JSON:
        user = self.bot_user if user_id == self.bot_id else self._ensure_user(user_id).to_dict()
        member = chat.members.get(user_id, Member("left"))
        data: JSON = {"status": member.status, "user": user}
        if member.status == "creator":
            data["is_anonymous"] = False
        elif member.status == "administrator":
            data.update(
                {
                    "can_be_edited": False,
                    "is_anonymous": False,
                    **{right: member.rights.get(right, False) for right in ADMIN_RIGHTS},
                }
            )
        elif member.status == "kicked":
            data["until_date"] = 0
        return data

    def _new_message(self, chat: Chat, sender: JSON, **content: Any) -> JSON:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        message: JSON = {
            "message_id": message_id,
            "from": sender,
            "chat": chat.to_dict(),
            "date": int(self.wall_clock()),
        }
        message.update({k: v for k, v in content.items() if v is not None and v != []})
        chat.messages[message_id] = message
        return message

    def _reply_target(self, chat: Chat, values: JSON) -> JSON | None:
        params = values.get("reply_parameters")
        message_id: int | None = None
        allow_missing = False
        if isinstance(params, dict):
            message_id = params.get("message_id")
            allow_missing = bool(params.get("allow_sending_without_reply"))
        elif isinstance(values.get("reply_to_message_id"), str):
            message_id = int(values["reply_to_message_id"])
        if message_id is None:
            return None
        target = chat.messages.get(int(message_id))
        if target is None:
            if allow_missing:
                return None
            raise ApiError(400, "Bad Request: message to be replied not found")
        reply = copy.deepcopy(target)
        reply.pop("reply_to_message", None)
        return reply

    @staticmethod
    def _format(values: JSON, text_key: str, mode_key: str, entities_key: str) -> tuple[
        str, list[JSON]
    ]:
        text = str(values.get(text_key, ""))
        mode = values.get(mode_key)
        try:
            plain, entities = parse_entities(text, mode)
        except (ParseError, LookupError) as exc:  # validated before; kept for safety
            raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from exc
        if not mode and isinstance(values.get(entities_key), list):
            entities = list(values[entities_key])
        return plain, entities

    @staticmethod
    def _inline_markup(values: JSON) -> JSON | None:
        markup = values.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            return markup
        return None

    def _bot_event(self, kind: str, chat: Chat, message: JSON, values: JSON, **extra: Any) -> None:
        text = message.get("text", message.get("caption", ""))
        raw_key = "text" if "text" in values else "caption"
        self._event(
            kind,
            "bot",
            chat,
            message_id=message["message_id"],
            user_name="bot",
            text=text,
            raw_text=values.get(raw_key),
            parse_mode=values.get("parse_mode"),
            reply_markup=message.get("reply_markup"),
            method=values.get("__method__"),
            **extra,
        )

    # -- Bot API methods ----------------------------------------------------------

    def _api_get_me(self, values: JSON) -> JSON:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _api_get_updates(self, values: JSON) -> list[JSON]:
        if self.webhook.get("url"):
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        if self._polling:
            raise ApiError(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        allowed = values.get("allowed_updates")
        if allowed is not None:
            self.allowed_updates = frozenset(allowed) if allowed else DEFAULT_UPDATES
        if values.get("offset") is not None:
            self._confirm(int(values["offset"]))
        limit = min(100, max(1, int(values.get("limit", 100))))
        timeout = max(0, int(values.get("timeout", 0)))
        self._polling += 1
        try:
            result = await self._wait_until(lambda: self._take_pending(limit), timeout)
        finally:
            self._polling -= 1
        return result or []

    async def _api_delete_webhook(self, values: JSON) -> bool:
        await self._stop_webhook()
        self.webhook = {}
        if values.get("drop_pending_updates"):
            self._queue.clear()
        return True

    async def _api_set_webhook(self, values: JSON) -> bool:
        await self._stop_webhook()
        self.webhook = {k: v for k, v in values.items() if not k.startswith("__")}
        if values.get("drop_pending_updates"):
            self._queue.clear()
        allowed = values.get("allowed_updates")
        if allowed is not None:
            self.allowed_updates = frozenset(allowed) if allowed else DEFAULT_UPDATES
        if self.webhook.get("url") and not self._closing:
            self._start_webhook()
        return True

    # -- webhook delivery -----------------------------------------------------------

    def _start_webhook(self) -> None:
        raw = self.webhook.get("max_connections")
        connections = int(raw) if raw is not None else DEFAULT_MAX_CONNECTIONS
        secret = self.webhook.get("secret_token")
        self._hook = WebhookSender(
            url=str(self.webhook["url"]),
            secret=str(secret) if secret else None,
            max_connections=max(1, min(100, connections)),
            take=self._hook_take,
            done=self._hook_done,
            release=self._hook_release,
            wait=self._hook_wait,
            execute=self._hook_execute,
            clock=self.clock,
            retry_cap=self.webhook_retry_cap,
            deliveries=self.webhook_deliveries,
        )
        self._hook.start()

    async def _stop_webhook(self) -> None:
        hook, self._hook = self._hook, None
        if hook is not None:
            await hook.stop()

    @property
    def webhook_active(self) -> bool:
        """True while updates go to a webhook (not to getUpdates)."""
        return self._hook is not None

    def _hook_take(self) -> _Queued | None:
        if self._closing:
            return None
        for queued in self._queue:
            if not queued.posting:
                queued.posting = True
                queued.redeliver = False
                self.delivered_at.setdefault(int(queued.update["update_id"]), self.clock())
                return queued
        return None

    def _hook_done(self, queued: _Queued) -> None:
        queued.posting = False
        with contextlib.suppress(ValueError):
            self._queue.remove(queued)
        self.confirmed_at.setdefault(int(queued.update["update_id"]), self.clock())
        self._notify()

    def _hook_release(self, queued: _Queued) -> None:
        queued.posting = False
        self._notify()

    async def _hook_wait(self, timeout: float) -> None:  # noqa: ASYNC109
        if self._signal is None:
            self._signal = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal.wait(), timeout)

    async def _hook_execute(self, raw_method: str, fields: dict[str, Any]) -> None:
        """A Bot API call the bot answered the webhook with, run as if requested."""
        method = self.spec.canonical_method(raw_method)
        if method is None:
            return
        self.stats.requests[method] += 1
        try:
            await self._call(method, dict(fields), {})
        except ApiError as error:
            self._record_error(method, fields, error)
            return
        self.calls.append({"method": method, "params": self._printable(fields), "ok": True,
                           "at": self.clock(), "in_webhook_answer": True})

    def _api_get_webhook_info(self, values: JSON) -> JSON:
        info: JSON = {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._queue),
        }
        if self.webhook.get("allowed_updates"):
            info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    @staticmethod
    def _commands_key(values: JSON) -> tuple[str, str]:
        scope = values.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(values.get("language_code") or "")

    def _api_set_my_commands(self, values: JSON) -> bool:
        for command in values["commands"]:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", command["command"]):
                self._violation(
                    "setMyCommands",
                    "Bad Request: BOT_COMMAND_INVALID: command must be 1-32 lowercase "
                    f"letters, digits or underscores, got {command['command']!r}",
                    values,
                )
        self.commands[self._commands_key(values)] = [
            {"command": c["command"], "description": c["description"]} for c in values["commands"]
        ]
        return True

    def _api_get_my_commands(self, values: JSON) -> list[JSON]:
        return list(self.commands.get(self._commands_key(values), []))

    def _api_delete_my_commands(self, values: JSON) -> bool:
        self.commands.pop(self._commands_key(values), None)
        return True

    def _api_send_message(self, values: JSON) -> JSON:
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        text, entities = self._format(values, "text", "parse_mode", "entities")
        message = self._new_message(
            chat,
            self.bot_user,
            reply_to_message=self._reply_target(chat, values),
            text=text,
            entities=entities,
            reply_markup=self._inline_markup(values),
        )
        self._bot_event("bot_message", chat, message, values)
        return message

    def _photo_sizes(self, photo: Any) -> list[JSON]:
        if isinstance(photo, Upload):
            number = next(self._file_ids)
            file_id = f"AgACAgIAAxkBAAEmu{number:08d}"
            size = photo.size
        else:
            file_id = str(photo)
            size = 0
        unique = f"AQAD{abs(hash(file_id)) % 10**10:010d}"
        if isinstance(photo, Upload):  # the bytes the bot uploaded, served like a document's
            self.files[file_id + "_l"] = (unique + "_l", f"photos/file_{number}.png",
                                          photo.content)
        sizes = [
            {"file_id": file_id, "file_unique_id": unique, "width": 320, "height": 320},
            {"file_id": file_id + "_l", "file_unique_id": unique + "_l", "width": 1280,
             "height": 1280},
        ]
        if size:
            sizes[-1]["file_size"] = size
        return sizes

    def _api_send_photo(self, values: JSON) -> JSON:
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        caption, entities = self._format(values, "caption", "parse_mode", "caption_entities")
        message = self._new_message(
            chat,
            self.bot_user,
            reply_to_message=self._reply_target(chat, values),
            photo=self._photo_sizes(values["photo"]),
            caption=caption or None,
            caption_entities=entities,
            reply_markup=self._inline_markup(values),
        )
        self._bot_event("bot_message", chat, message, values, photo=True)
        return message

    def _api_send_document(self, values: JSON) -> JSON:
        """A document the bot sends: an upload is kept (its bytes served by `getFile` and
        the file URL, like a user's), a file id is sent again as it is."""
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        document = values["document"]
        if isinstance(document, Upload):
            stored = self._store_document(document.content, document.filename or "file",
                                          document.content_type)
        else:
            stored = {"file_id": str(document), "file_unique_id": f"AgAD{abs(hash(document))}"}
        caption, entities = self._format(values, "caption", "parse_mode", "caption_entities")
        message = self._new_message(
            chat,
            self.bot_user,
            reply_to_message=self._reply_target(chat, values),
            document=stored,
            caption=caption or None,
            caption_entities=entities,
            reply_markup=self._inline_markup(values),
        )
        self._bot_event("bot_message", chat, message, values,
                        document=stored.get("file_name") or stored["file_id"])
        return message

    def document_bytes(self, message: Mapping[str, Any]) -> bytes:
        """The bytes of the document a message carries."""
        return self.files[str(message["document"]["file_id"])][2]

    def _api_get_file(self, values: JSON) -> JSON:
        stored = self.files.get(str(values["file_id"]))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        unique, path, content = stored
        return {"file_id": str(values["file_id"]), "file_unique_id": unique,
                "file_size": len(content), "file_path": path}

    def _store_document(self, content: bytes, file_name: str, mime_type: str) -> JSON:
        """Keep a file a user sends; the message's `document` object."""
        number = next(self._file_ids)
        file_id = f"BQACAgIAAxkBAAEmu{number:08d}"
        unique = f"AgAD{number:010d}"
        self.files[file_id] = (unique, f"documents/file_{number}.{file_name.rsplit('.', 1)[-1]}",
                               content)
        return {"file_id": file_id, "file_unique_id": unique, "file_name": file_name,
                "mime_type": mime_type, "file_size": len(content)}

    def _message_to_edit(self, values: JSON) -> tuple[Chat, JSON] | None:
        if values.get("inline_message_id"):
            return None
        if "chat_id" not in values or "message_id" not in values:
            raise ApiError(400, "Bad Request: message identifier is not specified")
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        message = chat.messages.get(int(values["message_id"]))
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if message.get("from", {}).get("id") != self.bot_id:
            raise ApiError(400, "Bad Request: message can't be edited")
        return chat, message

    def _apply_edit(self, chat: Chat, message: JSON, changes: JSON, values: JSON) -> JSON:
        unchanged = all(message.get(k) == v for k, v in changes.items())
        if unchanged:
            raise ApiError(400, NOT_MODIFIED)
        for key, value in changes.items():
            if value is None or value == []:
                message.pop(key, None)
            else:
                message[key] = value
        message["edit_date"] = int(self.wall_clock())
        self._bot_event("edit", chat, message, values)
        return copy.deepcopy(message)

    def _api_edit_message_text(self, values: JSON) -> JSON | bool:
        target = self._message_to_edit(values)
        if target is None:
            return True
        chat, message = target
        if "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        text, entities = self._format(values, "text", "parse_mode", "entities")
        changes = {
            "text": text,
            "entities": entities or None,
            "reply_markup": self._inline_markup(values),
        }
        return self._apply_edit(chat, message, changes, values)

    def _api_edit_message_caption(self, values: JSON) -> JSON | bool:
        target = self._message_to_edit(values)
        if target is None:
            return True
        chat, message = target
        if "text" in message:
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        caption, entities = self._format(values, "caption", "parse_mode", "caption_entities")
        changes = {
            "caption": caption or None,
            "caption_entities": entities or None,
            "reply_markup": self._inline_markup(values),
        }
        return self._apply_edit(chat, message, changes, values)

    def _api_edit_message_reply_markup(self, values: JSON) -> JSON | bool:
        target = self._message_to_edit(values)
        if target is None:
            return True
        chat, message = target
        return self._apply_edit(
            chat, message, {"reply_markup": self._inline_markup(values)}, values
        )

    def _api_delete_message(self, values: JSON) -> bool:
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        message_id = int(values["message_id"])
        message = chat.messages.get(message_id)
        if message is None:
            raise ApiError(400, "Bad Request: message to delete not found")
        own = message.get("from", {}).get("id") == self.bot_id
        if not own and chat.type != "private" and not self._bot_can(chat, "can_delete_messages"):
            raise ApiError(400, "Bad Request: message can't be deleted")
        del chat.messages[message_id]
        if message_id in chat.pinned:
            chat.pinned.remove(message_id)
        self._event("delete", "bot", chat, message_id=message_id, user_name="bot")
        return True

    def _api_pin_chat_message(self, values: JSON) -> bool:
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        message_id = int(values["message_id"])
        if message_id not in chat.messages:
            raise ApiError(400, "Bad Request: message to pin not found")
        if chat.type in GROUP_TYPES and not self._bot_can(chat, "can_pin_messages"):
            raise ApiError(
                400, "Bad Request: not enough rights to manage pinned messages in the chat"
            )
        if message_id in chat.pinned:
            chat.pinned.remove(message_id)
        chat.pinned.append(message_id)
        self._event("pin", "bot", chat, message_id=message_id, user_name="bot")
        return True

    def _api_unpin_chat_message(self, values: JSON) -> bool:
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        if chat.type in GROUP_TYPES and not self._bot_can(chat, "can_pin_messages"):
            raise ApiError(
                400, "Bad Request: not enough rights to manage pinned messages in the chat"
            )
        message_id = values.get("message_id")
        if message_id is None and chat.pinned:
            message_id = chat.pinned[-1]
        if message_id is not None and int(message_id) in chat.pinned:
            chat.pinned.remove(int(message_id))
            self._event("unpin", "bot", chat, message_id=int(message_id), user_name="bot")
        return True

    def _api_answer_callback_query(self, values: JSON) -> bool:
        record = self.callback_queries.get(values["callback_query_id"])
        if record is not None:
            record.attempts.append(self.clock())
        if (
            record is None
            or record.answered
            or self.clock() - record.created > self.callback_timeout
        ):
            raise ApiError(400, QUERY_TOO_OLD)
        record.answered = True
        record.answer = {
            "text": values.get("text"),
            "show_alert": bool(values.get("show_alert", False)),
            "url": values.get("url"),
            "cache_time": values.get("cache_time"),
        }
        user = self.users.get(record.user_id)
        self._event(
            "callback_answer",
            "bot",
            self.chats.get(record.chat_id),
            query_id=record.query_id,
            message_id=record.message_id,
            user_id=record.user_id,
            user_name=user.display if user else str(record.user_id),
            text=values.get("text") or "",
            show_alert=bool(values.get("show_alert", False)),
        )
        return True

    def _api_get_chat(self, values: JSON) -> JSON:
        chat = self._api_chat(values["chat_id"])
        if chat.type != "private":
            self._check_access(chat)
        info = chat.to_dict()
        info.update(
            {
                "accent_color_id": 0,
                "max_reaction_count": 11,
                "accepted_gift_types": {
                    name: False
                    for name in (*self.spec.required_fields("AcceptedGiftTypes"),
                                 *EXTRA_GIFT_TYPES)
                },
            }
        )
        if chat.pinned:
            info["pinned_message"] = copy.deepcopy(chat.messages[chat.pinned[-1]])
        if chat.type == "supergroup":
            info["permissions"] = {"can_send_messages": True}
        return info

    def _api_get_chat_member(self, values: JSON) -> JSON:
        chat = self._api_chat(values["chat_id"])
        if chat.type != "private":
            self._check_access(chat)
        user_id = int(values["user_id"])
        if user_id not in self.users and user_id != self.bot_id:
            raise ApiError(400, "Bad Request: user not found")
        if chat.type == "private":
            return {"status": "member", "user": self.users[user_id].to_dict()}
        return self._member_dict(chat, user_id)

    def _api_get_chat_administrators(self, values: JSON) -> list[JSON]:
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        return [
            self._member_dict(chat, uid)
            for uid, m in chat.members.items()
            if m.status in ("creator", "administrator")
        ]

    def _api_get_chat_member_count(self, values: JSON) -> int:
        chat = self._api_chat(values["chat_id"])
        if chat.type == "private":
            return 2
        self._check_access(chat)
        return sum(1 for m in chat.members.values() if m.status in ACTIVE_STATUSES)

    def _api_create_chat_invite_link(self, values: JSON) -> JSON:
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        if not self._bot_can(chat, "can_invite_users"):
            raise ApiError(400, "Bad Request: not enough rights to manage chat invite link")
        link: JSON = {
            "invite_link": f"https://t.me/+{secrets.token_urlsafe(12)}",
            "creator": self.bot_user,
            "creates_join_request": bool(values.get("creates_join_request", False)),
            "is_primary": False,
            "is_revoked": False,
        }
        for key in ("name", "expire_date", "member_limit"):
            if values.get(key) is not None:
                link[key] = values[key]
        chat.invite_links[link["invite_link"]] = link
        return dict(link)

    def _api_send_poll(self, values: JSON) -> JSON:
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        question, question_entities = self._format(
            values, "question", "question_parse_mode", "question_entities"
        )
        options = []
        for index, option in enumerate(values["options"]):
            text, _ = parse_entities(option["text"], option.get("text_parse_mode"))
            options.append({"persistent_id": str(index), "text": text, "voter_count": 0})
        poll: JSON = {
            "id": f"{5_000_000_000_000_000 + next(self._poll_ids)}",
            "question": question,
            "options": options,
            "total_voter_count": 0,
            "is_closed": bool(values.get("is_closed", False)),
            "is_anonymous": bool(values.get("is_anonymous", True)),
            "type": values.get("type", "regular"),
            "allows_multiple_answers": bool(values.get("allows_multiple_answers", False)),
            "allows_revoting": bool(values.get("allows_revoting", False)),
            "members_only": bool(values.get("members_only", False)),
        }
        if question_entities:
            poll["question_entities"] = question_entities
        message = self._new_message(
            chat,
            self.bot_user,
            reply_to_message=self._reply_target(chat, values),
            poll=poll,
            reply_markup=self._inline_markup(values),
        )
        self._event(
            "bot_message",
            "bot",
            chat,
            message_id=message["message_id"],
            user_name="bot",
            text=question,
            poll={"question": question, "options": [o["text"] for o in options]},
            reply_markup=message.get("reply_markup"),
            method="sendPoll",
        )
        return message

    def _api_stop_poll(self, values: JSON) -> JSON:
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        message = chat.messages.get(int(values["message_id"]))
        if message is None or "poll" not in message:
            raise ApiError(400, "Bad Request: message with poll to stop not found")
        if message["poll"]["is_closed"]:
            raise ApiError(400, "Bad Request: poll has already been closed")
        message["poll"]["is_closed"] = True
        markup = self._inline_markup(values)
        if markup is not None:
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        self._event("poll_stopped", "bot", chat, message_id=message["message_id"],
                    user_name="bot")
        return copy.deepcopy(message["poll"])

    def _api_leave_chat(self, values: JSON) -> bool:
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        old = self._member_dict(chat, self.bot_id)
        chat.members[self.bot_id] = Member("left")
        self._emit(
            "my_chat_member",
            {
                "chat": chat.to_dict(),
                "from": self.bot_user,
                "date": int(self.wall_clock()),
                "old_chat_member": old,
                "new_chat_member": self._member_dict(chat, self.bot_id),
            },
            chat,
        )
        self._event("bot_status", "bot", chat, status="left", user_name="bot")
        return True

    def _api_generic(self, values: JSON) -> Any:
        """Any other method of the spec: validated already; answer in the right shape."""
        method = values["__method__"]
        returns = self.spec.methods[method].get("returns", [])
        if "chat_id" not in values or returns not in (
            ["Message"], ["MessageId"], ["Array of Message"]
        ):
            return True
        chat = self._api_chat(values["chat_id"])
        self._check_access(chat)
        caption, entities = "", list[JSON]()
        if "caption" in values:
            caption, entities = self._format(values, "caption", "parse_mode", "caption_entities")
        message = self._new_message(
            chat,
            self.bot_user,
            caption=caption or None,
            caption_entities=entities,
            reply_markup=self._inline_markup(values),
        )
        self._bot_event("bot_message", chat, message, values)
        if returns == ["MessageId"]:
            return {"message_id": message["message_id"]}
        if returns == ["Array of Message"]:
            return [message]
        return message

    # -- acting as users ----------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        first_name: str,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        is_bot: bool = False,
    ) -> JSON:
        user = self.users.get(user_id)
        if user is None:
            user = self.users[user_id] = User(user_id, first_name)
        user.first_name = first_name
        user.last_name = last_name
        user.username = username
        user.language_code = language_code
        user.is_bot = is_bot
        if user_id in self.chats:
            chat = self.chats[user_id]
            chat.first_name, chat.last_name, chat.username = first_name, last_name, username
        return user.to_dict()

    def block_bot(self, user_id: int, blocked: bool = True) -> None:
        """The user blocks (or unblocks) the bot in private."""
        user = self._ensure_user(user_id)
        user.blocked = blocked
        chat = self._private_chat(user_id)
        old, new = ("member", "kicked") if blocked else ("kicked", "member")

        def member(status: str) -> JSON:
            # ChatMemberBanned requires until_date (0: for ever), on either side.
            extra = {"until_date": 0} if status == "kicked" else {}
            return {"status": status, "user": self.bot_user, **extra}

        self._emit(
            "my_chat_member",
            {
                "chat": chat.to_dict(),
                "from": user.to_dict(),
                "date": int(self.wall_clock()),
                "old_chat_member": member(old),
                "new_chat_member": member(new),
            },
            chat,
        )

    def create_group(
        self,
        chat_id: int,
        title: str,
        supergroup: bool = True,
        members: Iterable[int] = (),
        admins: Iterable[int] = (),
        username: str | None = None,
    ) -> JSON:
        if chat_id >= 0:
            raise ValueError("group chat ids are negative")
        chat = Chat(chat_id, "supergroup" if supergroup else "group", title=title,
                    username=username)
        admins = list(admins)
        for index, user_id in enumerate(admins):
            self._ensure_user(user_id)
            chat.members[user_id] = Member(
                "creator" if index == 0 else "administrator",
                {right: True for right in ADMIN_RIGHTS},
            )
        for user_id in members:
            self._ensure_user(user_id)
            chat.members.setdefault(user_id, Member("member"))
        self.chats[chat_id] = chat
        return chat.to_dict()

    def _user_chat(self, chat_id: int, user_id: int) -> tuple[Chat, User]:
        user = self._ensure_user(user_id)
        if chat_id == user_id:
            chat = self._private_chat(user_id)
            user.started = True
        else:
            chat = self._chat(chat_id)
        return chat, user

    def _deliver_message(self, chat: Chat, message: JSON, service: bool = False) -> JSON | None:
        if chat.type in GROUP_TYPES:
            if self._bot_member(chat).status not in ACTIVE_STATUSES:
                return None
            if self.privacy_mode and not service and not self._bot_is_admin(chat):
                text = str(message.get("text", message.get("caption", "")))
                reply = message.get("reply_to_message", {})
                if not text.startswith("/") and reply.get("from", {}).get("id") != self.bot_id:
                    return None
        return self._emit("message", copy.deepcopy(message), chat)

    def _set_bot_status(self, chat: Chat, status: str, by_user: int) -> JSON | None:
        old = self._member_dict(chat, self.bot_id)
        rights = {right: True for right in ADMIN_RIGHTS} if status == "administrator" else {}
        chat.members[self.bot_id] = Member(status, rights)
        return self._emit(
            "my_chat_member",
            {
                "chat": chat.to_dict(),
                "from": self._ensure_user(by_user).to_dict(),
                "date": int(self.wall_clock()),
                "old_chat_member": old,
                "new_chat_member": self._member_dict(chat, self.bot_id),
            },
            chat,
        )

    def add_bot_to_group(self, chat_id: int, by_user: int, as_admin: bool = True) -> JSON:
        chat = self._chat(chat_id)
        user = self._ensure_user(by_user)
        self._set_bot_status(chat, "administrator" if as_admin else "member", by_user)
        message = self._new_message(
            chat, user.to_dict(), new_chat_members=[self.bot_user]
        )
        self._event("bot_added", "user", chat, user_id=by_user, user_name=user.display,
                    message_id=message["message_id"])
        self._deliver_message(chat, message, service=True)
        return message

    def set_bot_admin(self, chat_id: int, admin: bool = True, by_user: int | None = None) -> None:
        """Promote or demote the bot (a ``my_chat_member`` update)."""
        chat = self._chat(chat_id)
        actor = by_user if by_user is not None else next(
            (uid for uid, m in chat.members.items() if m.status == "creator"), self.bot_id
        )
        self._set_bot_status(chat, "administrator" if admin else "member", actor)
        self._event("bot_status", "user", chat, status="administrator" if admin else "member")

    def remove_bot(self, chat_id: int, by_user: int) -> None:
        chat = self._chat(chat_id)
        user = self._ensure_user(by_user)
        self._set_bot_status(chat, "kicked", by_user)
        self._event("bot_removed", "user", chat, user_id=by_user, user_name=user.display)

    @staticmethod
    def _detect_entities(text: str) -> list[JSON]:
        entities: list[JSON] = []
        for regex, kind in ((_COMMAND_RE, "bot_command"), (_MENTION_RE, "mention")):
            for match in regex.finditer(text):
                entities.append(
                    {
                        "type": kind,
                        "offset": utf16_len(text[: match.start()]),
                        "length": utf16_len(match.group(0)),
                    }
                )
        entities.sort(key=lambda e: int(e["offset"]))
        return entities

    def send_message(
        self,
        chat_id: int,
        user_id: int,
        text: str = "",
        reply_to: int | None = None,
        photo: bool = False,
        sender_chat: int | None = None,
        document: str | None = None,
        file_name: str = "file.txt",
        mime_type: str = "text/plain",
    ) -> JSON:
        """A user (or an anonymous admin / a channel) writes in a chat; returns the message.
        `document`: the text of a file sent with it (`text` is then its caption), which
        the bot can fetch with getFile and download."""
        chat, user = self._user_chat(chat_id, user_id)
        sender = user.to_dict()
        extra: JSON = {}
        if sender_chat is not None:
            if sender_chat == chat.id:
                sender = {"id": ANONYMOUS_ADMIN_ID, "is_bot": True, "first_name": "Group",
                          "username": "GroupAnonymousBot"}
                extra["sender_chat"] = chat.to_dict()
            else:
                channel = self.chats.get(sender_chat)
                if channel is None:
                    channel = self.chats[sender_chat] = Chat(
                        sender_chat, "channel", title=f"Channel {sender_chat}"
                    )
                sender = {"id": CHANNEL_BOT_ID, "is_bot": True, "first_name": "Channel",
                          "username": "Channel_Bot"}
                extra["sender_chat"] = channel.to_dict()
        elif chat.type in GROUP_TYPES and user_id not in chat.members:
            chat.members[user_id] = Member("member")
        entities = self._detect_entities(text)
        if photo:
            extra["photo"] = self._photo_sizes(f"AgACAgUser{user_id}_{chat.next_message_id}")
            extra["caption"] = text or None
            extra["caption_entities"] = entities
        elif document is not None:
            extra["document"] = self._store_document(document.encode(), file_name, mime_type)
            extra["caption"] = text or None
            extra["caption_entities"] = entities
        else:
            extra["text"] = text
            extra["entities"] = entities
        if reply_to is not None:
            target = chat.messages.get(reply_to)
            if target is not None:
                reply = copy.deepcopy(target)
                reply.pop("reply_to_message", None)
                extra["reply_to_message"] = reply
        message = self._new_message(chat, sender, **extra)
        update = self._deliver_message(chat, message)
        self._event(
            "user_message",
            "user",
            chat,
            message_id=message["message_id"],
            user_id=sender["id"],
            user_name=(extra["sender_chat"].get("title") if sender_chat is not None
                       else user.display),
            text=text,
            photo=photo,
            update_id=update["update_id"] if update else None,
        )
        return copy.deepcopy(message)

    def click(self, chat_id: int, user_id: int, message_id: int, callback_data: str) -> str:
        """A user taps an inline button; returns the callback query id."""
        chat, user = self._user_chat(chat_id, user_id)
        message = chat.messages.get(message_id)
        label: str | None = None
        if message is not None:
            for row in (message.get("reply_markup") or {}).get("inline_keyboard", []):
                for button in row:
                    if button.get("callback_data") == callback_data:
                        label = button.get("text")
        query_id = f"{self.bot_id % 10**9}{next(self._query_ids):010d}"
        self.callback_queries[query_id] = CallbackRecord(
            query_id, chat.id, message_id, user_id, callback_data, label is None, self.clock()
        )
        payload: JSON = {
            "id": query_id,
            "from": user.to_dict(),
            "chat_instance": str((chat.id * 2654435761) % 10**18),
            "data": callback_data,
            "message": copy.deepcopy(message)
            if message is not None
            else {"chat": chat.to_dict(), "message_id": message_id, "date": 0},
        }
        update = self._emit("callback_query", payload, chat)
        self._event(
            "click",
            "user",
            chat,
            message_id=message_id,
            user_id=user_id,
            user_name=user.display,
            data=callback_data,
            button=label,
            forged=label is None,
            query_id=query_id,
            update_id=update["update_id"] if update else None,
        )
        return query_id

    def _invite_link_object(self, chat: Chat, invite_link: str) -> JSON:
        link = chat.invite_links.get(invite_link)
        if link is not None:
            return dict(link)
        return {
            "invite_link": invite_link,
            "creator": self.bot_user,
            "creates_join_request": False,
            "is_primary": False,
            "is_revoked": False,
        }

    def _member_change(
        self, chat: Chat, user: User, status: str, invite_link: str | None
    ) -> JSON | None:
        old = self._member_dict(chat, user.id)
        chat.members[user.id] = Member(status)
        payload: JSON = {
            "chat": chat.to_dict(),
            "from": user.to_dict(),
            "date": int(self.wall_clock()),
            "old_chat_member": old,
            "new_chat_member": self._member_dict(chat, user.id),
        }
        if invite_link:
            payload["invite_link"] = self._invite_link_object(chat, invite_link)
        return self._emit("chat_member", payload, chat)

    def join(self, chat_id: int, user_id: int, invite_link: str | None = None) -> JSON:
        chat = self._chat(chat_id)
        user = self._ensure_user(user_id)
        self._member_change(chat, user, "member", invite_link)
        message = self._new_message(chat, user.to_dict(), new_chat_members=[user.to_dict()])
        self._event("join", "user", chat, user_id=user_id, user_name=user.display,
                    invite_link=invite_link, message_id=message["message_id"])
        self._deliver_message(chat, message, service=True)
        return copy.deepcopy(message)

    def leave(self, chat_id: int, user_id: int) -> JSON:
        chat = self._chat(chat_id)
        user = self._ensure_user(user_id)
        self._member_change(chat, user, "left", None)
        message = self._new_message(chat, user.to_dict(), left_chat_member=user.to_dict())
        self._event("leave", "user", chat, user_id=user_id, user_name=user.display,
                    message_id=message["message_id"])
        self._deliver_message(chat, message, service=True)
        return copy.deepcopy(message)

    def migrate_group(self, old_id: int, new_id: int) -> JSON:
        """The group becomes a supergroup with a new id (service messages in both)."""
        old = self._chat(old_id)
        if old.migrated_to is not None:
            raise ValueError(f"chat {old_id} already migrated to {old.migrated_to}")
        new = Chat(new_id, "supergroup", title=old.title, username=old.username,
                   members=copy.deepcopy(old.members))
        self.chats[new_id] = new
        actor_id = next(
            (uid for uid, m in old.members.items() if m.status == "creator" and uid in self.users),
            None,
        )
        actor = (self.users[actor_id].to_dict() if actor_id is not None
                 else {"id": ANONYMOUS_ADMIN_ID, "is_bot": True, "first_name": "Group"})
        to_message = self._new_message(old, actor, migrate_to_chat_id=new_id)
        old.migrated_to = new_id
        from_message = self._new_message(
            new, {"id": ANONYMOUS_ADMIN_ID, "is_bot": True, "first_name": "Group",
                  "username": "GroupAnonymousBot"},
            sender_chat=new.to_dict(), migrate_from_chat_id=old_id,
        )
        self._event("migrate", "system", old, new_chat_id=new_id)
        if self._bot_member(old).status in ACTIVE_STATUSES:
            self._emit("message", copy.deepcopy(to_message), old)
            self._emit("message", copy.deepcopy(from_message), new)
        return new.to_dict()

    def inject_fault(
        self,
        method: str | None = None,
        chat_id: int | None = None,
        kind: str = "429",
        times: int = 1,
        retry_after: int = 3,
        migrate_to: int | None = None,
        hang: float = 30.0,
    ) -> None:
        """The next ``times`` matching requests fail with ``kind``
        (429, 403, 500, 502, migrate, timeout; html502: an HTML error page instead of
        JSON; reset: the connection closed without an answer). ``method=None`` matches
        every method except getUpdates."""
        if kind not in ("429", "403", "500", "502", "migrate", "timeout", "html502", "reset"):
            raise ValueError(f"unknown fault kind {kind!r}")
        self.faults.append(Fault(method, chat_id, kind, times, retry_after, migrate_to, hang))

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_flood_limits(self, enabled: bool) -> None:
        self.limiter.enabled = enabled

    # -- the control API ----------------------------------------------------------

    async def _control_wait_for_message(
        self, chat_id: int, contains: str | None = None, timeout: float = 5.0,  # noqa: ASYNC109
        since: int | None = None,
    ) -> JSON:
        def predicate(message: JSON) -> bool:
            text = str(message.get("text", message.get("caption", "")))
            return contains is None or contains in text

        return await self.wait_for_message(chat_id, predicate, timeout, since)

    async def _control_wait_events(self, since: int = 0, timeout: float = 5.0) -> list[JSON]:  # noqa: ASYNC109
        result = await self._wait_until(lambda: self.events[since:] or None, timeout)
        return list(result or [])

    def _control_ops(self) -> dict[str, Callable[..., Any]]:
        return {
            "info": lambda: {"url": self.url, "token": self.token, "bot": self.bot_user,
                             "spec_version": self.spec.version},
            "add_user": self.add_user,
            "block_bot": self.block_bot,
            "create_group": self.create_group,
            "add_bot_to_group": self.add_bot_to_group,
            "set_bot_admin": self.set_bot_admin,
            "remove_bot": self.remove_bot,
            "send_message": self.send_message,
            "click": self.click,
            "join": self.join,
            "leave": self.leave,
            "migrate_group": self.migrate_group,
            "inject_update": lambda update: self.inject_update(update),
            "replay": lambda update_ids: self.replay(update_ids),
            "inject_fault": self.inject_fault,
            "clear_faults": self.clear_faults,
            "set_flood_limits": self.set_flood_limits,
            "callback_answer": self.callback_answer,
            "wait_callback_answer": self.wait_callback_answer,
            "callback_query": lambda query_id: vars(self.callback_queries[query_id]),
            "messages_in": self.messages_in,
            "events": lambda since=0: self.events[since:],
            "wait_events": self._control_wait_events,
            "wait_for_message": self._control_wait_for_message,
            "violations": lambda: self.violations,
            "warnings": lambda: self.warnings,
            "errors": lambda: self.errors,
            "stats": self.stats.to_dict,
            "transcript": lambda chat_id=None: self.render(chat_id),
            "commands": lambda: [
                {"scope": json.loads(k[0]), "language_code": k[1], "commands": v}
                for k, v in self.commands.items()
            ],
        }

    async def _handle_control(self, request: web.Request) -> web.Response:
        op = self._control_ops().get(request.match_info["op"])
        if op is None:
            return self._json({"ok": False, "error": "unknown operation"}, 404)
        kwargs: JSON = {}
        if request.method == "POST" and request.body_exists:
            body = await request.json()
            if not isinstance(body, dict):
                return self._json({"ok": False, "error": "body must be a JSON object"}, 400)
            kwargs = body
        else:
            kwargs = {k: json.loads(v) for k, v in request.query.items()}
        try:
            result = op(**kwargs)
            if isinstance(result, Awaitable):
                result = await result
        except (KeyError, ValueError, TypeError, TimeoutError) as exc:
            return self._json({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 400)
        return self._json({"ok": True, "result": result})


def button_labels(message: Mapping[str, Any]) -> list[list[str]]:
    return buttons_of(message.get("reply_markup"))
