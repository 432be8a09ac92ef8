"""Shared state of several instances in Redis (`REDIS_URL`).

* **Updates handled** (`SharedSeen`, used by `services.dedup.SeenUpdates`): an update is
  claimed (`SET NX`, `busy_ttl` seconds) before it is handled and marked done once it
  was (`done_ttl`: Telegram keeps an update for 24 h). Another instance that gets it
  skips it when it is done, and answers "not handled" (Telegram delivers it again) while
  it is in hand elsewhere. An update the database failed has its claim deleted, so its
  redelivery is handled in full, wherever it lands. A claim left by an instance that
  died runs out after `busy_ttl`.
* **Order** (`MemberOrder`): the turns long polling keeps in one process, across the
  instances: one member's updates one at a time, and a command or a chat-wide event
  alone in its chat (a readers-writer turn per chat in one Lua script; keys named by
  aiogram's `DefaultKeyBuilder`, as `RedisEventIsolation` names its locks — whose plain
  lock per member cannot let a command wait for the whole chat).
* **Send budgets** (`RedisBudget`): one Lua script checks and counts a request against
  the rolling 1 s window over everything, the rolling 60 s window of its group and the
  token bucket of its chat, atomically: N instances together stay inside Telegram's
  limits. Time is Redis's own clock (`TIME`), the same for every instance.
* **Boards** (`RedisPacing`): a pond's board is refreshed once per interval among all
  the instances (the first to get there), not once per interval by each.
* **Board versions** (`RedisBudget.board_turn`): the edits of a red packet's post take
  turns among the instances (one in flight at a time), and one older than an edit
  another instance issued (a progress after the result) is not sent.
* **Cache invalidation** (`RedisPeers`): `tell` publishes on one pub/sub channel; every
  other instance calls what the composition root registered for the topic.

Redis trouble never stops the bot: a failed call is one warning line and the bot goes
on as one process would (an update is handled — the handlers' idempotency keys keep
every effect single —, a request is sent — a 429 parks its lane —, a cache expires
on its own). REDIS_URL may hold a password: it is never logged.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiogram import BaseMiddleware
from aiogram.fsm.storage.base import DefaultKeyBuilder, StorageKey
from aiogram.types import TelegramObject, Update
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from services.outbox import Limits
from services.shared import ChatId, Forget

log = logging.getLogger(__name__)

Claim = Literal["new", "done", "busy"]
Lane = Callable[[Update], tuple[int, int | None]]  # (chat, person; None: the whole chat)

_LIMITS = Limits()  # Telegram's
_WARN_EVERY = 30.0  # seconds between two warnings about the same kind of Redis trouble

# KEYS[1]: the update's key. ARGV[1]: this claim's value, ARGV[2]: its lifetime (s).
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 'new' end
if redis.call('GET', KEYS[1]) == 'done' then return 'done' end
return 'busy'
"""

# KEYS[1]: the update's key; ARGV[1]: the claim to drop (only if it is still ours).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: [1] the global window (a sorted set of issue times), [2] the group's window or
# '' (not a group), [3] the chat's bucket (a hash) or '' (a chat-less method), [4] the
# chat's 429 pause or '', [5] the whole bot's 429 pause (each: the time it ends).
# ARGV: [1] now in seconds ('' : Redis TIME), [2] a unique member name,
# [3] global limit, [4] global span, [5] group limit, [6] group span,
# [7] chat rate (tokens/s), [8] chat burst.
# Returns '0' when counted, else the seconds to wait (nothing counted).
_TAKE = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local wait = 0
local eps = 1e-6  -- waking at the instant computed always succeeds
local function window(key, limit, span)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - span + eps)
  local n = redis.call('ZCARD', key)
  if n >= limit then
    local first = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
    local at = tonumber(first[2]) + span - now
    if at > wait then wait = at end
  end
end
for _, key in ipairs({KEYS[4], KEYS[5]}) do
  if key ~= '' then
    local pause = tonumber(redis.call('GET', key) or '0') - now
    if pause > wait then wait = pause end
  end
end
local glimit, gspan = tonumber(ARGV[3]), tonumber(ARGV[4])
window(KEYS[1], glimit, gspan)
local plimit, pspan = tonumber(ARGV[5]), tonumber(ARGV[6])
if KEYS[2] ~= '' then window(KEYS[2], plimit, pspan) end
local rate, burst = tonumber(ARGV[7]), tonumber(ARGV[8])
local tokens = burst
if KEYS[3] ~= '' then
  local held = redis.call('HMGET', KEYS[3], 't', 'at')
  if held[1] then
    tokens = math.min(burst, tonumber(held[1]) + math.max(0, now - tonumber(held[2])) * rate)
  end
  if tokens < 1 - eps then
    local at = (1 - tokens) / rate
    if at > wait then wait = at end
  end
end
if wait > 0 then return tostring(wait) end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(gspan * 1000) + 1000)
if KEYS[2] ~= '' then
  redis.call('ZADD', KEYS[2], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[2], math.ceil(pspan * 1000) + 1000)
end
if KEYS[3] ~= '' then
  redis.call('HSET', KEYS[3], 't', tokens - 1, 'at', now)
  redis.call('PEXPIRE', KEYS[3], math.ceil(burst / rate * 1000) + 1000)
end
return '0'
"""


# KEYS: [1] the chat's turn, [2] the chat's updates in hand (a sorted set: token ->
# when its hold runs out), [3] the member's turn, or '' for the chat's own turn.
# ARGV: [1] this update's token, [2] the hold in ms. Returns 1 when the turn is ours.
_ENTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold = tonumber(ARGV[2])
local chat = redis.call('GET', KEYS[1])
if chat and chat ~= ARGV[1] then return 0 end
if KEYS[3] ~= '' then
  if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', hold) then return 0 end
  redis.call('ZADD', KEYS[2], now + hold, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], hold)
  return 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', hold)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
return 1
"""

_LEAVE = """
if KEYS[3] ~= '' then
  if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
  redis.call('ZREM', KEYS[2], ARGV[1])
elseif redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""


# KEYS: [1] the newest version issued of a board, [2] the board's edit in flight.
# ARGV: [1] this version, [2] this edit's token, [3] the longest an edit is in flight (ms).
# Returns 1 (the turn is ours), 0 (a newer version was issued), -1 (wait).
_BOARD_EDIT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local newest = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) < newest then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400)
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS[1]: a 429 pause (the time it ends); ARGV: [1] now ('' : Redis TIME), [2] seconds.
_PARK = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local seconds = tonumber(ARGV[2])
local ends = math.max(now + seconds, tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('SET', KEYS[1], tostring(ends), 'PX', math.ceil((ends - now) * 1000) + 1000)
return 1
"""

# KEYS[1]: the board's turn; ARGV: [1] this instance, [2] the interval in ms.
_BOARD_TURN = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return math.max(1, redis.call('PTTL', KEYS[1]))
"""


class _Warner:
    """One warning line per kind of Redis trouble every `_WARN_EVERY` seconds."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def __call__(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last.get(what, -_WARN_EVERY) >= _WARN_EVERY:
            self._last[what] = now
            log.warning("redis: %s failed (%s); going on without it", what, type(exc).__name__)


def _is_group(chat: ChatId) -> bool:
    return isinstance(chat, str) or chat < 0


class SharedSeen:
    """Which updates some instance has handled, or has in hand (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        instance: str,
        busy_ttl: int = 30,
        done_ttl: int = 86_400,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._busy = f"busy:{instance}"
        self.busy_ttl = busy_ttl
        self.done_ttl = done_ttl
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._warn = _Warner()

    def _key(self, bot_id: int, update_id: int) -> str:
        return f"{self._prefix}:upd:{bot_id}:{update_id}"

    async def claim(self, bot_id: int, update_id: int) -> Claim | None:
        """`new` (claimed here: handle it), `done` (handled: skip it), `busy` (in hand
        elsewhere); None when Redis did not answer (handle it: nothing is known)."""
        try:
            held = await self._claim(
                keys=[self._key(bot_id, update_id)], args=[self._busy, self.busy_ttl]
            )
        except (RedisError, OSError) as exc:
            self._warn("claiming an update", exc)
            return None
        answer = held.decode() if isinstance(held, bytes) else str(held)
        if answer in ("new", "done", "busy"):
            return answer  # type: ignore[return-value]
        return "busy"

    async def done(self, bot_id: int, update_id: int) -> None:
        try:
            await self._redis.set(self._key(bot_id, update_id), "done", ex=self.done_ttl)
        except (RedisError, OSError) as exc:
            self._warn("marking an update handled", exc)

    async def release(self, bot_id: int, update_id: int) -> None:
        """Forget this instance's claim: the update's redelivery is handled in full."""
        try:
            await self._release(keys=[self._key(bot_id, update_id)], args=[self._busy])
        except (RedisError, OSError) as exc:
            self._warn("releasing an update", exc)


class MemberOrder(BaseMiddleware):
    """The turns of `bot.polling.handle_batch`, across instances: one member's updates
    one at a time, members of one chat side by side; a command or a chat-wide event
    (`lane` says None for its person) alone in its chat — it waits for the members'
    updates in hand, and the chat's new updates wait for it.

    In Redis: a member's update holds the member's key and a token in the chat's set of
    updates in hand; the chat's turn holds the chat's key (taken at once, so that no new
    update of the chat starts) and begins when that set is empty. Every hold runs out
    after `hold` seconds (an instance that died holds nothing for long). An update waits
    at most `wait` seconds for its turn and is then handled anyway (logged)."""

    def __init__(
        self,
        redis: Redis,
        lane: Lane,
        *,
        prefix: str,
        instance: str = "",
        hold: float = 20.0,
        wait: float = 25.0,
        poll: float = 0.01,
    ) -> None:
        self._redis = redis
        self._lane = lane
        self._keys = DefaultKeyBuilder(prefix=prefix, with_destiny=True)
        self._instance = instance or uuid.uuid4().hex[:8]
        self._serial = itertools.count()
        self._hold_ms = int(hold * 1000)
        self._wait = wait
        self._poll = poll
        self._enter = redis.register_script(_ENTER)
        self._leave = redis.register_script(_LEAVE)
        self._warn = _Warner()

    def keys(self, bot_id: int, update: Update) -> list[str]:
        """[the chat's turn, the chat's updates in hand, the member's turn or '']."""
        chat, person = self._lane(update)

        def key(user: int, destiny: str) -> str:
            at = StorageKey(bot_id=bot_id, chat_id=chat, user_id=user, destiny=destiny)
            return self._keys.build(at, "lock")

        member = "" if person is None else key(person, "order")
        return [key(0, "order"), key(0, "order_in_hand"), member]

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        keys = self.keys(data["bot"].id, event)
        token = f"{self._instance}:{next(self._serial)}"
        entered = await self._take(keys, token, event.update_id)
        try:
            return await handler(event, data)
        finally:
            if entered is not None:
                try:
                    await self._leave(keys=keys, args=[token])
                except (RedisError, OSError) as exc:
                    self._warn("ending a turn", exc)

    async def _take(self, keys: list[str], token: str, update_id: int) -> bool | None:
        """True once the turn is ours; False when it was not within `wait` (what was
        taken is let go on the way out); None when Redis did not answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        pause = self._poll
        while True:
            try:
                if await self._enter(keys=keys, args=[token, self._hold_ms]):
                    return True
            except (RedisError, OSError) as exc:
                self._warn("taking a turn", exc)
                return None
            if loop.time() >= deadline:
                log.warning("update %s waited %.0fs for its turn: handled anyway",
                            update_id, self._wait)
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.1)


class RedisBudget:
    """Telegram's limits counted in Redis for every instance (see the module docstring).

    A request counts from the moment it is issued for `group_window + slack` seconds in
    its group's window and `global_window + global_slack` in the global one: Telegram
    counts it at some instant before its answer. `clock` (seconds) replaces Redis's own
    clock in tests."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        instance: str,
        limits: Limits = _LIMITS,
        slack: float = 1.0,
        global_slack: float = 0.1,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._instance = instance
        self._limits = limits
        self._slack = slack
        self._global_slack = global_slack
        self._clock = clock
        self._take = redis.register_script(_TAKE)
        self._park = redis.register_script(_PARK)
        self._board_edit = redis.register_script(_BOARD_EDIT)
        self._board_done = redis.register_script(_RELEASE)
        self._serial = itertools.count()
        self._warn = _Warner()

    async def take(self, chat: ChatId | None, *, bulk: bool = False) -> float:
        limits = self._limits
        keys = [
            f"{self._prefix}:send:all",
            f"{self._prefix}:send:group:{chat}" if chat is not None and _is_group(chat) else "",
            f"{self._prefix}:send:chat:{chat}" if chat is not None else "",
            self._pause_key(chat) if chat is not None else "",
            self._pause_key(None),
        ]
        args: list[str | int | float] = [
            "" if self._clock is None else repr(self._clock()),
            f"{self._instance}:{next(self._serial)}",
            limits.global_per_second - (limits.shared_bulk_headroom if bulk else 0),
            limits.global_window + self._global_slack,
            limits.group_per_minute,
            limits.group_window + self._slack,
            limits.per_chat_rate,
            limits.per_chat_burst,
        ]
        try:
            wait = await self._take(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._warn("counting a send", exc)
            return 0.0  # this instance's own budgets still hold; a 429 parks the lane
        return float(wait)

    def _board_keys(self, board: str) -> list[str]:
        return [f"{self._prefix}:board_version:{board}", f"{self._prefix}:board_edit:{board}"]

    async def board_turn(self, board: str, version: int) -> str | None:
        token = f"{self._instance}:{next(self._serial)}"
        try:
            turn = await self._board_edit(
                keys=self._board_keys(board), args=[version, token, 30_000]
            )
        except (RedisError, OSError) as exc:
            self._warn("taking a board's turn", exc)
            return token  # not held by anyone: giving it back does nothing
        return token if turn == 1 else ("" if turn == 0 else None)

    async def board_done(self, board: str, token: str) -> None:
        try:
            await self._board_done(keys=self._board_keys(board)[1:], args=[token])
        except (RedisError, OSError) as exc:
            self._warn("ending a board's turn", exc)

    def _pause_key(self, chat: ChatId | None) -> str:
        return f"{self._prefix}:send:pause:{'all' if chat is None else chat}"

    async def pause(self, chat: ChatId | None, seconds: float) -> None:
        try:
            await self._park(
                keys=[self._pause_key(chat)],
                args=["" if self._clock is None else repr(self._clock()), seconds],
            )
        except (RedisError, OSError) as exc:
            self._warn("sharing a 429", exc)


class RedisPacing:
    """`BoardPacing` in Redis: a key per board that lives one interval."""

    def __init__(self, redis: Redis, *, prefix: str, instance: str) -> None:
        self._prefix = prefix
        self._instance = instance
        self._turn = redis.register_script(_BOARD_TURN)
        self._warn = _Warner()

    async def turn(self, board: str, chat_id: int, interval: float) -> float:
        key = f"{self._prefix}:board:{board.replace(' ', '_')}:{chat_id}"
        try:
            wait = await self._turn(keys=[key], args=[self._instance, int(interval * 1000)])
        except (RedisError, OSError) as exc:
            self._warn("pacing a board", exc)
            return 0.0  # this instance's own pacing still holds
        return int(wait) / 1000


class RedisPeers:
    """`Peers` over one Redis pub/sub channel (see `services.shared.Peers`)."""

    def __init__(self, redis: Redis, *, prefix: str, instance: str) -> None:
        self._redis = redis
        self._channel = f"{prefix}:peers"
        self._instance = instance
        self._topics: dict[str, list[Forget]] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._receiving = False
        self._warn = _Warner()
        self.heard = 0  # messages from other instances acted on

    def on(self, topic: str, forget: Forget) -> None:
        self._topics.setdefault(topic, []).append(forget)

    def tell(self, topic: str, key: Any) -> None:
        if self._receiving:
            return  # dropping what another instance told: it told everyone already
        message = json.dumps({"from": self._instance, "topic": topic, "key": key})
        try:
            task = asyncio.get_running_loop().create_task(self._publish(message))
        except RuntimeError:  # no loop: nothing is running that could be told
            return
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish(self, message: str) -> None:
        try:
            await self._redis.publish(self._channel, message)
        except (RedisError, OSError) as exc:
            self._warn("telling the other instances", exc)

    async def start(self, within: float = 5.0) -> None:
        """Listen to the other instances; returns once subscribed (or after `within` s)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="redis-peers")
        try:
            await asyncio.wait_for(self._subscribed.wait(), within)
        except TimeoutError:
            log.warning("redis: not subscribed to the other instances yet; going on")

    async def flush(self) -> None:
        """Wait for what was told so far to be published."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._subscribed.set()
                    delay = 0.5
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            self._heard(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # RedisError, OSError: try again after a pause
                self._warn("listening to the other instances", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _heard(self, raw: Any) -> None:
        try:
            message = json.loads(raw)
            topic, key, sender = message["topic"], message["key"], message["from"]
        except (TypeError, ValueError, KeyError):
            return
        if sender == self._instance:
            return
        self._receiving = True
        try:
            for forget in self._topics.get(topic, ()):
                try:
                    forget(key)
                except Exception:
                    log.exception("dropping %s %r told by another instance failed", topic, key)
        finally:
            self._receiving = False
        self.heard += 1


class SharedState:
    """Everything the instances share, over one Redis client."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "pondbot",
        instance: str | None = None,
        limits: Limits = _LIMITS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.instance = instance or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.seen = SharedSeen(redis, prefix=prefix, instance=self.instance)
        self.budget = RedisBudget(
            redis, prefix=prefix, instance=self.instance, limits=limits, clock=clock
        )
        self.peers = RedisPeers(redis, prefix=prefix, instance=self.instance)
        self.pacing = RedisPacing(redis, prefix=prefix, instance=self.instance)

    @classmethod
    def from_url(cls, url: str, *, connections: int = 64, **kwargs: Any) -> SharedState:
        """A client for `url` (not connected yet; the URL is never logged). At most
        `connections` at once: a storm's updates wait for one rather than fail."""
        pool = BlockingConnectionPool.from_url(
            url, max_connections=connections, timeout=10,
            socket_timeout=5.0, socket_connect_timeout=5.0,
        )
        return cls(Redis(connection_pool=pool), **kwargs)

    def order(self, lane: Lane) -> MemberOrder:
        return MemberOrder(self.redis, lane, prefix=self.prefix, instance=self.instance)

    async def start(self) -> None:
        """Check that Redis answers (a wrong REDIS_URL stops the start) and listen."""
        await self.redis.ping()
        await self.peers.start()

    async def close(self) -> None:
        await self.peers.close()
        await self.redis.aclose(close_connection_pool=True)
