"""Serving the members' page (F15): `GET /app/` (static files shipped in the package, no
build step) and its API (`handlers.webapp_api`), on the webhook server in webhook mode
(`add_member_page`) or, in polling mode, on a small server of its own at
`WEBAPP_HOST`:`WEBAPP_PORT` (`serve_member_page`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path

from aiohttp import web

from bot.config import Settings
from handlers.webapp_api import PAGE_DEPS, Clock, PageDeps, api_routes
from services.i18n import make_i18n
from services.outbox import Outbox
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("webapp_static")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# The page may be framed by Telegram's web client; it loads nothing from elsewhere.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors https://web.telegram.org https://*.telegram.org"
)


def _static(name: str) -> web.StreamResponse:
    body = (STATIC / name).read_bytes()
    return web.Response(
        body=body, content_type=_TYPES[Path(name).suffix], charset="utf-8",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": _CSP,
                 "X-Content-Type-Options": "nosniff"},
    )


async def _index(_request: web.Request) -> web.StreamResponse:
    return _static("index.html")


async def _asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in {p.name for p in STATIC.iterdir() if p.suffix in _TYPES}:
        raise web.HTTPNotFound()
    return _static(name)


async def _to_index(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/app/")


def add_member_page(
    web_app: web.Application,
    *,
    db: Database,
    outbox: Outbox,
    token: str,
    default_language: str = "zh",
    clock: Clock = utcnow,
) -> None:
    """The page and its API on `web_app` (under `/app/`)."""
    web_app[PAGE_DEPS] = PageDeps(
        db, outbox, token, default_language, clock, make_i18n(default_language)
    )
    web_app.router.add_get("/app", _to_index)
    web_app.router.add_get("/app/", _index)
    web_app.router.add_routes(api_routes("/app/api"))
    web_app.router.add_get("/app/{name:[a-z0-9_.-]+}", _asset)


def member_page_app(
    *, db: Database, outbox: Outbox, token: str, default_language: str = "zh",
    clock: Clock = utcnow,
) -> web.Application:
    web_app = web.Application(client_max_size=64 * 1024)
    add_member_page(web_app, db=db, outbox=outbox, token=token,
                    default_language=default_language, clock=clock)
    return web_app


@asynccontextmanager
async def serve_member_page(
    host: str, port: int, *, db: Database, outbox: Outbox, token: str,
    default_language: str = "zh", clock: Clock = utcnow,
) -> AsyncIterator[web.AppRunner]:
    """The page's own small server (polling mode), for as long as the context lasts."""
    runner = web.AppRunner(
        member_page_app(db=db, outbox=outbox, token=token,
                        default_language=default_language, clock=clock),
        access_log=None,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("members' page served on %s:%s", host, port)
        yield runner
    finally:
        await runner.cleanup()


def member_page_server(
    settings: Settings, *, db: Database, outbox: Outbox, token: str
) -> AbstractAsyncContextManager[object]:
    """Polling mode: the page's own server while the bot polls, when `WEBAPP_URL` is set."""
    if settings.webapp_address() is None:
        return nullcontext()
    return serve_member_page(
        settings.webapp_host, settings.webapp_port, db=db, outbox=outbox, token=token,
        default_language=settings.locale,
    )
