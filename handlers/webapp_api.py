"""The members' page's JSON API under `/app/api/` (F15), served by `bot.webapp`; `/me`,
which opens the page, is `handlers.webapp`.

Every API call carries the initData Telegram gave the page, in the header
`X-Telegram-Init-Data`, checked against the bot token (`games.webapp_auth`). A missing,
forged or stale one is answered 401 with a JSON error before anything is read or
written. The token never leaves this check: not in a log line, not in an answer.

Each member's calls are limited (`PageLimits`: a token bucket per member, 20 at once and 2
a second after that — the page makes 5 when it opens): beyond it, 429 with `retry_after`
and nothing read or written, so one member's script cannot keep the database busy.

A module of its own so that a bot that serves no page never loads aiohttp's server.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiogram.utils.i18n import I18n
from aiohttp import web

from games.people import UserInfo
from games.webapp_auth import InitDataError, page_language, validate
from services import member_page
from services.i18n import make_i18n, speaking
from services.outbox import Outbox
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)
INIT_DATA_HEADER = "X-Telegram-Init-Data"
Clock = Callable[[], datetime]


@dataclass
class PageLimits:
    """A token bucket per member for the page's API calls, shared by every route."""

    rate: float = 2.0  # calls a second, sustained
    burst: int = 20  # calls at once
    kept: int = 10_000  # members remembered at most, the least recently seen forgotten
    monotonic: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[int, tuple[float, float]] = field(
        default_factory=OrderedDict, repr=False
    )  # member -> (tokens, when counted)

    def admit(self, user_id: int) -> float:
        """0 when the call may go (it is counted), else the seconds until one may."""
        now = self.monotonic()
        tokens, at = self._buckets.pop(user_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[user_id] = (tokens, now)
        while len(self._buckets) > self.kept:
            self._buckets.popitem(last=False)
        return wait


@dataclass(frozen=True)
class PageDeps:
    db: Database
    outbox: Outbox
    token: str = field(default="", repr=False)  # the initData's key: never printed
    default_language: str = "zh"
    clock: Clock = utcnow
    i18n: I18n = field(default_factory=make_i18n)  # the code's DM speaks the page's language
    limits: PageLimits = field(default_factory=PageLimits)


PAGE_DEPS = web.AppKey("member_page", PageDeps)
Handler = Callable[[web.Request, PageDeps, UserInfo], Awaitable[dict[str, Any]]]


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(
        body, status=status, headers={"Cache-Control": "no-store"},
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


def _authenticated(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        deps = request.app[PAGE_DEPS]
        try:
            data = validate(request.headers.get(INIT_DATA_HEADER), deps.token, deps.clock())
        except InitDataError as exc:
            log.info("members' page: initData refused (%s) from %s", exc.reason,
                     request.remote)
            return _json({"error": "unauthorized", "reason": exc.reason}, status=401)
        wait = deps.limits.admit(data.user.id)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            response = _json({"error": "too_many_requests", "retry_after": retry_after}, 429)
            response.headers["Retry-After"] = str(retry_after)
            return response
        language = page_language(data.user.language_code, deps.default_language)
        try:
            with speaking(deps.i18n, language):
                return _json(await handler(request, deps, data.user))
        except member_page.PageError as exc:
            return _json({"error": exc.code, **exc.extra}, status=exc.status)

    return serve


async def _place(request: web.Request, deps: PageDeps, user: UserInfo) -> member_page.Place:
    chat = member_page.parse_chat(request.query.get("chat"))
    return await member_page.place_of(deps.db, user.id, chat)


async def api_me(request: web.Request, deps: PageDeps, user: UserInfo) -> dict[str, Any]:
    place = await _place(request, deps, user)
    body = await member_page.me(deps.db, user, place, deps.clock())
    body["lang"] = page_language(user.language_code, deps.default_language)
    return body


async def api_history(request: web.Request, deps: PageDeps, user: UserInfo
                      ) -> dict[str, Any]:
    before = member_page.parse_before(request.query.get("before"))
    return await member_page.history(deps.db, user.id, before)


async def api_mine(request: web.Request, deps: PageDeps, user: UserInfo) -> dict[str, Any]:
    """The member's redemptions and draws ("My coupons"), as `/mine` lists them."""
    before = member_page.parse_mine_before(request.query.get("before"))
    return await member_page.mine(deps.db, user.id, before)


async def api_calendar(request: web.Request, deps: PageDeps, user: UserInfo
                       ) -> dict[str, Any]:
    place = await _place(request, deps, user)
    return await member_page.calendar(
        deps.db, user.id, place, request.query.get("month"), deps.clock()
    )


async def api_shop(request: web.Request, deps: PageDeps, user: UserInfo) -> dict[str, Any]:
    place = await _place(request, deps, user)
    return await member_page.shop_items(deps.db, place, deps.clock())


async def api_redeem(request: web.Request, deps: PageDeps, user: UserInfo
                     ) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise member_page.PageError(400, "bad_body") from None
    if not isinstance(body, dict):
        raise member_page.PageError(400, "bad_body")
    item_id = member_page.item_of(body.get("item_id"))
    source = member_page.redeem_source(user.id, body.get("request_id"))
    place = await _place(request, deps, user)
    return await member_page.redeem(
        deps.db, deps.outbox, user, place, item_id=item_id, source_key=source,
        clock=deps.clock,
    )


def api_routes(prefix: str = "/app/api") -> list[web.RouteDef]:
    return [
        web.get(f"{prefix}/me", _authenticated(api_me)),
        web.get(f"{prefix}/history", _authenticated(api_history)),
        web.get(f"{prefix}/mine", _authenticated(api_mine)),
        web.get(f"{prefix}/calendar", _authenticated(api_calendar)),
        web.get(f"{prefix}/shop", _authenticated(api_shop)),
        web.post(f"{prefix}/redeem", _authenticated(api_redeem)),
    ]
