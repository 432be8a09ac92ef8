"""The storm paths without the walk through every router: same entry, same middlewares.

At opening time nearly every update is one of a few kinds — a check-in press, a grab, a
draw on the 🎰 board, a `/redeem` for the last coupons — and each of them, routed the
usual way, travels through every router tried before its own and every filter of their
handlers: most of its cost, none of its work. `FastLane` sits behind the Dispatcher's
own entry point (`feed_update`, as the last outer middleware of the update observer, so
after every other one: errors, dedup, shared order; checked at the first hot update) and
hands such an update straight to the handler that routing would reach — inside the same
outer middlewares of its event (tracking, language, "try again later", shortcuts), with
the same filters deciding and the same inner middlewares around it. For a press whose
handler's one filter is `ParsedOnce`, those layers and the filter are one step doing what
each of them does (`_fused`). Everything else takes the usual route, and so does an
update whose handler's filters refuse it (`/redeem@another_bot`).

A handler is on the fast lane when it is registered with the flag `HOT`. Its key is its
own filter: a command (`Command("redeem")`: a message whose text starts `/redeem`) or a
callback-data class (`ParsedOnce(LotteryButton)`, `LotteryButton.filter()`: a press whose
data starts `lot:`). The
lane is only allowed where it changes nothing: every handler routing tries before it
must provably refuse the key (a command filter for other commands, callback data with
another prefix, a filter marked `NEVER_A_COMMAND`), no router on the way has filters of
its own or outer middlewares below the Dispatcher's — checked when the lane is built, so
a router added in front that could take the update fails at start, not in a storm. A
hot handler must not raise `SkipHandler` (there is no next handler to skip to here).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from aiogram import BaseMiddleware, Dispatcher, Router
from aiogram.dispatcher.event.handler import HandlerObject
from aiogram.dispatcher.event.telegram import TelegramEventObserver
from aiogram.filters import Command
from aiogram.filters.callback_data import CallbackData, CallbackQueryFilter
from aiogram.types import CallbackQuery, TelegramObject, Update
from aiogram.utils.i18n import I18n

from services.filters import AskAgainLater
from services.lru import LRU
from services.middlewares import (
    BATCHED,
    MEMBER_WRITE,
    NO_MEMBER_WAIT,
    MemberWritten,
    PondI18nMiddleware,
    TrackingMiddleware,
)
from services.operators import AdminsUnavailable
from services.red_packets import DataPrefix
from services.shortcuts import Shortcuts

HOT = "hot"  # handler flag: on the fast lane
# Attribute of a filter that never passes a message whose text is a command.
NEVER_A_COMMAND = "never_a_command"


class NotDisjoint(RuntimeError):
    """A handler routing tries earlier could take a hot handler's updates."""


Next = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


@dataclass(slots=True)
class Route:
    observer: TelegramEventObserver  # the Dispatcher's observer of the event type
    router: Router  # the handler's own
    handler: HandlerObject
    update_type: str
    # The middlewares routing would put around the handler, composed once, at the first
    # update (every middleware is registered by then): outer ones, then inner ones.
    chain: Next | None = None
    inner: Next | None = None


def _compose(middlewares: list[Any], last: Next) -> Next:
    """`MiddlewareManager.wrap_middlewares` without a new wrapper per update."""
    for m in reversed(middlewares):
        last = partial(m, last)
    return last


class ParsedOnce(CallbackQueryFilter):
    """`CallbackData.filter()` that parses each payload once: a stampede presses one
    board's button, one string, thousands of times. The parsed object is shared by the
    presses of that payload; handlers only read it."""

    __slots__ = ("_parsed",)

    def __init__(self, callback_data: type[CallbackData], size: int = 1024) -> None:
        super().__init__(callback_data=callback_data)
        self._parsed: LRU[str, CallbackData | None] = LRU(size)

    async def __call__(self, query: TelegramObject) -> Literal[False] | dict[str, Any]:
        parsed = self.parse(query)
        return False if parsed is None else {"callback_data": parsed}

    def parse(self, query: TelegramObject) -> CallbackData | None:
        """The press's parsed data, or None where the filter refuses it."""
        if not isinstance(query, CallbackQuery) or not query.data:
            return None
        data = query.data
        if data in self._parsed:
            return self._parsed[data]
        try:
            parsed: CallbackData | None = self.callback_data.unpack(data)
        except (TypeError, ValueError):
            parsed = None
        self._parsed.put(data, parsed)
        return parsed


def _walk(router: Router) -> Iterator[Router]:
    """Routers in the order propagation tries them."""
    yield router
    for sub in router.sub_routers:
        yield from _walk(sub)


def _commands(handler: HandlerObject) -> list[str] | None:
    """The commands of the handler's `Command` filter (plain names only), else None."""
    for f in handler.filters or ():
        cmd = f.callback
        if isinstance(cmd, Command) and cmd.prefix == "/":
            names = [c for c in cmd.commands if isinstance(c, str)]
            if len(names) == len(cmd.commands):
                return [n.lower() for n in names]
    return None


def _prefixes(handler: HandlerObject) -> list[str] | None:
    """The callback-data prefixes (with separator) the handler's filters insist on."""
    for f in handler.filters or ():
        flt = f.callback
        if isinstance(flt, CallbackQueryFilter):
            cls = flt.callback_data
            return [cls.__prefix__ + cls.__separator__]
        if isinstance(flt, DataPrefix) and flt.prefix:
            return [flt.prefix]
    return None


def _refuses(handler: HandlerObject, event: str, key: str) -> bool:
    """Whether `handler` provably refuses every update of the hot key."""
    if event == "message":
        names = _commands(handler)
        if names is not None:
            return key.lower() not in names
        return any(getattr(f.callback, NEVER_A_COMMAND, False) for f in handler.filters or ())
    prefixes = _prefixes(handler)
    return prefixes is not None and all(
        not (p.startswith(key) or key.startswith(p)) for p in prefixes
    )


def _fused(route: Route, outer: list[Any], inner: list[Any], reach: Next, chain: Next
           ) -> Next | None:
    """The route's middlewares and its filter in one step: what each of them does, in
    their order, without a coroutine, a wrapper and a copy of the data per layer. Only
    for the chain the bot builds (tracking, language, "try again later", the press
    shortcuts; `MemberWritten` inside) and a handler whose one filter is `ParsedOnce`;
    any other chain is composed as it is. An update the fused step does not handle the
    plain way — a pond not known yet, the settings audit due, a migration, a pond not
    served, a press a shortcut may answer, data the filter refuses — goes through the
    composed chain (`chain`, `reach`) from the layer where it parts."""
    handler = route.handler
    kinds = [type(m) for m in outer]
    shape = [TrackingMiddleware, PondI18nMiddleware, AskAgainLater]
    if route.update_type == "callback_query":
        shape.append(Shortcuts)
    filters = handler.filters or []
    if (kinds != shape or [type(m) for m in inner] != [MemberWritten] or len(filters) != 1
            or type(filters[0].callback) is not ParsedOnce or not handler.awaitable
            or handler.varkw):
        return None
    tracking: TrackingMiddleware = outer[0]
    language: PondI18nMiddleware = outer[1]
    again: AskAgainLater = outer[2]
    shortcuts: Shortcuts | None = outer[3] if len(outer) > 3 else None
    parsed_once: ParsedOnce = filters[0].callback
    waits = not (handler.flags.get(BATCHED) or handler.flags.get(NO_MEMBER_WAIT))
    params = tuple(handler.params)
    callback = handler.callback
    router = route.router
    i18n = language.i18n
    i18n_key, middleware_key = language.i18n_key, language.middleware_key

    async def rest(event: TelegramObject, data: dict[str, Any]) -> Any:
        """After the shortcuts: the filter, `MemberWritten`, the handler."""
        data["event_router"] = router
        data["handler"] = handler
        parsed = parsed_once.parse(event)
        if parsed is None:
            return await reach(event, data)  # refused there too: the usual route
        data["callback_data"] = parsed
        if waits:
            written = data.get(MEMBER_WRITE)
            if written is not None:
                await written
        return await callback(event, **{k: data[k] for k in params if k in data})

    async def step(event: TelegramObject, data: dict[str, Any]) -> Any:
        if not tracking.admit_now(event, data):
            return await chain(event, data)
        locale = language.locale_of(data)
        if i18n_key:
            data[i18n_key] = i18n
        if middleware_key:
            data[middleware_key] = language
        current = I18n.set_current(i18n)
        speaking = i18n.ctx_locale.set(locale)
        try:
            if shortcuts is not None and shortcuts.may_answer(getattr(event, "data", None)):
                return await shortcuts(rest, event, data)
            return await rest(event, data)
        except AdminsUnavailable as exc:
            return await again(_raising(exc), event, data)
        finally:
            i18n.ctx_locale.reset(speaking)
            I18n.reset_current(current)

    return step


def _raising(exc: BaseException) -> Next:
    async def handler(event: TelegramObject, data: dict[str, Any]) -> Any:
        raise exc

    return handler


class FastLane(BaseMiddleware):
    def __init__(self, dp: Dispatcher) -> None:
        self.dp = dp
        self.commands: dict[str, Route] = {}  # "redeem" -> route
        self.presses: dict[str, Route] = {}  # "lot" -> route
        for event in ("message", "callback_query"):
            self._collect(event)

    def _collect(self, event: str) -> None:
        top = self.dp.observers[event]
        if top.handlers or top._handler.filters:
            raise NotDisjoint(f"the Dispatcher's own {event} handlers or filters")
        routers = list(_walk(self.dp))
        if not any(h.flags.get(HOT) for r in routers for h in r.observers[event].handlers):
            return
        earlier: list[HandlerObject] = []
        for router in routers:
            observer = router.observers[event]
            if router is not self.dp and (observer.outer_middleware or observer._handler.filters):
                # Propagation would run it for the hot updates too: kept simple, not allowed.
                raise NotDisjoint(f"router {router.name!r} filters or wraps {event}")
            for handler in observer.handlers:
                if handler.flags.get(HOT):
                    self._add(event, router, observer, handler, earlier)
                earlier.append(handler)

    def _add(self, event: str, router: Router, observer: TelegramEventObserver,
             handler: HandlerObject, earlier: list[HandlerObject]) -> None:
        if event == "message":
            keys = [k for k in _commands(handler) or ()]
            table, seps = self.commands, ""
        else:
            keys = [p.rstrip(":") for p in _prefixes(handler) or ()]
            table, seps = self.presses, ":"
        if not keys:
            raise NotDisjoint(f"hot handler {handler.callback!r} has no key")
        for key in keys:
            if key in table:
                continue  # an earlier hot handler has it: routing reaches that one first
            blocking = [h for h in earlier if not _refuses(h, event, key + seps)]
            if blocking:
                raise NotDisjoint(f"{blocking[0].callback!r} may take {event} {key!r} "
                                  f"before {handler.callback!r}")
            table[key] = Route(self.dp.observers[event], router, handler, event)

    def route(self, update: Update) -> tuple[str, TelegramObject, Route] | None:
        message = update.message
        if message is not None:
            text = message.text
            if not text or text[0] != "/":
                return None
            name = text[1:].split(maxsplit=1)[0].partition("@")[0].lower() if len(text) > 1 else ""
            hit = self.commands.get(name)
            return None if hit is None else ("message", message, hit)
        query = update.callback_query
        if query is not None and query.data:
            prefix, sep, _ = query.data.partition(":")
            hit = self.presses.get(prefix) if sep else None
            return None if hit is None else ("callback_query", query, hit)
        return None

    def _chain(self, route: Route) -> Next:
        """The route's middlewares, composed at its first update."""
        if route.chain is None:
            update = self.dp.update
            if update.outer_middleware[-1] is not self or update.middleware:
                # Routing would run what comes after the lane for a hot update too.
                raise NotDisjoint("the fast lane must be the update's last middleware")
            observer = route.router.observers[route.update_type]
            inner = observer._resolve_middlewares()
            route.inner = _compose(inner, self._call(route))
            outer = list(route.observer.outer_middleware)
            reach = self._reach(route)
            route.chain = _compose(outer, reach)
            route.chain = _fused(route, outer, inner, reach, route.chain) or route.chain
        return route.chain

    @staticmethod
    def _call(route: Route) -> Next:
        async def call(event: TelegramObject, data: dict[str, Any]) -> Any:
            return await route.handler.call(event, **data)

        return call

    def _reach(self, route: Route) -> Next:
        dp = self.dp

        async def reach(event: TelegramObject, data: dict[str, Any]) -> Any:
            data["event_router"] = route.router
            data["handler"] = route.handler
            passed, kwargs = await route.handler.check(event, **data)
            if not passed:  # not the update its key promised: the usual route
                kwargs.pop("handler", None)
                kwargs["event_router"] = dp
                return await dp._propagate_event(
                    observer=route.observer, update_type=route.update_type, event=event,
                    **kwargs,
                )
            assert route.inner is not None
            return await route.inner(event, kwargs)

        return reach

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        found = self.route(event) if isinstance(event, Update) else None
        if found is None:
            return await handler(event, data)
        _, inner_event, route = found
        data["event_update"] = event
        data["event_router"] = self.dp
        return await self._chain(route)(inner_event, data)


__all__ = ["HOT", "NEVER_A_COMMAND", "FastLane", "NotDisjoint", "ParsedOnce"]
