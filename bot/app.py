"""Composition root: builds the Bot, the Dispatcher and the services, and runs them.

Nothing here runs at import. `build_dispatcher` is the single factory used by
production and by the tests, so tests exercise exactly the routers and middlewares
that serve real ponds.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError, TelegramRetryAfter, TelegramUnauthorizedError
from aiogram.methods import TelegramMethod
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeDefault,
    Update,
)
from sqlalchemy import text as sa_text

from bot.config import Settings
from bot.runtime import tune_gc
from handlers import setup_routers
from scheduler.core import Scheduler, wall_clock_alarms
from scheduler.deps import JobDeps
from scheduler.jobs import register_jobs
from services import texts
from services.checkin_board import BoardKeeper
from services.clock import Clock, SystemClock
from services.dedup import SeenUpdates, Unconfirmed
from services.fast_lane import FastLane
from services.filters import AskAgainLater
from services.i18n import LANGUAGES, make_i18n
from services.lottery_board import LotteryBoard
from services.middlewares import (
    MemberWritten,
    PondI18nMiddleware,
    TrackingMiddleware,
    settle_writes,
)
from services.operators import AdminCache, OperatorPolicy
from services.outbox import Outbox
from services.shared import ADMINS, CLOSED_ITEM, NO_PEERS, POND, building_with
from services.shop_memo import ClosedItems
from services.shortcuts import Shortcuts
from services.tasks import DailyTasks
from services.trust import PondGate
from services.weather import describe, is_transient
from storage.batch import BatchWriter
from storage.db import Database
from storage.models import PondStatus, utcnow
from storage.schema import at_head

if TYPE_CHECKING:
    from aiohttp import web

    from services.shared.redis_state import SharedState

log = logging.getLogger(__name__)
T = TypeVar("T")

# What the routers handle (votes use buttons, not native polls); `chat_member` must be asked
# for by name.
ALLOWED_UPDATES = [
    "message",
    "callback_query",
    "my_chat_member",
    "chat_member",
]


def build_bot(token: str, api_base: str | None = None) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_base)) if api_base else None
    return Bot(token, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))


def build_dispatcher(
    *,
    db: Database,
    outbox: Outbox,
    operator_ids: frozenset[int] = frozenset(),
    default_timezone: str = "Asia/Shanghai",
    default_language: str = "zh",
    admins: AdminCache | None = None,
    scheduler: Scheduler | None = None,
    shared: SharedState | None = None,
    clock: Callable[[], datetime] = utcnow,
    monotonic: Callable[[], float] = time.monotonic,
) -> Dispatcher:
    """`shared`: the state several instances share (Redis); None: one process.
    `clock`, `monotonic`: the wall clock and the clock of the caches' lifetimes."""
    admins = admins or AdminCache(clock=monotonic)
    scheduler = scheduler or Scheduler(db)
    i18n = make_i18n(default_language)
    register_jobs(scheduler, JobDeps(db=db, outbox=outbox, i18n=i18n))
    writer = BatchWriter(db)  # merges many members' small writes into one transaction
    operators = OperatorPolicy(operator_ids, admins)
    gate = PondGate(db, operators, outbox, i18n, clock=monotonic)  # which groups are ponds (F1)
    tracking = TrackingMiddleware(
        db,
        gate=gate,
        default_timezone=default_timezone,
        default_language=default_language,
        writer=writer,
        clock=monotonic,
    )
    dp = Dispatcher(
        disable_fsm=True,  # no handler keeps conversation state: no per-update FSM lookup
        db=db,
        outbox=outbox,
        admins=admins,
        operators=operators,
        gate=gate,
        tracking=tracking,
        scheduler=scheduler,
        writer=writer,
        boards=BoardKeeper(db, outbox, i18n),
        lottery_board=LotteryBoard(db, outbox, i18n),
        # a /redeem storm on a sold-out item stays in memory
        closed_items=ClosedItems(clock=monotonic),
        # the day's task list and its bonus (F13)
        daily_tasks=DailyTasks(db, outbox, monotonic=monotonic),
        clock=clock,  # the wall clock handlers read (tests and the demo put another here)
    )
    if shared is not None:
        _share(dp, shared, admins, tracking)
    dp.update.outer_middleware(SeenUpdates(shared=shared.seen if shared is not None else None))
    for observer in (dp.message, dp.callback_query):
        observer.outer_middleware(tracking)
        observer.middleware(MemberWritten())
    PondI18nMiddleware(i18n).setup(dp)  # after tracking: it reads the pond's language
    for observer in (dp.message, dp.callback_query):
        observer.outer_middleware(AskAgainLater())  # in the language: "try again in a minute"
    shortcuts = dp["shortcuts"] = Shortcuts()
    dp.callback_query.outer_middleware(shortcuts)  # last: presser recorded, language set
    with building_with(shared.peers if shared is not None else NO_PEERS):
        dp.include_routers(*setup_routers(shortcuts))
    # Storm paths straight to their handler: the update's last middleware (see there).
    dp.update.outer_middleware(FastLane(dp))
    return dp


def _share(
    dp: Dispatcher, shared: SharedState, admins: AdminCache, tracking: TrackingMiddleware
) -> None:
    """Several instances: one member's updates take turns across them (the turns of
    `bot.polling`: a member's own lane, or the whole chat's for a command or a chat-wide
    event); what a cache drops here is dropped in the others (and the other way round)."""
    from bot.polling import _chat_of, _person_of

    dp.update.outer_middleware(shared.order(lambda u: (_chat_of(u), _person_of(u))))
    peers, closed_items = shared.peers, dp["closed_items"]
    admins.peers = tracking.peers = closed_items.peers = peers
    peers.on(ADMINS, admins.invalidate)
    peers.on(POND, lambda chat: tracking.forget_pond(chat) if chat else tracking.forget_ponds())
    peers.on(CLOSED_ITEM, closed_items.forget)
    dp["boards"].pacing = dp["lottery_board"].pacing = shared.pacing


async def set_commands(bot: Bot, default_language: str) -> None:
    """Members see the member commands; group admins also see the operator ones."""
    i18n = make_i18n(default_language)
    for lang in LANGUAGES:
        with i18n.context(), i18n.use_locale(lang):
            members = [
                BotCommand(command=c, description=texts.command_description(d))
                for c, d in texts.MEMBER_COMMANDS
            ]
            ops = members + [
                BotCommand(command=c, description=texts.command_description(d))
                for c, d in texts.OPERATOR_COMMANDS
            ]
        code = None if lang == default_language else lang
        await bot.set_my_commands(members, scope=BotCommandScopeDefault(), language_code=code)
        await bot.set_my_commands(
            ops, scope=BotCommandScopeAllChatAdministrators(), language_code=code
        )


@dataclass(frozen=True)
class Clocks:
    """The clocks a running bot reads: the real ones, or `pondbot demo`'s virtual time."""

    pacing: Clock = field(default_factory=SystemClock)  # the outbox's budgets and waits
    wall: Callable[[], datetime] = utcnow  # handlers, the games' deadlines, the scheduler
    epoch: Callable[[], float] = time.time  # the outbox journal's lines
    alarms: Callable[[], Any] = wall_clock_alarms  # what wakes the scheduler's runs


@dataclass
class App:
    settings: Settings
    db: Database
    bot: Bot
    outbox: Outbox
    dp: Dispatcher
    scheduler: Scheduler


def chat_refused(db: Database) -> Callable[[int, str], Awaitable[None]]:
    """What to remember when a chat answers 403: a group that removed the bot is an
    inactive pond; a member who blocked the bot no longer has a linked DM (their game
    answers go to the group until they /start the bot again)."""
    from storage import repo

    async def refused(chat_id: int, description: str) -> None:
        async with db.transaction() as session:
            if chat_id < 0:
                await repo.set_pond_status(session, chat_id, PondStatus.inactive)
            else:
                await repo.link_dm(session, chat_id, linked=False)
        if chat_id < 0:
            log.warning("chat %s refused our messages (%s): pond marked inactive",
                        chat_id, description)
        else:
            log.info("user %s refused private messages (%s): DM unlinked", chat_id, description)

    return refused


def outbox_journal(db: Database) -> Path | None:
    """Beside a SQLite file: the outbox's record of the last minute's group sends, so a
    restarted bot keeps within Telegram's 20 a minute per group."""
    name = db.url.database if db.is_sqlite else None
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    path = Path(name).expanduser().resolve()
    return path.with_name(path.name + "-outbox.journal")


@asynccontextmanager
async def create_app(settings: Settings, clocks: Clocks | None = None) -> AsyncIterator[App]:
    """Create every resource, and release them all on the way out."""
    clocks = clocks or Clocks()
    token = settings.token()
    webapp_url = settings.webapp_address()  # checked before anything starts
    db = Database(settings.database_url)
    # alembic only when the schema is not plainly at head (storage/schema.py: memory)
    if await at_head(db):
        pass
    elif settings.auto_migrate:
        from storage.migrate import aupgrade

        await aupgrade(settings.database_url)
    else:
        from storage.migrate import ais_up_to_date

        if not await ais_up_to_date(settings.database_url):
            await db.dispose()
            raise SystemExit("The database schema is out of date: run `pondbot migrate` first.")
    bot = build_bot(token, settings.telegram_api_base)

    async def on_migrated(old: int, new: int) -> None:
        from storage import repo

        async with db.transaction() as session:
            await repo.migrate_pond(session, old, new)

    shared = await _connect_shared(settings)
    outbox = Outbox(
        bot, on_forbidden=chat_refused(db), on_migrated=on_migrated, journal=outbox_journal(db),
        budget=shared.budget if shared is not None else None,
        clock=clocks.pacing, wall=clocks.epoch,
    )
    scheduler = Scheduler(db, clock=clocks.wall, alarms=clocks.alarms)
    dp = build_dispatcher(
        db=db,
        outbox=outbox,
        operator_ids=settings.operator_ids,
        default_timezone=settings.tz,
        default_language=settings.locale,
        scheduler=scheduler,
        shared=shared,
        clock=clocks.wall,
        monotonic=clocks.pacing.monotonic,
    )
    dp["webapp_url"] = webapp_url  # what /me's button opens (F15)
    await outbox.start()
    try:
        yield App(settings, db, bot, outbox, dp, scheduler)
    finally:
        await scheduler.stop()
        # Background work ends while the database is still there: a board refresh is
        # dropped (the next check-in redraws it), queued writes are committed.
        await dp["boards"].aclose()
        await dp["lottery_board"].aclose()
        await dp["writer"].idle()
        await outbox.stop()
        if shared is not None:
            await shared.close()
        await bot.session.close()
        await db.dispose()


async def _connect_shared(settings: Settings) -> SharedState | None:
    """The state shared with the other instances, with `REDIS_URL` (never logged: it
    may hold a password); None without it."""
    if settings.redis_url is None or not settings.redis_url.get_secret_value().strip():
        return None
    from services.shared.redis_state import SharedState

    shared = SharedState.from_url(settings.redis_url.get_secret_value().strip())
    try:
        await shared.start()
    except Exception as exc:
        await shared.close()
        raise SystemExit(f"Redis (REDIS_URL) does not answer: {type(exc).__name__}") from None
    log.info("shared state in Redis: instance %s", shared.instance)
    return shared


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _started(
    what: str, call: Callable[[], Awaitable[T]], bot: Bot, stop: asyncio.Event
) -> T | None:
    """A start-up call the bot cannot serve without: tried until it succeeds, whatever
    Telegram answers meanwhile (one warning line a try), except a 401 (the token is
    wrong: nothing to wait for). None if `stop` is set first."""
    delay = 1.0
    while not stop.is_set():
        try:
            return await call()
        except TelegramUnauthorizedError:
            raise
        except TelegramRetryAfter as exc:
            wait = float(exc.retry_after)
            log.warning("%s: 429, retrying in %.0fs", what, wait)
        except Exception as exc:
            wait = delay
            log.warning(
                "%s failed (%s); retrying in %.0fs",
                what,
                describe(exc, bot.token, trace=not _known(exc)),
                wait,
            )
            delay = min(delay * 2, 30.0)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
    return None


async def keep_setting_commands(bot: Bot, default_language: str, *, delay: float = 5.0) -> None:
    """`setMyCommands` in the background, retried until Telegram takes it: the command
    menu is a convenience, serving does not wait for it. A request Telegram refuses
    for good (a 400) is logged and not repeated."""
    while True:
        try:
            await set_commands(bot, default_language)
        except TelegramRetryAfter as exc:
            wait = float(exc.retry_after)
            log.warning("setMyCommands: 429, retrying in %.0fs", wait)
        except Exception as exc:
            if not is_transient(exc):
                log.error("setMyCommands failed: %s", describe(exc, bot.token))
                return
            wait = delay
            log.warning(
                "setMyCommands failed (%s); retrying in %.0fs", describe(exc, bot.token), wait
            )
            delay = min(delay * 2, 300.0)
        else:
            return
        await asyncio.sleep(wait)


def _known(exc: BaseException) -> bool:
    """A failure one line describes: Telegram's answer, or its weather."""
    return isinstance(exc, TelegramAPIError) or is_transient(exc)


@asynccontextmanager
async def _background(coro: Awaitable[None], name: str) -> AsyncIterator[None]:
    task = asyncio.ensure_future(coro)
    task.set_name(name)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def serve_polling(
    settings: Settings, stop: asyncio.Event, clocks: Clocks | None = None
) -> None:
    """Serve by long polling until `stop` is set."""
    from bot.polling import poll

    async with create_app(settings, clocks) as app:
        me = await _started("getMe", app.bot.get_me, app.bot, stop)
        if me is None:
            return
        log.info("pondbot @%s starting (long polling)", me.username)
        dropped = await _started(
            "deleteWebhook",
            lambda: app.bot.delete_webhook(drop_pending_updates=False),
            app.bot,
            stop,
        )
        if dropped is None:
            return
        async with _background(
            keep_setting_commands(app.bot, settings.locale), "set-commands"
        ), _member_page(app):
            await app.dp.emit_startup(bot=app.bot)
            await app.scheduler.start()
            tune_gc()
            try:
                await poll(app.dp, app.bot, allowed_updates=ALLOWED_UPDATES, stop=stop)
            finally:
                await app.dp.emit_shutdown(bot=app.bot)
        log.info("pondbot stopped")


def _member_page(app: App) -> AbstractAsyncContextManager[object]:
    """Polling mode: the members' page's own server when `WEBAPP_URL` is set. Without
    it aiohttp's server side is never loaded (about 1.5 MB an idle bot does not hold)."""
    if app.settings.webapp_address() is None:
        return nullcontext()
    from bot.webapp import member_page_server

    return member_page_server(app.settings, db=app.db, outbox=app.outbox, token=app.bot.token)


async def run_polling(settings: Settings) -> None:
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    await serve_polling(settings, stop)


HEALTH_TIMEOUT = 2.0  # seconds the health check gives the database to answer


def secret_matches(given: str, secret: str) -> bool:
    """The webhook's secret token compared in constant time, as bytes (any header value
    is refused cleanly, not with an error)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), secret.encode("utf-8", "surrogateescape")
    )


async def database_answers(db: Database) -> bool:
    """Whether the database answers a trivial query within `HEALTH_TIMEOUT`."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT), db.transaction(readonly=True) as session:
            await session.execute(sa_text("SELECT 1"))
    except Exception:
        return False
    return True


def build_webhook_app(app: App, secret: str) -> web.Application:
    """The aiohttp application Telegram posts updates to, and the load balancer's
    health check (`GET /healthz`).

    A request without the right secret token gets a 401 and changes nothing. An update
    is handled before the answer (never in the background), and what it queued in the
    batch writer is committed first: a 200 means its effects are durable, so a crash
    means redelivery, not loss. An update the database failed gets a 503, so Telegram
    delivers it again (`services.dedup`)."""
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
    from aiohttp import web

    class SettlingRequestHandler(SimpleRequestHandler):
        def verify_secret(self, telegram_secret_token: str, bot: Bot) -> bool:
            return secret_matches(telegram_secret_token, secret)

        async def handle(self, request: web.Request) -> web.Response:
            response = await super().handle(request)
            await settle_writes(self.dispatcher)
            return response

        async def _handle_request(self, bot: Bot, request: web.Request) -> web.Response:
            update = Update.model_validate(
                await request.json(loads=bot.session.json_loads), context={"bot": bot}
            )
            try:
                result = await self.dispatcher.feed_update(bot, update, **self.data)
            except Unconfirmed:
                # The database failed it (logged): Telegram is to deliver it again.
                return web.Response(status=503, text="not handled; deliver again")
            except Exception:
                log.exception("update %s was not handled", update.update_id)
                result = None
            method = result if isinstance(result, TelegramMethod) else None
            return web.Response(body=self._build_response_writer(bot=bot, result=method))

    async def health(_request: web.Request) -> web.Response:
        up = await database_answers(app.db)
        body = {
            "ok": up,
            "database": "up" if up else "down",
            "scheduler_leader": app.scheduler.leading,
            "instance": app.scheduler.instance,
        }
        return web.json_response(body, status=200 if up else 503)

    web_app = web.Application()
    SettlingRequestHandler(
        dispatcher=app.dp, bot=app.bot, secret_token=secret, handle_in_background=False
    ).register(web_app, path=app.settings.webhook_path)
    web_app.router.add_get(app.settings.health_path, health)
    if app.settings.webapp_address() is not None:  # the members' page (F15)
        from bot.webapp import add_member_page

        add_member_page(web_app, db=app.db, outbox=app.outbox, token=app.bot.token,
                        default_language=app.settings.locale)
    setup_application(web_app, app.dp, bot=app.bot)
    return web_app


async def register_webhook(app: App, url: str, secret: str) -> None:
    """`setWebhook` (the URL, the secret, `max_connections`, the update types the bot
    handles), tried until Telegram takes it. Run by the scheduler's leader only, each
    time an instance takes the lead: one call per takeover, not one per instance."""
    stop = asyncio.Event()
    done = await _started(
        "setWebhook",
        lambda: app.bot.set_webhook(
            url,
            secret_token=secret,
            max_connections=app.settings.webhook_max_connections,
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,
        ),
        app.bot,
        stop,
    )
    if done:
        log.info("webhook registered (max_connections=%d)", app.settings.webhook_max_connections)


async def run_webhook(settings: Settings) -> None:
    from aiohttp import web

    secret = settings.webhook_secret_value()
    url = settings.webhook_endpoint()
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    async with create_app(settings) as app:
        me = await _started("getMe", app.bot.get_me, app.bot, stop)
        if me is None:
            return
        web_app = build_webhook_app(app, secret)

        async def on_lead() -> None:
            await register_webhook(app, url, secret)
            await keep_setting_commands(app.bot, settings.locale)

        app.scheduler.on_lead.append(on_lead)
        runner = web.AppRunner(web_app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.webhook_host, settings.webhook_port)
            await site.start()
            log.info(
                "pondbot @%s serving the webhook on %s:%s",
                me.username,
                settings.webhook_host,
                settings.webhook_port,
            )
            # Listening first: the leader registers the webhook once it leads.
            if not await app.scheduler.start():
                log.info("another instance leads: it registers the webhook")
            tune_gc()
            await stop.wait()
        finally:
            await runner.cleanup()
