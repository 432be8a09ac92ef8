"""The one way pondbot talks into chats: a budgeted, fair, fault-tolerant outbox.

Telegram allows about 1 message/s per chat (short bursts pass), 20 messages/min per
group and about 30 messages/s overall, and answers 429 beyond that; aiogram does not
retry. Handlers therefore never call the Bot API for chat messages themselves: after
their transaction commits they hand the method to `Outbox.send` (or `Outbox.board` for
an in-place board edit) and the outbox issues it when every budget allows.

* Each chat is a FIFO lane: a chat's next request waits until the previous one is done.
* Lanes are served round-robin, up to `concurrency` requests in flight, so one busy pond
  never starves the others.
* Budgets: a per-chat token bucket, a rolling 60 s window per group (negative chat ids
  and `@usernames`) and a rolling 1 s window over everything. Edits count like
  messages. A request counts from the moment it is issued until a window after
  Telegram answered it (the bucket refills from the answer on): Telegram counts it at
  some instant in between, so network and server delays can never make a request that
  the outbox thought in budget arrive over the limit.
* 429 parks the lane (or, for a chat-less method, the whole outbox) for `retry_after`
  and then resends the same request; 403 drops the chat until `reactivate`; a group
  migrated to a supergroup has its lane re-targeted; 5xx, an HTML page instead of JSON,
  a timeout or a dropped connection (`bot.weather.is_transient`) back off exponentially
  up to `Limits.max_attempts`; any other error fails that request only (a failed pin,
  a courtesy, is one warning line).
* Bulk requests (`send(..., bulk=True)`: a broadcast's copies, targeted DMs) take what
  the interactive requests leave: each pass of the worker serves every lane whose next
  request is interactive first, then the bulk ones, so a broadcast runs at whatever of
  the ~30/s the live ponds do not use (no pace of its own) while their replies and
  boards never wait behind it. Bulk leaves `Limits.bulk_headroom` places of the global
  window and one of the `concurrency` places free, so an interactive request finds a
  place at once even while a broadcast fills the rest, and bulk requests are issued
  evenly spread (at most one per 1/`global_per_second` s) rather than as a burst each
  time the window turns over, so the places that free up for the live ponds come
  every few tens of milliseconds, not once a second. Bulk lanes are served in the
  order their requests were queued, and a chat parked by a 429 is retried as soon as
  its `retry_after` passes, ahead of the copies queued after it, not after them. In a
  chat, bulk requests queue behind the interactive ones.
* Callback answers are not chat messages: `answer` sends them at once, outside all of
  the above.
* A chat's queue is bounded (`Limits.max_queue_per_chat`). Ordinary replies are sent
  `droppable`: one that waited longer than `Limits.stale_after` (nobody reads a reply to
  a command typed minutes ago) is dropped instead of sent, and when the queue is full
  the stale ones go first, then the oldest droppable one (the newer replies supersede
  it). Everything else — game posts, results, codes, scheduled posts — is never dropped
  (board edits are coalesced instead); a full queue of those only grows. It also goes
  ahead of the replies queued in its chat, so a busy pond's game post does not wait
  behind answers to /points; each kind keeps its own order.
* Budgets outlive the process: with a `journal` file, every request to a group is
  written there as it is issued (one line, flushed to the kernel, so even SIGKILL keeps
  it), and a new outbox starts with the last minute's group sends of the one before it —
  a bot restarted in a busy pond does not send its 21st message of the minute.
* Several instances share Telegram's limits: with a `budget` (`services.shared.
  SendBudget`, kept in Redis) every request also asks it right before it is issued and
  waits, in its lane, until every instance together may send it. Without one nothing
  is asked (no await is added).
* A request may carry a `before_issue` hook, awaited right before it is issued (after
  every budget and turn): a broadcast records there, durably, that its message is now on
  the wire, so a crash leaves in doubt only the requests actually issued, never the ones
  still waiting in a queue. The hook returns False to withdraw the request (its future
  gets None); if it fails (the database is down) the request is put back and tried
  again later, like a 5xx, and is never issued without it. Without a hook nothing is
  awaited.
* Nothing that handles an update waits for its chat's queue: a post whose message id
  must be stored (a game's post) goes through `post`, which records the answer in a
  tracked background task; `stop` waits for those briefly.

All waiting goes through an injected `Clock`, so tests run in virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramRetryAfter,
)
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageCaption,
    EditMessageReplyMarkup,
    EditMessageText,
    PinChatMessage,
    TelegramMethod,
)
from aiogram.types import Message

from services.clock import Clock, FakeClock, SystemClock
from services.lru import LRU
from services.shared import SendBudget
from services.weather import describe, is_transient

__all__ = [
    "Clock",
    "FakeClock",
    "Limits",
    "Outbox",
    "OutboxClosedError",
    "OutboxStats",
    "SystemClock",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
ChatId = int | str
# Methods without a chat (inline-message edits, bot-wide settings) share one lane.
LaneKey = ChatId | None
BoardEdit = EditMessageText | EditMessageReplyMarkup | EditMessageCaption

# Float slack for "has the window/bucket freed up yet" so that waking exactly at the
# computed instant always succeeds (virtual time adds floats).
_EPS = 1e-9
_NOT_MODIFIED = "message is not modified"
_BACKOFF_BASE = 1.0
_BACKOFF_CAP = 60.0
# A journaled send is counted this long after it was issued (Telegram counts it at some
# instant before its answer).
_JOURNAL_SLACK = 1.0
_JOURNAL_COMPACT_EVERY = 5_000  # lines appended before the file is rewritten
_RECORD_ATTEMPTS = 5  # a post's answer is recorded within 1 + 2 + 4 + 8 s of retries
_ANSWER_ATTEMPTS = 3
_ANSWER_BACKOFF = 0.5
_ANSWERED_KEPT = 50_000
_BOARD_POLL = 0.02  # seconds between two looks at a board another instance is editing


class OutboxClosedError(RuntimeError):
    """Raised by `send`/`board` after `stop()`."""


@dataclass(frozen=True)
class Limits:
    per_chat_rate: float = 1.0  # messages/s per chat (token bucket refill)
    per_chat_burst: int = 3
    group_per_minute: int = 20  # rolling 60 s window, group chats
    global_per_second: int = 30  # rolling 1 s window, all chats
    max_attempts: int = 5  # 5xx / network errors; 429s retry without limit
    group_window: float = 60.0
    global_window: float = 1.0
    max_queue_per_chat: int = 50  # droppable requests make room beyond this
    stale_after: float = 180.0  # a droppable request queued longer is not sent
    bulk_headroom: int = 1  # places of the global window bulk requests leave free
    # Several instances (a shared budget): places of the shared 30/s window bulk requests
    # leave to every instance's interactive ones, which one process cannot put first.
    shared_bulk_headroom: int = 3


@dataclass
class OutboxStats:
    sent: int = 0  # successful requests
    retried_429: int = 0
    retried_errors: int = 0  # 5xx / network retries
    dropped_forbidden: int = 0  # requests dropped because the chat is forbidden
    migrated: int = 0  # chats re-targeted after a supergroup migration
    failed: int = 0  # futures failed with an exception
    coalesced: int = 0  # board edits folded into a still-queued edit
    not_modified: int = 0  # "message is not modified" answers swallowed
    answers: int = 0
    answers_failed: int = 0
    max_queue_depth: int = 0
    dropped_stale: int = 0  # droppable requests that waited longer than `stale_after`
    dropped_full: int = 0  # droppable requests dropped to keep a chat's queue bounded
    dropped_at_stop: int = 0  # droppable requests still queued when the outbox stopped
    posts_recorded: int = 0  # `post` answers recorded
    posts_unrecorded: int = 0  # `post` answers whose record failed
    per_chat: dict[ChatId, int] = field(default_factory=dict)  # sent per chat


@dataclass(eq=False)
class _Item:
    method: TelegramMethod[Any]
    futures: list[asyncio.Future[Any]]
    board_key: str | None = None
    attempts: int = 0  # failed attempts with 5xx / network errors
    droppable: bool = False  # an ordinary reply: dropped when stale or to make room
    queued_at: float = 0.0
    version: int | None = None  # a board edit's version: an older one never follows it
    # Awaited once, right before the request is first issued (see `send`).
    before_issue: Callable[[], Awaitable[bool]] | None = None
    bulk: bool = False  # served with what the interactive requests leave (see `send`)

    def wanted(self) -> bool:
        return any(not f.done() for f in self.futures)

    def resolve(self, result: Any) -> None:
        for fut in self.futures:
            if not fut.done():
                fut.set_result(result)

    def fail(self, exc: BaseException) -> None:
        for fut in self.futures:
            if not fut.done():
                fut.set_exception(exc)
                # Nobody may be awaiting a fire-and-forget send; the error is logged.
                fut.exception()

    def cancel(self) -> None:
        for fut in self.futures:
            fut.cancel()


@dataclass(eq=False)
class _Lane:
    key: LaneKey
    tokens: float
    refilled_at: float
    items: deque[_Item] = field(default_factory=deque)
    busy: bool = False
    parked_until: float = 0.0
    window: deque[float] = field(default_factory=deque)  # answer times, groups only


def _is_group(key: LaneKey) -> bool:
    return isinstance(key, str) or (isinstance(key, int) and key < 0)


def _chat_of(method: TelegramMethod[Any]) -> LaneKey:
    chat_id = getattr(method, "chat_id", None)
    return chat_id if isinstance(chat_id, int | str) else None


def _rank(item: _Item) -> int:
    """A request's place in its chat's queue: what must arrive, then ordinary replies,
    then bulk copies."""
    return 2 if item.bulk else int(item.droppable)


def _is_edit(method: TelegramMethod[Any]) -> bool:
    return method.__api_method__.startswith("edit")


class Outbox:
    def __init__(
        self,
        bot: Bot,
        *,
        limits: Limits = Limits(),
        clock: Clock | None = None,
        on_forbidden: Callable[[int, str], Awaitable[None]] | None = None,
        on_migrated: Callable[[int, int], Awaitable[None]] | None = None,
        concurrency: int = 8,
        journal: Path | None = None,
        wall: Callable[[], float] = time.time,
        budget: SendBudget | None = None,
    ) -> None:
        """`journal`: a file that keeps the group sends of the last minute across
        restarts (see the module docstring); `wall`: the wall clock its lines use;
        `budget`: the limits shared with other instances."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._bot = bot
        self._limits = limits
        self._clock: Clock = clock or SystemClock()
        self._on_forbidden = on_forbidden
        self._on_migrated = on_migrated
        self._concurrency = concurrency

        # Lanes with queued items, in round-robin order (served lanes move to the end).
        self._ring: OrderedDict[LaneKey, None] = OrderedDict()
        self._lanes: dict[LaneKey, _Lane] = {}
        self._boards: dict[str, _Item] = {}
        self._forbidden: set[ChatId] = set()
        self._moved: dict[ChatId, int] = {}
        self._global_window: deque[float] = deque()  # answer times
        self._global_in_flight = 0  # issued, not yet answered: they count too
        self._bulk_in_flight = 0  # of the requests in flight, the bulk ones
        self._bulk_at = 0.0  # the earliest the next bulk request may be issued
        self._global_parked_until = 0.0
        self._collected_at = self._clock.monotonic()
        self._queued = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._posting: set[str] = set()  # keys of `post`s queued, in flight or recording
        self._records: set[asyncio.Task[None]] = set()
        self._stats = OutboxStats()
        self._answered: LRU[str, None] = LRU(_ANSWERED_KEPT)  # callback queries answered

        self._journal_path = journal
        self._journal: IO[str] | None = None
        self._journaled: deque[tuple[ChatId, float]] = deque()  # (group, wall time)
        self._journal_lines = 0
        self._wall = wall
        self._budget = budget
        self.budget_waits = 0  # requests that waited for the budget shared by the instances

        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._next_at: float | None = None  # when the worker looks again (None: on a wake)
        self._passed = asyncio.Event()  # set after every pass of the worker
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise OutboxClosedError("outbox was stopped")
        if self._journal_path is not None and self._journal is None:
            self._resume_journal(self._journal_path)
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="outbox-worker")

    def _resume_journal(self, path: Path) -> None:
        """Count the last minute's group sends of earlier processes, then keep the file
        to those and append to it from now on."""
        now_wall, now = self._wall(), self._clock.monotonic()
        span = self._limits.group_window
        try:
            lines = path.read_text("utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as exc:
            log.warning("outbox journal %s unreadable (%s): starting afresh", path, exc)
            lines = []
        for line in lines:
            chat, _, at = line.partition(" ")
            try:
                key: ChatId = int(chat) if chat.lstrip("-").isdigit() else chat
                wall_at = float(at)
            except ValueError:
                continue  # a line cut short by a crash
            if now_wall - wall_at < span:
                self._journaled.append((key, wall_at))
        for key, wall_at in sorted(self._journaled, key=lambda e: e[1]):
            counted = now - (now_wall - wall_at) + _JOURNAL_SLACK
            self._lane(key).window.append(min(now, counted))  # the window stays sorted
        if self._journaled:
            log.info(
                "outbox: %d group send(s) of the last minute carried over", len(self._journaled)
            )
        self._rewrite_journal(path)

    def _rewrite_journal(self, path: Path) -> None:
        if self._journal is not None:
            self._journal.close()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{k} {t:.3f}\n" for k, t in self._journaled), "utf-8")
        tmp.replace(path)
        self._journal = path.open("a", encoding="utf-8", buffering=1)  # line-buffered
        self._journal_lines = 0

    def _journal_send(self, key: ChatId) -> None:
        if self._journal is None or self._journal_path is None:
            return
        now_wall = self._wall()
        try:
            self._journal.write(f"{key} {now_wall:.3f}\n")
            self._journaled.append((key, now_wall))
            while self._journaled and self._journaled[0][1] <= now_wall - self._limits.group_window:
                self._journaled.popleft()
            self._journal_lines += 1
            if self._journal_lines >= _JOURNAL_COMPACT_EVERY:
                self._rewrite_journal(self._journal_path)
        except OSError as exc:  # a full disk must not stop the sending
            log.warning("outbox journal write failed (%s): no longer journaling", exc)
            self._journal = None

    async def stop(self, *, drain_timeout: float = 5.0) -> None:
        """Send what is queued within `drain_timeout` (clock seconds), then cancel.

        Droppable requests still queued are dropped first (ordinary replies: what is
        left of a busy pond's queue is posts and results, which get the time). Requests
        still queued afterwards have their futures cancelled. Safe to call twice; `send`
        after `stop` raises `OutboxClosedError`.
        """
        if self._closed:
            return
        self._closed = True
        self._shed_droppable()
        if self._worker is not None and not self._idle.is_set():
            await self._drain(drain_timeout)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        left = 0
        for lane in self._lanes.values():
            for item in lane.items:
                left += 1
                item.cancel()
            lane.items.clear()
        if left:
            log.warning("outbox stopped with %d request(s) unsent", left)
        self._ring.clear()
        self._boards.clear()
        self._queued = 0
        self._idle.set()
        await self._finish_records(drain_timeout)
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _shed_droppable(self) -> None:
        for lane in self._lanes.values():
            kept = deque(i for i in lane.items if not i.droppable)
            shed = len(lane.items) - len(kept)
            if shed:
                for item in lane.items:
                    if item.droppable:
                        item.resolve(None)
                lane.items = kept
                self._queued -= shed
                self._stats.dropped_at_stop += shed
        self._wake.set()

    async def _drain(self, seconds: float) -> None:
        """Wait until everything queued is sent, for at most `seconds` on the clock —
        and no longer than needed: once nothing is in flight and the next request may
        not go before the deadline (a busy pond's budget is spent), waiting is no use."""
        deadline = self._clock.monotonic() + seconds
        while not self._idle.is_set():
            left = deadline - self._clock.monotonic()
            if left <= 0:
                return
            if not self._in_flight and self._next_at is not None and self._next_at > deadline:
                return
            self._passed.clear()  # the worker sets it after its next pass (and idle)
            await self._wait(self._passed, left)

    async def _finish_records(self, seconds: float) -> None:
        """Let the answers of posts already sent be recorded (each is one short
        transaction), for at most `seconds` on the clock (1 s at least); then cancel
        the rest."""
        await asyncio.sleep(0)  # done-callbacks of futures resolved just now
        if self._records:
            done = asyncio.ensure_future(
                asyncio.wait(set(self._records), return_when=asyncio.ALL_COMPLETED)
            )
            sleeper = asyncio.ensure_future(self._clock.sleep(max(seconds, 1.0)))
            try:
                await asyncio.wait({done, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                done.cancel()
        for task in list(self._records):
            task.cancel()
        if self._records:
            log.warning("outbox stopped with %d post answer(s) unrecorded", len(self._records))
            await asyncio.gather(*self._records, return_exceptions=True)

    # -- enqueueing ------------------------------------------------------------------

    def send(
        self,
        method: TelegramMethod[T],
        *,
        droppable: bool = False,
        before_issue: Callable[[], Awaitable[bool]] | None = None,
        bulk: bool = False,
    ) -> asyncio.Future[T | None]:
        """Queue a chat-targeted method; the future gets its result.

        The result is None when the request was dropped (the chat is forbidden, or a
        `droppable` request went stale or made room in a full queue) or an edit was
        answered "message is not modified". Other failures set the exception.

        `before_issue` is awaited right before the request is first issued, once every
        budget allows it: True lets it go, False withdraws it (the result is None); an
        exception puts it back in its lane, tried again later (and after
        `Limits.max_attempts` failures the request fails with that exception). A
        retried request (5xx, 429) does not await it again.

        `bulk` (a broadcast's copy): issued only with what the interactive requests
        leave of the budgets, after them in its chat, in the order the bulk ones came.
        """
        fut: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        item = _Item(self._retarget(method), [fut], droppable=droppable, bulk=bulk)
        item.before_issue = before_issue
        self._enqueue(item)
        return fut

    def post(
        self,
        method: TelegramMethod[T],
        *,
        key: str,
        record: Callable[[T], Awaitable[None]],
    ) -> asyncio.Future[T | None] | None:
        """Queue a post (never dropped) and, once Telegram answered it, run
        `record(result)` — storing the post's message id — in a tracked task of its own.

        Nobody waits for the chat's queue: the caller returns at once, and the answer is
        recorded whenever it comes (`stop` gives those records a moment to finish).
        `key` names the post (`rp:12`): while a post with that key is queued, in flight
        or being recorded in this process, another one is not queued (None is returned),
        so a command delivered again meanwhile cannot post twice.
        """
        if key in self._posting:
            return None
        fut = self.send(method)
        self._posting.add(key)

        def answered(done: asyncio.Future[T | None]) -> None:
            if done.cancelled() or done.exception() is not None or done.result() is None:
                self._posting.discard(key)  # failed or dropped: the caller may post again
                return
            task = asyncio.ensure_future(self._record(key, record, done.result()))
            self._records.add(task)
            task.add_done_callback(self._records.discard)

        fut.add_done_callback(answered)
        return fut

    async def _record(
        self, key: str, record: Callable[[Any], Awaitable[None]], result: Any
    ) -> None:
        """Run `record` until it succeeds, a few times (a database failover must not
        leave a post whose id is never stored: presses on it would stay "not ready",
        and the next start would post it again); `record` must be idempotent."""
        try:
            for attempt in range(1, _RECORD_ATTEMPTS + 1):
                try:
                    await record(result)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if attempt == _RECORD_ATTEMPTS:
                        self._stats.posts_unrecorded += 1
                        log.error(
                            "recording the answer to post %s failed: %s",
                            key,
                            self._describe(exc),
                        )
                        return
                    delay = _BACKOFF_BASE * 2 ** (attempt - 1)
                    log.warning(
                        "recording the answer to post %s failed (%s); retry in %ss",
                        key,
                        type(exc).__name__,
                        delay,
                    )
                    await self._clock.sleep(delay)
                else:
                    self._stats.posts_recorded += 1
                    return
        finally:
            self._posting.discard(key)

    def posting(self, key: str) -> bool:
        """Whether a `post` with this key is on its way (or its answer being recorded)."""
        return key in self._posting

    async def call(self, method: TelegramMethod[T]) -> T | None:
        """`send` and wait for the result."""
        return await self.send(method)

    def board(
        self, key: str, method: BoardEdit, *, version: int | None = None
    ) -> asyncio.Future[Message | bool | None]:
        """Queue an in-place edit of a board, coalesced by `key`.

        If an edit for `key` is still waiting (not issued yet) in the same chat, it is
        replaced by this newer content and both futures resolve with the one result.
        `version` (with a shared budget): an edit older than one another instance has
        issued for `key` is dropped when its turn comes (its futures get None).
        """
        fut: asyncio.Future[Message | bool | None] = asyncio.get_running_loop().create_future()
        edit = self._retarget(method)
        queued = self._boards.get(key)
        if queued is not None and _chat_of(queued.method) == _chat_of(edit):
            queued.method = edit
            queued.version = version
            queued.futures.append(fut)
            self._stats.coalesced += 1
            return fut
        item = _Item(edit, [fut], board_key=key, version=version)
        self._enqueue(item)
        if not fut.done():
            self._boards[key] = item
        return fut

    async def answer(self, method: AnswerCallbackQuery) -> bool:
        """Answer a callback query right now (no queue, no chat budget); False on error.

        A query is answered once: answering the same id again (its update handled anew
        after the database failed it) is skipped. A transient failure (5xx, an HTML
        page, a timeout, a dropped connection) is tried again twice within ~1.5 s: a
        query must be answered within about 15 s of the press."""
        query_id = method.callback_query_id
        if query_id in self._answered:
            return True
        attempt = 0
        while True:
            attempt += 1
            try:
                ok = await self._bot(method)
            except Exception as exc:
                if is_transient(exc) and attempt < _ANSWER_ATTEMPTS:
                    log.info("callback answer: %s; trying again", self._describe(exc))
                    await self._clock.sleep(_ANSWER_BACKOFF * attempt)
                    continue
                self._stats.answers_failed += 1
                if isinstance(exc, TelegramAPIError) and not is_transient(exc):
                    log.info("callback answer failed: %s", self._scrub(exc.message))
                elif is_transient(exc):
                    log.warning("callback answer failed: %s", self._describe(exc))
                else:
                    log.error("callback answer failed: %s", self._describe(exc))
                return False
            break
        self._answered.put(query_id, None)
        self._stats.answers += 1
        return bool(ok)

    def reactivate(self, chat_id: int) -> None:
        """Allow sending to a chat again (the bot was re-added after a 403)."""
        self._forbidden.discard(chat_id)

    # -- inspection ------------------------------------------------------------------

    @property
    def stats(self) -> OutboxStats:
        return replace(self._stats, per_chat=dict(self._stats.per_chat))

    def pending(self, chat_id: int | None = None) -> int:
        """Requests queued or in flight (for one chat; or for all, with the answers of
        posts still being recorded)."""
        if chat_id is None:
            busy = sum(1 for lane in self._lanes.values() if lane.busy)
            return self._queued + busy + len(self._records)
        lane = self._lanes.get(chat_id)
        return 0 if lane is None else len(lane.items) + int(lane.busy)

    def is_forbidden(self, chat_id: int) -> bool:
        return chat_id in self._forbidden

    def load(self, chat_id: ChatId) -> int:
        """How busy a chat is: requests issued to it within the last group window (groups
        only) plus those still queued. Lets a feature stay quiet in busy ponds."""
        lane = self._lanes.get(chat_id)
        if lane is None:
            return 0
        self._trim(lane.window, self._clock.monotonic(), self._limits.group_window)
        return len(lane.window) + int(lane.busy) + len(lane.items)

    # -- internals: queue ------------------------------------------------------------

    def _retarget(self, method: TelegramMethod[T]) -> TelegramMethod[T]:
        chat = _chat_of(method)
        if chat is None or chat not in self._moved:
            return method
        while chat in self._moved:
            chat = self._moved[chat]
        return method.model_copy(update={"chat_id": chat})

    def _lane(self, key: LaneKey) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = _Lane(
                key=key,
                tokens=float(self._limits.per_chat_burst),
                refilled_at=self._clock.monotonic(),
            )
            self._lanes[key] = lane
        return lane

    def _enqueue(self, item: _Item) -> None:
        if self._closed:
            raise OutboxClosedError("outbox was stopped")
        key = _chat_of(item.method)
        if key is not None and key in self._forbidden:
            self._stats.dropped_forbidden += 1
            item.resolve(None)
            return
        lane = self._lane(key)
        item.queued_at = self._clock.monotonic()
        if key is not None and len(lane.items) >= self._limits.max_queue_per_chat:
            self._make_room(lane, item.queued_at)
            if len(lane.items) >= self._limits.max_queue_per_chat and item.droppable:
                self._stats.dropped_full += 1
                item.resolve(None)
                return
        if item.bulk or not lane.items or _rank(lane.items[-1]) <= _rank(item):
            lane.items.append(item)
        else:
            # What must arrive (a game's post, a result, a scheduled post) goes ahead of
            # the ordinary replies queued in its chat: in a busy pond a vote's post must
            # not wait minutes behind answers to /points. Both go ahead of a broadcast's
            # copy. Each kind keeps its own order.
            rank = _rank(item)
            ahead = next(i for i, queued in enumerate(lane.items) if _rank(queued) > rank)
            lane.items.insert(ahead, item)
        self._ring.setdefault(key, None)
        self._queued += 1
        self._stats.max_queue_depth = max(self._stats.max_queue_depth, self._queued)
        self._idle.clear()
        self._wake.set()

    def _stale(self, item: _Item, now: float) -> bool:
        return item.droppable and now - item.queued_at > self._limits.stale_after + _EPS

    def _make_room(self, lane: _Lane, now: float) -> None:
        """A full lane sheds what is stale, else its oldest droppable request; the order
        of what stays is kept. Requests that may not be dropped are never touched."""
        stale = [i for i in lane.items if self._stale(i, now)]
        dropped = stale
        if not stale:
            oldest = next((i for i in lane.items if i.droppable), None)
            dropped = [] if oldest is None else [oldest]
        if not dropped:
            return
        gone = set(dropped)
        lane.items = deque(i for i in lane.items if i not in gone)
        self._queued -= len(dropped)
        self._stats.dropped_stale += len(stale)
        self._stats.dropped_full += len(dropped) - len(stale)
        for item in dropped:
            item.resolve(None)

    def _drop_lane(self, key: ChatId) -> int:
        lane = self._lanes.get(key)
        if lane is None:
            return 0
        dropped = len(lane.items)
        for item in lane.items:
            self._forget_board(item)
            item.resolve(None)
        self._queued -= dropped
        lane.items.clear()
        self._ring.pop(key, None)
        if not lane.busy:
            self._lanes.pop(key, None)
        return dropped

    def _forget_board(self, item: _Item) -> None:
        if item.board_key is not None and self._boards.get(item.board_key) is item:
            del self._boards[item.board_key]

    # -- internals: budgets ----------------------------------------------------------

    def _refill(self, lane: _Lane, now: float) -> None:
        limits = self._limits
        if now > lane.refilled_at:
            lane.tokens = min(
                float(limits.per_chat_burst),
                lane.tokens + (now - lane.refilled_at) * limits.per_chat_rate,
            )
            lane.refilled_at = now

    @staticmethod
    def _trim(window: deque[float], now: float, span: float) -> None:
        while window and window[0] <= now - span + _EPS:
            window.popleft()

    def _ready_at(self, lane: _Lane, now: float, *, bulk: bool = False) -> float:
        """The earliest time `lane` may issue its next request (<= now: right away); a
        `bulk` one leaves `Limits.bulk_headroom` places of the global window free and
        keeps its distance from the bulk request before."""
        limits = self._limits
        at = max(lane.parked_until, self._global_parked_until)
        if lane.key is not None:
            self._refill(lane, now)
            if lane.tokens < 1.0 - _EPS:
                at = max(at, now + (1.0 - lane.tokens) / limits.per_chat_rate)
            if _is_group(lane.key):
                self._trim(lane.window, now, limits.group_window)
                if len(lane.window) >= limits.group_per_minute:
                    index = len(lane.window) - limits.group_per_minute
                    at = max(at, lane.window[index] + limits.group_window)
        self._trim(self._global_window, now, limits.global_window)
        allowed = limits.global_per_second
        if bulk:
            allowed = max(1, allowed - limits.bulk_headroom)
            at = max(at, self._bulk_at)
        if self._global_in_flight >= allowed:
            return math.inf  # a finishing request wakes the worker
        counted = len(self._global_window) + self._global_in_flight
        if counted >= allowed:
            index = counted - allowed
            at = max(at, self._global_window[index] + limits.global_window)
        return at

    def _charge(self, lane: _Lane) -> None:
        """Count a request being issued; `_settle` moves the count to its answer."""
        self._global_in_flight += 1
        if lane.key is not None:
            lane.tokens -= 1.0
            if _is_group(lane.key):
                self._journal_send(lane.key)

    def _settle(self, lane: _Lane) -> None:
        """Count an answered request at the moment of its answer, not of its issue."""
        now = self._clock.monotonic()
        self._global_in_flight -= 1
        self._global_window.append(now)
        if lane.key is not None:
            lane.refilled_at = max(lane.refilled_at, now)  # no refill while in flight
            if _is_group(lane.key):
                lane.window.append(now)

    # -- internals: worker -----------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                self._wake.clear()
                next_at = self._dispatch()
                self._next_at = next_at
                self._passed.set()
                if next_at is None:
                    await self._wake.wait()
                else:
                    await self._wait(self._wake, next_at - self._clock.monotonic())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the worker must outlive any bug in one pass
                log.error("outbox worker pass failed: %s", self._describe(exc))
                await self._clock.sleep(1.0)

    def _dispatch(self) -> float | None:
        """Issue every request that may go now; return when to look again (None: idle).

        Two rounds over the lanes: those whose next request is interactive, then those
        whose next request is bulk, with what the first round left."""
        next_at: float | None = None
        now = self._clock.monotonic()
        if now - self._collected_at >= self._limits.group_window:
            self._collect_idle_lanes(now)
        bulk_places = self._concurrency - 1 if self._concurrency > 1 else 1
        has_bulk = False
        for bulk in (False, True):
            if bulk and not has_bulk:
                break
            for key in list(self._ring):
                if len(self._in_flight) >= self._concurrency:
                    return next_at  # a finishing request sets the wake event
                if bulk and self._bulk_in_flight >= bulk_places:
                    break  # a finishing request sets the wake event
                lane = self._lanes.get(key)
                if lane is not None:
                    self._withdraw_cancelled(lane, now)
                if lane is None or not lane.items:
                    self._ring.pop(key, None)
                    continue
                if lane.items[0].bulk != bulk:
                    has_bulk = has_bulk or lane.items[0].bulk
                    continue
                if lane.busy:
                    continue
                now = self._clock.monotonic()
                at = self._ready_at(lane, now, bulk=bulk)
                if at > now + _EPS:
                    if at != math.inf:
                        next_at = at if next_at is None else min(next_at, at)
                    continue
                self._start(lane, lane.items.popleft())
        if not self._in_flight and self._queued == 0:
            self._idle.set()
        return next_at

    def _start(self, lane: _Lane, item: _Item) -> None:
        """Issue `item`, just taken from the head of `lane`, in a task of its own."""
        self._queued -= 1
        self._forget_board(item)
        if not lane.items:
            self._ring.pop(lane.key, None)
        else:
            self._ring.move_to_end(lane.key)
        self._charge(lane)
        if item.bulk:
            self._bulk_in_flight += 1
            spacing = self._limits.global_window / self._limits.global_per_second
            self._bulk_at = self._clock.monotonic() + spacing
        lane.busy = True
        task = asyncio.create_task(self._issue(lane, item))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _collect_idle_lanes(self, now: float) -> None:
        """Forget lanes whose budgets have fully recovered (their state is the default)."""
        self._collected_at = now
        limits = self._limits
        refill_time = limits.per_chat_burst / limits.per_chat_rate
        for key, lane in list(self._lanes.items()):
            if (
                not lane.busy
                and not lane.items
                and now >= lane.parked_until
                and now - lane.refilled_at >= refill_time
                and (not lane.window or lane.window[-1] <= now - limits.group_window)
            ):
                del self._lanes[key]

    def _withdraw_cancelled(self, lane: _Lane, now: float) -> None:
        """Drop requests at the head of a lane whose every caller has cancelled, or
        that are droppable and went stale while they waited."""
        while lane.items:
            head = lane.items[0]
            if head.wanted() and not self._stale(head, now):
                return
            lane.items.popleft()
            self._forget_board(head)
            self._queued -= 1
            if head.wanted():
                self._stats.dropped_stale += 1
                head.resolve(None)

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        """Wait for `event` or `seconds` on the clock, whichever comes first."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    def _requeue(self, lane: _Lane, item: _Item) -> None:
        """Put `item` back at the head of its lane (it keeps its place in FIFO order)."""
        key = _chat_of(item.method)
        target = lane if key == lane.key else self._lane(key)
        target.items.appendleft(item)
        self._ring.setdefault(target.key, None)
        if item.bulk:
            # Bulk lanes are served in ring order: one put back (its chat parked by a
            # 429) goes first, so it is retried as soon as its chat may be sent to
            # again, not after every copy queued meanwhile.
            self._ring.move_to_end(target.key, last=False)
        self._queued += 1
        if item.board_key is not None and item.board_key not in self._boards:
            self._boards[item.board_key] = item

    async def _issue(self, lane: _Lane, item: _Item) -> None:
        method = item.method
        key = lane.key
        board_turn: str | None = None  # this edit's turn at its board among the instances
        try:
            if self._budget is not None:
                await self._shared_turn(self._budget, key, bulk=item.bulk)
                board_turn = await self._board_turn(self._budget, item)
                if board_turn == "":  # another instance issued a newer version
                    self._resolve(key, item, None, count=False)
                    return
            if item.before_issue is not None and not await self._cleared(lane, item):
                return
            result = await self._bot(method)
        except TelegramRetryAfter as exc:
            self._stats.retried_429 += 1
            until = self._clock.monotonic() + exc.retry_after
            if key is None:
                self._global_parked_until = max(self._global_parked_until, until)
            else:
                lane.parked_until = max(lane.parked_until, until)
            log.info(
                "429 on %s in chat %s: retry in %ss", method.__api_method__, key, exc.retry_after
            )
            self._requeue(lane, item)
            if self._budget is not None:  # the other instances wait as well
                await self._budget.pause(key, exc.retry_after)
        except TelegramForbiddenError as exc:
            await self._forbidden_chat(key, item, exc.message)
        except TelegramMigrateToChat as exc:
            await self._migrate(lane, item, exc.migrate_to_chat_id)
        except TelegramBadRequest as exc:
            if _NOT_MODIFIED in exc.message.lower() and _is_edit(method):
                self._stats.not_modified += 1
                self._resolve(key, item, None, count=False)
            else:
                self._fail(key, item, exc, warn=True)
        except asyncio.CancelledError:
            item.cancel()
            raise
        except Exception as exc:
            # 5xx, an HTML page instead of JSON, a timeout, a dropped connection: weather.
            if is_transient(exc):
                self._retry_later(lane, item, exc)
            else:
                self._fail(key, item, exc, warn=isinstance(exc, TelegramEntityTooLarge))
        else:
            self._resolve(key, item, result)
        finally:
            if board_turn and self._budget is not None and item.board_key is not None:
                await self._budget.board_done(item.board_key, board_turn)
            self._settle(lane)
            if item.bulk:
                self._bulk_in_flight -= 1
            lane.busy = False
            # Free the concurrency slot now, not in a done-callback one loop turn later,
            # so the worker woken below sees it.
            current = asyncio.current_task()
            if current is not None:
                self._in_flight.discard(current)
            if not self._in_flight and self._queued == 0:
                self._idle.set()
            self._wake.set()

    async def _cleared(self, lane: _Lane, item: _Item) -> bool:
        """Await the item's `before_issue` hook: whether the request may be issued now.
        A withdrawn request is resolved with None; one whose hook failed is put back."""
        assert item.before_issue is not None
        try:
            go = await item.before_issue()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._retry_later(lane, item, exc)
            return False
        if not go:
            self._resolve(lane.key, item, None, count=False)
            return False
        item.before_issue = None  # done: a retry of the same request goes straight out
        return True

    async def _board_turn(self, budget: SendBudget, item: _Item) -> str | None:
        """A versioned board edit waits while another instance's edit of the board is
        in flight, so the two cannot arrive out of order: its turn (a token to give
        back), or "" when a newer version was issued meanwhile. None: not versioned."""
        if item.board_key is None or item.version is None:
            return None
        while True:
            turn = await budget.board_turn(item.board_key, item.version)
            if turn is not None:
                return turn
            await self._clock.sleep(_BOARD_POLL)

    async def _shared_turn(self, budget: SendBudget, key: LaneKey, *, bulk: bool) -> None:
        """Wait until the budget shared by every instance counts this request."""
        while (wait := await budget.take(key, bulk=bulk)) > 0:
            self.budget_waits += 1
            await self._clock.sleep(wait)

    def _resolve(self, key: LaneKey, item: _Item, result: Any, *, count: bool = True) -> None:
        if count:
            self._stats.sent += 1
            if key is not None:
                self._stats.per_chat[key] = self._stats.per_chat.get(key, 0) + 1
        item.resolve(result)

    def _fail(self, key: LaneKey, item: _Item, exc: Exception, *, warn: bool) -> None:
        self._stats.failed += 1
        warn = warn or isinstance(item.method, PinChatMessage)  # a pin is a courtesy
        log.log(
            logging.WARNING if warn else logging.ERROR,
            "%s to chat %s failed: %s",
            item.method.__api_method__,
            key,
            self._describe(exc),
        )
        item.fail(exc)

    def _scrub(self, text: str) -> str:
        """Remove the bot token from text bound for the log (it is in every API URL)."""
        return text.replace(self._bot.token, "<token>")

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TelegramAPIError) or is_transient(exc):
            return describe(exc, self._bot.token)  # one line: a known kind of failure
        return self._scrub("".join(traceback.format_exception(exc)).rstrip())

    def _retry_later(self, lane: _Lane, item: _Item, exc: Exception) -> None:
        item.attempts += 1
        if item.attempts >= self._limits.max_attempts:
            self._fail(lane.key, item, exc, warn=False)
            return
        self._stats.retried_errors += 1
        delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (item.attempts - 1))
        lane.parked_until = max(lane.parked_until, self._clock.monotonic() + delay)
        log.info(
            "%s to chat %s: %s; attempt %d, retry in %ss",
            item.method.__api_method__,
            lane.key,
            self._describe(exc),
            item.attempts,
            delay,
        )
        self._requeue(lane, item)

    async def _forbidden_chat(self, key: LaneKey, item: _Item, description: str) -> None:
        if key is None:  # no chat to stop sending to: a plain failure
            item.resolve(None)
            self._stats.dropped_forbidden += 1
            return
        self._forbidden.add(key)
        self._forget_board(item)
        item.resolve(None)
        dropped = self._drop_lane(key)
        self._stats.dropped_forbidden += 1 + dropped
        log.warning(
            "chat %s is forbidden (%s); dropped %d queued", key, self._scrub(description), dropped
        )
        if self._on_forbidden is not None and isinstance(key, int):
            try:
                await self._on_forbidden(key, description)
            except Exception as exc:
                log.error("on_forbidden(%s) failed: %s", key, self._describe(exc))

    async def _migrate(self, lane: _Lane, item: _Item, new_id: int) -> None:
        old = lane.key
        if old is None:
            self._fail(
                old, item, RuntimeError("migration answer for a chat-less method"), warn=True
            )
            return
        self._stats.migrated += 1
        self._moved[old] = new_id
        log.info("chat %s migrated to %s; re-targeting its queue", old, new_id)
        moving = [item, *lane.items]
        self._queued -= len(lane.items)
        lane.items.clear()
        self._ring.pop(old, None)
        target = self._lane(new_id)
        for moved in reversed(moving):
            moved.method = moved.method.model_copy(update={"chat_id": new_id})
            target.items.appendleft(moved)
            self._queued += 1
        self._ring.setdefault(new_id, None)
        if self._on_migrated is not None and isinstance(old, int):
            try:
                await self._on_migrated(old, new_id)
            except Exception as exc:
                log.error("on_migrated(%s, %s) failed: %s", old, new_id, self._describe(exc))
