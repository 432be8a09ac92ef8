"""A fake aiogram session: records every request, answers like Telegram would.

Built like aiogram's own `tests/mocked_bot.py`: `make_request` records the method and
pushes a JSON response through the real `BaseSession.check_response`, so scripted
faults surface as aiogram's real exceptions (`TelegramRetryAfter`,
`TelegramForbiddenError`, `TelegramMigrateToChat`, `TelegramServerError` …).

    session = FakeSession()
    bot = make_bot(session)
    session.fail_next("sendMessage", chat_id=-100, retry_after=7)
    session.admins[-100] = [owner(user)]
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import time
import zlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import (
    CopyMessage,
    CopyMessages,
    CreateChatInviteLink,
    EditChatInviteLink,
    ForwardMessages,
    GetChatAdministrators,
    GetChatMember,
    GetChatMemberCount,
    GetMe,
    GetMyCommands,
    GetUpdates,
    SendMediaGroup,
    SendMessage,
    TelegramMethod,
)
from aiogram.types import (
    Chat,
    ChatInviteLink,
    ChatMemberAdministrator,
    ChatMemberMember,
    ChatMemberOwner,
    Message,
    MessageId,
    PhotoSize,
    TelegramObject,
    User,
)

from bot.emulator.spec import ApiSpec, Upload, load_spec

_spec: list[ApiSpec] = []


def spec() -> ApiSpec:
    """The Bot API specification, loaded once per test run."""
    if not _spec:
        _spec.append(load_spec())
    return _spec[0]


TEST_TOKEN = "42:TEST-token-for-pondbot-tests_0000000"
BOT_ID = 42
BOT_USERNAME = "pondbot_test_bot"
_EPOCH = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)

M = TypeVar("M", bound=TelegramMethod[Any])
MethodMatch = str | type[TelegramMethod[Any]] | None

_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: message to edit not found",
    403: "Forbidden: bot was kicked from the group chat",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


class SessionClock(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class _RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _matches(method: TelegramMethod[Any], match: MethodMatch, chat_id: int | str | None) -> bool:
    if isinstance(match, str) and method.__api_method__ != match:
        return False
    if isinstance(match, type) and not isinstance(method, match):
        return False
    return chat_id is None or getattr(method, "chat_id", None) == chat_id


@dataclass
class _Fault:
    method: MethodMatch
    chat_id: int | str | None
    times: int
    status: int
    description: str
    retry_after: int | None
    migrate_to_chat_id: int | None
    network: bool


@dataclass
class _Planned:
    method: MethodMatch
    chat_id: int | str | None
    result: Any


def _to_json(value: Any) -> Any:
    if isinstance(value, TelegramObject):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _chat_type(chat_id: int) -> str:
    if chat_id > 0:
        return "private"
    return "supergroup" if chat_id <= -1_000_000_000_000 else "group"


class FakeSession(BaseSession):
    """Records requests; answers with typed results or scripted Telegram errors.

    * `requests` / `request_times`: every request, in the order it was issued, with the
      clock's time at issue (`clock.monotonic()`; pass the test's FakeClock).
    * `delivered`: the requests that got a successful answer.
    * `latency`: seconds (on `clock`) each request takes before it is answered.
    * `fail_next(...)`, `add_result(...)`: script the next answers.
    * `admins[chat_id] = [ChatMemberOwner(...), ChatMemberAdministrator(...)]`;
      `default_admins`: the admins of every group not listed in `admins`.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        clock: SessionClock | None = None,
        bot_user: User | None = None,
    ) -> None:
        super().__init__()
        self.latency = latency
        self.clock: SessionClock = clock or _RealClock()
        self.bot_user = bot_user or User(
            id=BOT_ID, is_bot=True, first_name="PondBot", username=BOT_USERNAME
        )
        self.requests: list[TelegramMethod[Any]] = []
        self.violations: list[tuple[str, str]] = []
        self.request_times: list[float] = []
        self.delivered: list[TelegramMethod[Any]] = []
        self.admins: dict[int | str, list[ChatMemberOwner | ChatMemberAdministrator]] = {}
        self.default_admins: list[ChatMemberOwner | ChatMemberAdministrator] = []
        self.closed = False
        self._faults: list[_Fault] = []
        self._planned: list[_Planned] = []
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._link_ids = itertools.count(1)
        self.in_flight = 0
        self.max_in_flight = 0

    # -- scripting -------------------------------------------------------------------

    def fail_next(
        self,
        method: MethodMatch = None,
        *,
        chat_id: int | str | None = None,
        error_code: int | None = None,
        description: str | None = None,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
        network: bool = False,
        times: int = 1,
    ) -> None:
        """Make the next `times` matching requests fail.

        Defaults to a 429 "retry after 5". `migrate_to_chat_id` makes a 400 migration
        answer; `network=True` raises `TelegramNetworkError` as aiohttp timeouts do.
        `method` matches an API name (`"sendMessage"`) or a method class.
        """
        if migrate_to_chat_id is not None:
            code = error_code or 400
            text = description or "Bad Request: group chat was upgraded to a supergroup chat"
        else:
            code = error_code or 429
            if code == 429 and retry_after is None:
                retry_after = 5
            text = description or (
                f"Too Many Requests: retry after {retry_after}"
                if code == 429
                else _DEFAULT_DESCRIPTIONS.get(code, f"Error {code}")
            )
        self._faults.append(
            _Fault(method, chat_id, times, code, text, retry_after, migrate_to_chat_id, network)
        )

    def add_result(
        self, result: Any, *, method: MethodMatch = None, chat_id: int | str | None = None
    ) -> None:
        """Queue an explicit result for the next matching request (FIFO)."""
        self._planned.append(_Planned(method, chat_id, result))

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- inspection ------------------------------------------------------------------

    def requests_of(self, kind: type[M]) -> list[M]:
        return [r for r in self.requests if isinstance(r, kind)]

    def delivered_of(self, kind: type[M]) -> list[M]:
        return [r for r in self.delivered if isinstance(r, kind)]

    def sent_texts(self, chat_id: int | str | None = None) -> list[str]:
        """Texts of the sendMessage requests that Telegram accepted, in order."""
        return [
            m.text
            for m in self.delivered_of(SendMessage)
            if chat_id is None or m.chat_id == chat_id
        ]

    # -- BaseSession -----------------------------------------------------------------

    async def close(self) -> None:
        self.closed = True

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 - BaseSession's signature
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:  # pragma: no cover - not used by pondbot
        yield b""

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[Any],
        timeout: int | None = None,  # noqa: ASYNC109 - BaseSession's signature
    ) -> Any:
        self.closed = False
        violation = self._validate(bot, method)
        if violation is not None:
            body = json.dumps({"ok": False, "error_code": 400, "description": violation})
            self.check_response(bot, method, 400, body)  # raises TelegramBadRequest
        self.requests.append(method)
        self.request_times.append(self.clock.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await self.clock.sleep(self.latency)
            content, status = self._respond(bot, method)
        finally:
            self.in_flight -= 1
        response = self.check_response(bot, method, status, content)
        self.delivered.append(method)
        return response.result

    def _validate(self, bot: Bot, method: TelegramMethod[Any]) -> str | None:
        """Check the request exactly as it would go over the wire against the Bot API
        specification; a violation fails the request the way Telegram would (400) and
        is recorded in `violations` for the test to assert on."""
        files: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False).items():
            prepared = self.prepare_value(value, bot=bot, files=files)
            if prepared:
                params[key] = prepared
        uploads = {
            k: Upload(filename=getattr(v, "filename", None) or k, size=0) for k, v in files.items()
        }
        result = spec().validate_method(method.__api_method__, params, uploads)
        if not result.violations:
            return None
        self.violations.append((method.__api_method__, result.violations[0]))
        return result.violations[0]

    def assert_no_violations(self) -> None:
        assert not self.violations, f"Bot API spec violations: {self.violations}"

    # -- answers ---------------------------------------------------------------------

    def _respond(self, bot: Bot, method: TelegramMethod[Any]) -> tuple[str, int]:
        for fault in self._faults:
            if fault.times > 0 and _matches(method, fault.method, fault.chat_id):
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                if fault.network:
                    raise TelegramNetworkError(method=method, message="Request timeout error")
                parameters: dict[str, int] = {}
                if fault.retry_after is not None:
                    parameters["retry_after"] = fault.retry_after
                if fault.migrate_to_chat_id is not None:
                    parameters["migrate_to_chat_id"] = fault.migrate_to_chat_id
                body: dict[str, Any] = {
                    "ok": False,
                    "error_code": fault.status,
                    "description": fault.description,
                }
                if parameters:
                    body["parameters"] = parameters
                return json.dumps(body), fault.status
        for planned in self._planned:
            if _matches(method, planned.method, planned.chat_id):
                self._planned.remove(planned)
                result = planned.result
                break
        else:
            result = self._default_result(method)
        return json.dumps({"ok": True, "result": _to_json(result)}), 200

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _chat(self, chat_id: int | str | None) -> Chat:
        if isinstance(chat_id, str):  # "@username" of a public chat
            return Chat(
                id=-1000000000000 - zlib.crc32(chat_id.encode()) % 10**9,
                type="supergroup",
                username=chat_id.lstrip("@"),
            )
        cid = chat_id if chat_id is not None else 0
        return Chat(id=cid, type=_chat_type(cid))

    def _message(self, method: TelegramMethod[Any], message_id: int | None = None) -> Message:
        chat = self._chat(getattr(method, "chat_id", None))
        now = _EPOCH + datetime.timedelta(seconds=self.clock.monotonic())
        fields: dict[str, Any] = {
            "message_id": message_id or self._next_message_id(chat.id),
            "date": now,
            "chat": chat,
            "from_user": self.bot_user,
        }
        if isinstance(text := getattr(method, "text", None), str):
            fields["text"] = text
        if isinstance(caption := getattr(method, "caption", None), str):
            fields["caption"] = caption
        if method.__api_method__ == "sendPhoto":
            n = fields["message_id"]
            fields["photo"] = [
                PhotoSize(file_id=f"photo-{n}", file_unique_id=f"u-{n}", width=90, height=90)
            ]
        if method.__api_method__.startswith("edit"):
            fields["edit_date"] = int(now.timestamp())
        if (markup := getattr(method, "reply_markup", None)) is not None and hasattr(
            markup, "inline_keyboard"
        ):
            fields["reply_markup"] = markup
        return Message(**fields)

    def _default_result(self, method: TelegramMethod[Any]) -> Any:
        if isinstance(method, GetMe):
            return self.bot_user
        if isinstance(method, GetChatAdministrators):
            return list(self.admins.get(method.chat_id, self.default_admins))
        if isinstance(method, GetChatMember):
            for member in self.admins.get(method.chat_id, self.default_admins):
                if member.user.id == method.user_id:
                    return member
            if method.user_id == self.bot_user.id:
                return ChatMemberMember(user=self.bot_user)
            return ChatMemberMember(
                user=User(id=method.user_id, is_bot=False, first_name=f"User {method.user_id}")
            )
        if isinstance(method, GetChatMemberCount):
            return len(self.admins.get(method.chat_id, self.default_admins)) + 1
        if isinstance(method, CreateChatInviteLink | EditChatInviteLink):
            return ChatInviteLink(
                invite_link=f"https://t.me/+fake{next(self._link_ids):06d}",
                creator=self.bot_user,
                creates_join_request=bool(method.creates_join_request),
                is_primary=False,
                is_revoked=False,
                name=method.name,
            )
        if isinstance(method, GetUpdates | GetMyCommands):
            return []
        if isinstance(method, SendMediaGroup):
            return [self._message(method) for _ in method.media]
        if isinstance(method, CopyMessage):
            chat = self._chat(method.chat_id)
            return MessageId(message_id=self._next_message_id(chat.id))
        if isinstance(method, CopyMessages | ForwardMessages):
            chat = self._chat(method.chat_id)
            return [
                MessageId(message_id=self._next_message_id(chat.id)) for _ in method.message_ids
            ]
        returning = method.__returning__
        if returning is bool:
            return True
        if returning is Message:
            return self._message(method)
        if returning == Message | bool:
            if getattr(method, "inline_message_id", None):
                return True
            return self._message(method, message_id=getattr(method, "message_id", None))
        raise NotImplementedError(
            f"FakeSession has no default answer for {method.__api_method__}; "
            "queue one with session.add_result(...)"
        )


def make_bot(
    session: FakeSession | None = None, *, default: DefaultBotProperties | None = None
) -> Bot:
    """A Bot wired to a FakeSession (a fresh one unless given)."""
    return Bot(TEST_TOKEN, session=session or FakeSession(), default=default)


def owner(user: User) -> ChatMemberOwner:
    return ChatMemberOwner(user=user, is_anonymous=False)


def admin(user: User, **rights: bool) -> ChatMemberAdministrator:
    """An administrator who can manage the chat; other rights off unless given."""
    fields: dict[str, bool] = {
        name: False
        for name, info in ChatMemberAdministrator.model_fields.items()
        if info.is_required() and info.annotation is bool
    }
    fields["can_manage_chat"] = True
    fields.update(rights)
    return ChatMemberAdministrator.model_validate({"user": user, **fields})
