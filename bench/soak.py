"""Soak: the real `pondbot run` process against the project's Bot API emulator, under
mixed traffic, injected faults and SIGKILLs; then an audit of what it left behind.

    .venv/bin/python bench/soak.py [--minutes 10] [--seed 1] [--rate 20] [--kills-per-minute 3]

2,000 members in 20 ponds check in (`/checkin`, the text 签到, the board's button), guess
prices, vote, grab red packets in storms (dozens of members pressing 🧧 within a second),
send their own packets, ask `/points` and `/top`; an operator in `OPERATOR_IDS` (an
administrator of every pond from the start) drops packets, opens rounds and votes and
`/give`s points. Meanwhile the emulator answers some requests with 429s, 500/502s, HTML
502 pages, dropped connections and 403s (members' DMs; one pond kicks the bot half-way),
and the bot process is killed with SIGKILL at random moments and started again.

When the traffic ends the faults are cleared, the bot is restarted once more (SIGTERM,
then a fresh start), given a quiet period to handle what is queued, and stopped. Then the
SQLite file and the emulator's records are audited: the ledger, awards paid at most once,
callback queries answered at most once, no post twice, no 429 the bot caused itself, and
nothing lost that the emulator delivered. Prints what was injected and one line per check
(`check <name>: <figure> OK|FAIL`, with the evidence under a failed one); exits 1 if any
check fails, keeping the database and the bot's log. The plan (who does what, which
faults, when the kills come) comes from `--seed`; the interleaving with the bot's own
timing varies from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.emulator import Emulator  # noqa: E402

JSON = dict[str, Any]

PONDS = 20
MEMBERS = 2_000
SHARED = 100  # members who are also in a second pond (wallets and check-ins are shop-wide)
OPERATOR = 8_000_001
FIRST_OWNER = 8_100_000
FIRST_MEMBER = 10_000_000
FIRST_POND = -1_007_000_000_000
TIMEZONE = ZoneInfo("Asia/Shanghai")  # every pond's default
MIN_UPTIME = 6.0  # seconds the bot polls before it may be killed again
STORM_DELAY = (1.5, 3.0)  # members see a packet's post before they press
QUIET = 5.0  # seconds without any bot activity (while it could send) that end the drain
OWED_MARGIN = 5.0  # a guess or vote press owed a record came this long before the close
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0  # a clean shutdown finishes within this
TOKEN = re.compile(r"Soak(?:Item|Q)\d+")  # names of the soak's rounds and votes
RETRY_AFTER = re.compile(r"retry after (\d+)")
QUEUED = "never confirmed: still queued at the end"
MESSAGE_METHODS = ("sendMessage", "sendPhoto", "sendPoll", "editMessage", "stopPoll")


def now() -> float:
    return time.monotonic()


def local_day(unix: float) -> date:
    return datetime.fromtimestamp(unix, UTC).astimezone(TIMEZONE).date()


def db_time(value: object) -> datetime:
    """A datetime as SQLAlchemy stores it in SQLite (naive UTC text)."""
    parsed = datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


# -- the bot process --------------------------------------------------------------------


@dataclass
class Run:
    """One life of the bot process (monotonic times)."""

    started: float
    ready: float | None = None
    ended: float | None = None
    how: str = ""  # killed | stopped | exited (on its own) | ""
    returncode: int | None = None
    log_from: int = 0


class BotProcess:
    """`python -m bot run` as tests/e2e/conftest.py starts it, restarted at will; an exit
    the soak did not cause is recorded (with its log) and the bot is started again."""

    def __init__(self, emu: Emulator, workdir: Path) -> None:
        self.emu = emu
        self.workdir = workdir
        self.db_path = workdir / "pond.db"
        self.log_path = workdir / "bot.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(
                ("BOT_", "DATABASE_", "OPERATOR_", "TELEGRAM_", "WEBHOOK_", "REDIS_"))},
            "BOT_TOKEN": emu.token,
            "TELEGRAM_API_BASE": emu.url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{self.db_path}",
            "OPERATOR_IDS": str(OPERATOR),
            "TZ": TIMEZONE.key,  # the ponds' days, which the audit computes too
            "LOCALE": "zh",
            "AUTO_MIGRATE": "true",
            "LOG_LEVEL": "INFO",
        }
        self.runs: list[Run] = []
        self.crashes: list[tuple[Run, str]] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._expected_exit = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start and wait until it polls (or exits, which is recorded)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", cwd=self.workdir, env=self.env,
                stdout=log, stderr=log,
            )
        run = Run(started=now(), log_from=offset)
        self.runs.append(run)
        self._expected_exit = False
        self._watch = asyncio.create_task(self._watch_exit(self._proc, run))
        # Ready once it asks for updates (a backlog is answered at once, so the emulator's
        # `polling`, a waiting getUpdates, may never be seen while there is work).
        requests = self.emu.stats.requests
        polls = requests["getUpdates"]
        deadline = now() + START_TIMEOUT
        while requests["getUpdates"] == polls and self.alive and now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self.alive and requests["getUpdates"] > polls:
            run.ready = now()

    async def _watch_exit(self, proc: asyncio.subprocess.Process, run: Run) -> None:
        code = await proc.wait()
        run.ended, run.returncode = now(), code
        if self._expected_exit:
            return
        run.how = "exited"
        self.crashes.append((run, self.log_since(run.log_from)))

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")

    def logs(self) -> str:
        return self.log_since(0) if self.log_path.exists() else ""

    async def kill(self) -> None:
        if not self.alive:
            return
        assert self._proc is not None and self._watch is not None
        self._expected_exit = True
        self.runs[-1].how = "killed"
        self._proc.send_signal(signal.SIGKILL)
        await self._watch

    async def stop(self) -> str:
        """SIGTERM; how long it took to exit, or that it had to be killed after
        STOP_TIMEOUT, or that it was not running."""
        if not self.alive:
            return "not running"
        assert self._proc is not None and self._watch is not None
        self._expected_exit = True
        self.runs[-1].how = "stopped"
        began = now()
        self._proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self._watch), STOP_TIMEOUT)
        except TimeoutError:
            self.runs[-1].how = "stopped (killed after timeout)"
            self._proc.send_signal(signal.SIGKILL)
            await self._watch
            return f"killed after {STOP_TIMEOUT:.0f} s"
        return f"{now() - began:.1f} s"

    def run_at(self, moment: float) -> Run | None:
        """The process that existed at `moment` (runs never overlap)."""
        for run in self.runs:
            if run.started <= moment and (run.ended is None or moment < run.ended):
                return run
        return None


# -- what the members did (what is owed) ------------------------------------------------


@dataclass
class Sent:
    """One action the emulator turned into an update (or not: bot not in the group)."""

    user_id: int
    chat_id: int
    update_id: int | None
    at: float  # monotonic
    unix: float  # the message's date (for a press: the wall clock)


@dataclass
class PacketPost:
    """A red packet's post as the members saw it, and who pressed its button."""

    packet_id: int
    chat_id: int
    message_id: int
    seen: float
    presses: dict[int, list[tuple[str, Sent]]] = field(default_factory=dict)


@dataclass
class RoundPost:
    """A guess round the operator asked for (named by its product, SoakItem<n>), its
    post once the bot made it, and the members' guesses (message id, sent)."""

    token: str
    chat_id: int
    mode: str
    price: int
    duration: float
    requested: float
    message_id: int | None = None
    seen: float | None = None
    guesses: dict[int, list[tuple[int, Sent]]] = field(default_factory=dict)

    def open_at(self, moment: float) -> bool:
        return self.seen is not None and moment < self.seen + self.duration - 1.0


@dataclass
class VotePost:
    """A vote the operator asked for (named by its question, SoakQ<n>), its post once
    the bot made it, and the members' presses (query id, sent)."""

    token: str
    chat_id: int
    options: int
    duration: float
    requested: float
    vote_id: int | None = None
    message_id: int | None = None
    seen: float | None = None
    presses: dict[int, list[tuple[str, Sent]]] = field(default_factory=dict)

    def open_at(self, moment: float) -> bool:
        return self.seen is not None and moment < self.seen + self.duration - 1.0


@dataclass
class Pond:
    """A soak pond: its owner and members (the operator is an administrator too)."""

    chat_id: int
    owner: int
    members: list[int]
    kicked_at: float | None = None
    board: int | None = None
    round: RoundPost | None = None
    votes: list[VotePost] = field(default_factory=list)
    last_message: dict[int, int] = field(default_factory=dict)  # member -> message id


@dataclass
class Book:
    """Everything the soak did, to be compared with what the bot recorded."""

    checkins: list[tuple[str, Sent]] = field(default_factory=list)  # how, sent
    gives: dict[tuple[int, int], tuple[int, int, Sent]] = field(default_factory=dict)
    packets: dict[int, PacketPost] = field(default_factory=dict)
    rounds: dict[str, RoundPost] = field(default_factory=dict)
    votes: dict[str, VotePost] = field(default_factory=dict)
    first_update: dict[int, int] = field(default_factory=dict)  # member -> update id
    linked: set[int] = field(default_factory=set)  # members who sent /start in a DM
    blocked: set[int] = field(default_factory=set)
    actions: Counter[str] = field(default_factory=Counter)
    faults_asked: Counter[str] = field(default_factory=Counter)
    kills: int = 0


# -- the soak ---------------------------------------------------------------------------


class Soak:
    def __init__(self, emu: Emulator, bot: BotProcess, seed: int, *, rate: float) -> None:
        self.emu = emu
        self.bot = bot
        self.seed = seed
        self.rng = random.Random(f"{seed}:traffic")
        self.rate = rate
        self.book = Book()
        self.ponds: dict[int, Pond] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._cursor = 0
        self._next_token = 1
        self._last_bot_event = now()
        self.traffic_ended = datetime.now(UTC)
        self.quiet = False  # once the traffic has ended: no more storms

    # -- set-up ---------------------------------------------------------------------

    def populate(self) -> None:
        emu = self.emu
        emu.add_user(OPERATOR, "Operator", username="soak_operator")
        members = [FIRST_MEMBER + i for i in range(MEMBERS)]
        for uid in members:
            emu.add_user(uid, f"会员{uid % 100_000}", username=f"m{uid}")
        per_pond = MEMBERS // PONDS
        for p in range(PONDS):
            chat_id = FIRST_POND - p
            owner = FIRST_OWNER + p
            emu.add_user(owner, f"Owner {p}", username=f"owner_{p}")
            own = members[p * per_pond:(p + 1) * per_pond]
            shared = [members[(p + 1) % PONDS * per_pond + i] for i in range(SHARED // PONDS)]
            pond_members = own + shared
            emu.create_group(chat_id, f"Soak pond {p}", members=pond_members,
                             admins=[owner, OPERATOR])
            self.ponds[chat_id] = Pond(chat_id, owner, pond_members)

    def add_bot(self) -> None:
        for pond in self.ponds.values():
            self.emu.add_bot_to_group(pond.chat_id, pond.owner, as_admin=True)

    # -- sending as users -----------------------------------------------------------

    def say(self, pond: Pond, user_id: int, text: str, reply_to: int | None = None) -> tuple[
        Sent, int
    ]:
        message = self.emu.send_message(pond.chat_id, user_id, text, reply_to=reply_to)
        update_id = self._update_of(pond.chat_id, int(message["message_id"]))
        sent = Sent(user_id, pond.chat_id, update_id, now(), float(message["date"]))
        if update_id is not None:
            self.book.first_update.setdefault(user_id, update_id)
        if user_id != OPERATOR:
            pond.last_message[user_id] = int(message["message_id"])
        return sent, int(message["message_id"])

    def press(self, pond: Pond, user_id: int, message_id: int, data: str) -> tuple[
        Sent, str
    ]:
        query_id = self.emu.click(pond.chat_id, user_id, message_id, data)
        event = self.emu.events[-1]
        update_id = event.get("update_id") if event.get("query_id") == query_id else None
        sent = Sent(user_id, pond.chat_id, update_id, now(), time.time())
        if update_id is not None:
            self.book.first_update.setdefault(user_id, int(update_id))
        return sent, query_id

    def _update_of(self, chat_id: int, message_id: int) -> int | None:
        event = self.emu.events[-1]
        if event.get("chat_id") == chat_id and event.get("message_id") == message_id:
            update_id = event.get("update_id")
            return int(update_id) if update_id is not None else None
        return None

    def token(self, prefix: str) -> str:
        self._next_token += 1
        return f"{prefix}{self._next_token}"

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- watching what the bot posts ------------------------------------------------

    def watch(self) -> None:
        """Learn the boards, packets, rounds and votes the bot has posted since last time."""
        events = self.emu.events
        while self._cursor < len(events):
            event = events[self._cursor]
            self._cursor += 1
            if event["actor"] == "bot":
                self._last_bot_event = now()
            if event["kind"] != "bot_message" or event["chat_id"] not in self.ponds:
                continue
            pond = self.ponds[event["chat_id"]]
            text = str(event.get("text") or "")
            for data in callback_data(event.get("reply_markup")):
                kind, _, rest = data.partition(":")
                if kind == "ci":
                    pond.board = int(event["message_id"])
                elif kind == "rp" and rest.isdigit():
                    self._packet_posted(pond, int(rest), int(event["message_id"]))
                elif kind == "vt":
                    self._vote_posted(pond, int(rest.split(":")[0]), event, text)
            if "🏷" in text and pond.round is not None and pond.round.token in tokens_in(text):
                pond.round.message_id = int(event["message_id"])
                pond.round.seen = now()

    def _packet_posted(self, pond: Pond, packet_id: int, message_id: int) -> None:
        known = self.book.packets.get(packet_id)
        if known is not None:
            known.message_id = message_id  # posted again: members press the new one
            return
        post = PacketPost(packet_id, pond.chat_id, message_id, now())
        self.book.packets[packet_id] = post
        if not self.quiet:
            self.spawn(self.storm(pond, post))

    def _vote_posted(self, pond: Pond, vote_id: int, event: JSON, text: str) -> None:
        for vote in pond.votes:
            if vote.token in tokens_in(text) and vote.vote_id in (None, vote_id):
                if vote.seen is None:
                    vote.seen = now()
                vote.vote_id, vote.message_id = vote_id, int(event["message_id"])

    # -- the traffic ----------------------------------------------------------------

    async def traffic(self, until: float) -> None:
        actions: list[tuple[Callable[[Pond], None], float]] = [
            (self.checkin_command, 14), (self.checkin_text, 14), (self.checkin_button, 24),
            (self.guess, 12), (self.vote_press, 10), (self.points, 4), (self.top, 1.5),
            (self.chatter, 5), (self.give, 3), (self.op_packet, 1.2), (self.member_packet, 0.5),
            (self.open_round, 1.0), (self.open_vote, 0.8), (self.dm_start, 1.5),
        ]
        funcs = [a for a, _ in actions]
        weights = [w for _, w in actions]
        ponds = list(self.ponds.values())
        while now() < until:
            self.watch()
            pond = self.rng.choice(ponds)
            self.rng.choices(funcs, weights)[0](pond)
            await asyncio.sleep(self.rng.expovariate(self.rate))

    def member(self, pond: Pond) -> int:
        return self.rng.choice(pond.members)

    def checkin_command(self, pond: Pond) -> None:
        self._checkin(pond, "command", "/checkin")

    def checkin_text(self, pond: Pond) -> None:
        self._checkin(pond, "text", "签到")

    def _checkin(self, pond: Pond, how: str, text: str) -> None:
        sent, _ = self.say(pond, self.member(pond), text)
        self.book.checkins.append((how, sent))
        self.book.actions[f"check-in ({how})"] += 1

    def checkin_button(self, pond: Pond) -> None:
        if pond.board is None:
            self.checkin_command(pond)
            return
        sent, _ = self.press(pond, self.member(pond), pond.board, f"ci:{pond.chat_id}")
        self.book.checkins.append(("button", sent))
        self.book.actions["check-in (button)"] += 1

    def points(self, pond: Pond) -> None:
        self.say(pond, self.member(pond), "/points")
        self.book.actions["/points"] += 1

    def top(self, pond: Pond) -> None:
        self.say(pond, self.member(pond), "/top")
        self.book.actions["/top"] += 1

    def chatter(self, pond: Pond) -> None:
        self.say(pond, self.member(pond), self.rng.choice(["早上好", "hi", "有优惠吗？", "👍"]))
        self.book.actions["chatter"] += 1

    def dm_start(self, pond: Pond) -> None:
        """A member links their DM; now and then one who did blocks the bot."""
        unblocked = sorted(self.book.linked - self.book.blocked)
        if unblocked and self.rng.random() < 0.2:
            user = self.rng.choice(unblocked)
            self.emu.block_bot(user)
            self.book.blocked.add(user)
            self.book.actions["DM blocked"] += 1
            return
        user = self.member(pond)
        if user in self.book.blocked:
            self.emu.block_bot(user, blocked=False)
            self.book.blocked.discard(user)
        self.emu.send_message(user, user, "/start")
        self.book.linked.add(user)
        self.book.actions["DM /start"] += 1

    def give(self, pond: Pond) -> None:
        amount = self.rng.randint(1, 50)
        oldest = self.emu.oldest_pending_update
        known = [u for u in pond.members if u in self.book.first_update and (
            oldest is None or self.book.first_update[u] < oldest)]
        if known and self.rng.random() < 0.5:
            target = self.rng.choice(known)
            sent, message_id = self.say(pond, OPERATOR, f"/give {target} {amount} soak")
            self.book.actions["/give (user id)"] += 1
        elif pond.last_message:
            target = self.rng.choice(sorted(pond.last_message))
            sent, message_id = self.say(
                pond, OPERATOR, f"/give {amount} soak", reply_to=pond.last_message[target]
            )
            self.book.actions["/give (reply)"] += 1
        else:
            return
        if sent.update_id is not None:
            self.book.gives[(pond.chat_id, message_id)] = (target, amount, sent)

    def op_packet(self, pond: Pond) -> None:
        shares = self.rng.randint(5, 40)
        self.say(pond, OPERATOR, f"/redpacket {shares * self.rng.randint(3, 20)} {shares}")
        self.book.actions["/redpacket (operator)"] += 1

    def member_packet(self, pond: Pond) -> None:
        self.say(pond, self.member(pond), f"/redpacket {self.rng.randint(4, 10)} 2 equal")
        self.book.actions["/redpacket (member)"] += 1

    async def storm(self, pond: Pond, post: PacketPost) -> None:
        """Dozens of members press 🧧 within a second, a few of them twice."""
        rng = random.Random(f"{self.seed}:{post.packet_id}")
        await asyncio.sleep(rng.uniform(*STORM_DELAY))
        crowd = rng.sample(pond.members, min(len(pond.members), rng.randint(20, 60)))
        began = now()
        for offset, user in sorted((rng.uniform(0, 1.0), u) for u in crowd):
            await asyncio.sleep(max(0.0, began + offset - now()))
            if pond.kicked_at is not None:
                return
            for _ in range(2 if rng.random() < 0.05 else 1):
                sent, query_id = self.press(pond, user, post.message_id, f"rp:{post.packet_id}")
                post.presses.setdefault(user, []).append((query_id, sent))
                self.book.actions["grab press"] += 1

    def open_round(self, pond: Pond) -> None:
        current = pond.round
        if current is not None and (current.open_at(now()) or (
                current.seen is None and now() - current.requested < 30)):
            return
        token = self.token("SoakItem")
        mode = "hit" if self.rng.random() < 0.3 else "closest"
        duration = self.rng.choice([15, 30, 60, 180])
        price = self.rng.randint(50, 500)
        pond.round = RoundPost(token, pond.chat_id, mode, price, duration, now())
        self.book.rounds[token] = pond.round
        self.say(pond, OPERATOR, f"/guessprice {price} {duration}s 30 {token} mode={mode}")
        self.book.actions["/guessprice"] += 1

    def guess(self, pond: Pond) -> None:
        """A guess in one of the open rounds (whichever pond drew the action)."""
        moment = now()
        rounds = [p.round for p in self.ponds.values()
                  if p.round is not None and p.round.open_at(moment) and p.kicked_at is None]
        if not rounds:
            self.chatter(pond)
            return
        round_ = self.rng.choice(rounds)
        pond = self.ponds[round_.chat_id]
        user = self.member(pond)
        limit = 3 if round_.mode == "hit" else 1
        if len(round_.guesses.get(user, [])) >= limit:
            return
        value = max(1, round_.price + self.rng.randint(-40, 40))
        if self.rng.random() < 0.5 and round_.message_id is not None:
            sent, message_id = self.say(pond, user, str(value), reply_to=round_.message_id)
        else:
            sent, message_id = self.say(pond, user, f"/guess {value}")
        round_.guesses.setdefault(user, []).append((message_id, sent))
        self.book.actions["guess"] += 1

    def open_vote(self, pond: Pond) -> None:
        moment = now()
        if sum(1 for v in pond.votes if v.open_at(moment) or (
                v.seen is None and moment - v.requested < 30)) >= 2:
            return
        token = self.token("SoakQ")
        options = self.rng.randint(2, 4)
        duration = self.rng.choice([15, 30, 90, 600])
        vote = VotePost(token, pond.chat_id, options, duration, now())
        pond.votes.append(vote)
        self.book.votes[token] = vote
        labels = " | ".join(f"Option {chr(65 + i)}" for i in range(options))
        self.say(pond, OPERATOR, f"/vote {duration}s {token} which one? | {labels}")
        self.book.actions["/vote"] += 1

    def vote_press(self, pond: Pond) -> None:
        """A press on one of the open votes (whichever pond drew the action)."""
        moment = now()
        votes = [v for p in self.ponds.values() if p.kicked_at is None for v in p.votes
                 if v.open_at(moment) and v.message_id is not None]
        if not votes:
            self.checkin_button(pond)
            return
        vote = self.rng.choice(votes)
        pond = self.ponds[vote.chat_id]
        assert vote.message_id is not None and vote.vote_id is not None
        user = self.member(pond)
        option = self.rng.randrange(vote.options)
        sent, query_id = self.press(pond, user, vote.message_id, f"vt:{vote.vote_id}:{option}")
        vote.presses.setdefault(user, []).append((query_id, sent))
        self.book.actions["vote press"] += 1

    # -- faults and kills -----------------------------------------------------------

    async def faults(self, until: float) -> None:
        """About one fault a second: 429s, 500s, 502s, HTML 502 pages, dropped
        connections on the bot's busiest methods (getUpdates included), 403s on DMs."""
        methods = ["getUpdates", "sendMessage", "editMessageText", "answerCallbackQuery",
                   None, "setMyCommands", "getChatAdministrators"]
        method_weights = [25, 30, 15, 15, 8, 3, 4]
        kinds = ["429", "500", "502", "html502", "reset", "403"]
        kind_weights = [25, 12, 8, 25, 15, 15]
        rng = random.Random(f"{self.seed}:faults")
        while now() < until:
            await asyncio.sleep(rng.uniform(0.4, 1.6))
            kind = rng.choices(kinds, kind_weights)[0]
            if kind == "403":
                # The answer to a member's DM is refused with 403 (as if blocked); groups
                # get theirs by a real kick (kick_one), more DMs by real blocks (dm_start).
                linked = sorted(self.book.linked - self.book.blocked)
                if not linked:
                    continue
                user = rng.choice(linked)
                self.emu.inject_fault("sendMessage", chat_id=user, kind="403")
                self.emu.send_message(user, user, "/help")
            else:
                method = rng.choices(methods, method_weights)[0]
                if any(f.method == method for f in self.emu.faults):
                    continue  # faults do not pile up while nobody calls the method
                self.emu.inject_fault(method, kind=kind, retry_after=rng.randint(1, 3))
            self.book.faults_asked[kind] += 1

    async def kick_one(self, at: float) -> None:
        """Half-way through, one pond's owner removes the bot."""
        await asyncio.sleep(max(0.0, at - now()))
        pond = self.ponds[FIRST_POND - (PONDS - 1)]
        self.emu.remove_bot(pond.chat_id, pond.owner)
        pond.kicked_at = now()

    async def kills(self, times: list[float]) -> None:
        rng = random.Random(f"{self.seed}:kills")
        for moment in times:
            await asyncio.sleep(max(0.0, moment - now()))
            run = self.bot.runs[-1] if self.bot.runs else None
            if run is None or run.ready is None or now() - run.ready < MIN_UPTIME:
                continue  # still starting: this moment passes
            await self.bot.kill()
            self.book.kills += 1
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            await self.bot.start()

    async def keep_alive(self, until: float) -> None:
        """A bot that exited on its own (recorded as a crash) is started again."""
        while now() < until:
            await asyncio.sleep(0.5)
            run = self.bot.runs[-1] if self.bot.runs else None
            if run is not None and run.how == "exited" and not self.bot.alive:
                await asyncio.sleep(1.0)
                await self.bot.start()

    async def drain(self, cap: float) -> tuple[bool, float]:
        """Until every update is confirmed and the bot has sent nothing for QUIET seconds
        while it could have: every 429's `retry_after` over and every pond below 20
        messages in the last minute (the bot holds what it has queued until then). At
        most `cap` seconds. Returns (quiet reached, seconds taken)."""
        began = now()
        while now() - began < cap:
            self.watch()
            free = max(self._last_bot_event, self.retry_after_ends(), self.budgets_free())
            if not self.emu.pending_updates and now() - free >= QUIET:
                return True, now() - began
            await asyncio.sleep(0.2)
        return False, now() - began

    def budgets_free(self) -> float:
        """When every pond has room under Telegram's 20 messages a minute as the bot
        counts them (every attempt, answered or not, plus a little slack; monotonic)."""
        since = now() - 60
        recent: dict[str, list[float]] = defaultdict(list)  # newest first
        for call in reversed(self.emu.calls):
            if call["at"] <= since:
                break
            chat = str(call["params"].get("chat_id", ""))
            if call["method"].startswith(MESSAGE_METHODS) and chat.startswith("-"):
                recent[chat].append(float(call["at"]))
        return max((times[19] + 60 + 2 for times in recent.values() if len(times) >= 20),
                   default=0.0)

    def retry_after_ends(self) -> float:
        """When the last `retry_after` the emulator gave ends (monotonic)."""
        ends = 0.0
        for error in self.emu.errors:
            wait = RETRY_AFTER.search(str(error.get("description", "")))
            if error["error_code"] == 429 and wait is not None:
                ends = max(ends, float(error["at"]) + int(wait.group(1)))
        return ends


def tokens_in(text: str) -> set[str]:
    """The soak's names of rounds (SoakItem<n>) and votes (SoakQ<n>) in a text."""
    return set(TOKEN.findall(text))


def callback_data(markup: JSON | None) -> Iterator[str]:
    for row in (markup or {}).get("inline_keyboard", []):
        for button in row:
            if isinstance(button, dict) and "callback_data" in button:
                yield str(button["callback_data"])


# -- the audit --------------------------------------------------------------------------


@dataclass
class Check:
    """One line of the verdict, with the evidence printed under it when it fails."""

    name: str
    figure: str
    ok: bool
    evidence: list[str] = field(default_factory=list)


def sample(items: Iterable[Any], n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" … (+{len(items) - n})" if len(items) > n else "")


class Audit:
    """What the bot left behind (its SQLite file, read only) against what the soak did
    and what the emulator saw."""

    def __init__(self, soak: Soak, db_path: Path) -> None:
        self.soak = soak
        self.emu = soak.emu
        self.bot = soak.bot
        self.book = soak.book
        self.con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        self.checks: list[Check] = []
        self.kicked = {p.chat_id for p in soak.ponds.values() if p.kicked_at is not None}

    def q(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, args).fetchall()

    def check(self, name: str, figure: str, ok: bool, evidence: Iterable[str] = ()) -> None:
        self.checks.append(Check(name, figure, ok, list(evidence)))

    def run(self, shutdowns: list[str]) -> list[Check]:
        audits: list[Callable[[], None]] = [
            self.ledger, self.keys, self.packets, self.checkins, self.votes_paid,
            self.guess_prizes, self.gives, self.callbacks, self.posts, self.flood,
            self.lost_checkins, self.lost_gives, self.lost_grabs, self.lost_guesses,
            self.lost_votes, self.games_posted, self.closes_done,
            lambda: self.process(shutdowns),
        ]
        for audit in audits:
            try:
                audit()
            except sqlite3.Error as exc:  # e.g. a database the bot never migrated
                self.check(f"audit {getattr(audit, '__name__', 'process')}",
                           "could not read the database", False, [repr(exc)])
        self.con.close()
        return self.checks

    # -- money ------------------------------------------------------------------------

    def ledger(self) -> None:
        """Per member, the ledger's deltas sum to the cached balance, which is never
        negative; each entry's balance_after is the sum of that member's entries so far."""
        mismatched = self.q(
            "SELECT m.user_id, m.balance, COALESCE(l.s, 0) FROM member m LEFT JOIN "
            "(SELECT user_id, SUM(delta) s FROM ledger_entry GROUP BY user_id) l "
            "ON l.user_id = m.user_id WHERE COALESCE(l.s, 0) <> m.balance")
        orphans = self.q(
            "SELECT user_id, SUM(delta) FROM ledger_entry WHERE user_id NOT IN "
            "(SELECT user_id FROM member) GROUP BY user_id")
        negative = self.q("SELECT user_id, balance FROM member WHERE balance < 0")
        running: dict[int, int] = defaultdict(int)
        broken: list[str] = []  # an entry whose balance_after is not the sum so far
        for entry, user, delta, after in self.q(
                "SELECT id, user_id, delta, balance_after FROM ledger_entry ORDER BY id"):
            running[user] += delta
            if running[user] != after and len(broken) < 5:
                broken.append(f"entry {entry} of user {user}: balance_after {after}, "
                              f"sum so far {running[user]}")
        [(members, total)] = self.q("SELECT COUNT(*), COALESCE(SUM(balance), 0) FROM member")
        [(entries,)] = self.q("SELECT COUNT(*) FROM ledger_entry")
        evidence = [f"user {u}: balance {b}, ledger sum {s}" for u, b, s in mismatched[:5]]
        evidence += [f"user {u}: ledger sum {s}, no member row" for u, s in orphans[:5]]
        evidence += [f"user {u}: balance {b} < 0" for u, b in negative[:5]]
        self.check("ledger invariant",
                   f"{members} members, {entries} entries, {total} points",
                   not (mismatched or orphans or negative or broken), evidence + broken)

    def keys(self) -> None:
        doubled = self.q("SELECT idem_key, COUNT(*) FROM ledger_entry GROUP BY idem_key "
                         "HAVING COUNT(*) > 1")
        self.check("ledger keys unique", f"{len(doubled)} doubled", not doubled,
                   [f"{k} ×{n}" for k, n in doubled[:5]])

    def packets(self) -> None:
        bad: list[str] = []
        rows = self.q("SELECT id, total, shares, taken, state FROM red_packet")
        shares = defaultdict(list)
        for packet_id, seq, amount, user in self.q(
                "SELECT packet_id, seq, amount, user_id FROM red_packet_share"):
            shares[packet_id].append((seq, amount, user))
        grabs: dict[int, Counter[int]] = defaultdict(Counter)
        paid: Counter[int] = Counter()
        for key, delta, user in self.q(
                "SELECT idem_key, delta, user_id FROM ledger_entry "
                "WHERE idem_key LIKE 'rp:%:grab:%'"):
            packet_id = int(key.split(":")[1])
            grabs[packet_id][user] += 1
            paid[packet_id] += delta
        for packet_id, total, n, taken, state in rows:
            got = [(a, u) for _, a, u in shares[packet_id] if u is not None]
            grabbed = sum(a for a, _ in got)
            users = [u for _, u in got]
            if grabbed > total:
                bad.append(f"packet {packet_id}: grabbed {grabbed} > total {total}")
            if state == "finished" and grabbed != total:
                bad.append(f"packet {packet_id}: finished with {grabbed} of {total}")
            if len(users) != len(set(users)):
                bad.append(f"packet {packet_id}: a member holds two shares")
            if taken != len(got):
                bad.append(f"packet {packet_id}: taken {taken}, {len(got)} shares held")
            if paid[packet_id] != grabbed or sum(grabs[packet_id].values()) != len(got):
                bad.append(f"packet {packet_id}: ledger paid {paid[packet_id]} in "
                           f"{sum(grabs[packet_id].values())} grabs, shares {grabbed} in "
                           f"{len(got)}")
            if len(shares[packet_id]) != n:
                bad.append(f"packet {packet_id}: {len(shares[packet_id])} shares of {n}")
        self.check("red packets exact", f"{len(rows)} packets", not bad, bad[:8])

    def checkins(self) -> None:
        doubled = self.q("SELECT user_id, day, COUNT(*) FROM checkin GROUP BY user_id, day "
                         "HAVING COUNT(*) > 1")
        [(rows,)] = self.q("SELECT COUNT(*) FROM checkin WHERE makeup = 0")
        [(paid,)] = self.q("SELECT COUNT(*) FROM ledger_entry WHERE idem_key LIKE 'checkin:%'")
        unpaid = self.q(
            "SELECT c.user_id, c.day FROM checkin c WHERE c.makeup = 0 AND c.points > 0 AND "
            "NOT EXISTS (SELECT 1 FROM ledger_entry l WHERE l.idem_key = "
            "'checkin:' || c.user_id || ':' || c.day)")
        evidence = [f"user {u} day {d} ×{n}" for u, d, n in doubled[:5]]
        evidence += [f"user {u} day {d}: check-in row without its ledger entry"
                     for u, d in unpaid[:5]]
        self.check("one check-in per member and day", f"{rows} check-ins, {paid} paid",
                   not doubled and not unpaid and paid <= rows, evidence)

    def votes_paid(self) -> None:
        bad: list[str] = []
        ballots = Counter(v for (v,) in self.q("SELECT vote_id FROM vote_ballot"))
        paid = Counter(int(k.split(":")[1]) for (k,) in self.q(
            "SELECT idem_key FROM ledger_entry WHERE idem_key LIKE 'vote:%'"))
        for vote_id, points in self.q("SELECT id, points FROM vote"):
            if paid[vote_id] > ballots[vote_id] or (points and paid[vote_id] != ballots[vote_id]):
                bad.append(f"vote {vote_id}: {ballots[vote_id]} ballots, {paid[vote_id]} paid")
        self.check("votes paid once per ballot", f"{sum(ballots.values())} ballots",
                   not bad, bad[:5])

    def guess_prizes(self) -> None:
        bad: list[str] = []
        paid = Counter(int(k.split(":")[1]) for (k,) in self.q(
            "SELECT idem_key FROM ledger_entry WHERE idem_key LIKE 'guess_price:%'"))
        for round_id, winners, state in self.q(
                "SELECT id, max_winners, state FROM guess_round"):
            if paid[round_id] > winners:
                bad.append(f"round {round_id}: {paid[round_id]} prizes, {winners} winners max")
            if paid[round_id] and state != "closed":
                bad.append(f"round {round_id}: prize paid while {state}")
        self.check("guess prizes paid once", f"{sum(paid.values())} prizes", not bad, bad[:5])

    def gives(self) -> None:
        bad: list[str] = []
        rows = self.q("SELECT idem_key, user_id, delta FROM ledger_entry "
                      "WHERE idem_key LIKE 'give:%'")
        for key, user, delta in rows:
            _, chat, message = key.split(":")
            sent = self.book.gives.get((int(chat), int(message)))
            if sent is None:
                bad.append(f"{key}: no such /give was sent")
            elif (sent[0], sent[1]) != (user, delta):
                bad.append(f"{key}: paid {delta} to {user}, sent {sent[1]} to {sent[0]}")
        self.check("gives paid as sent", f"{len(rows)} gives", not bad, bad[:5])

    # -- Telegram side ------------------------------------------------------------------

    def callbacks(self) -> None:
        twice: list[str] = []
        across = answered = too_old = 0
        queries = self.emu.callback_queries
        for query_id, record in queries.items():
            answered += record.answered
            by_run = Counter(id(self.bot.run_at(t)) for t in record.attempts)
            if any(n > 1 for n in by_run.values()):
                twice.append(f"query {query_id} ({record.data}) answered {len(record.attempts)}"
                             f"× by one process")
            elif len(record.attempts) > 1:
                across += 1
            if record.attempts and not record.answered:
                too_old += 1
        self.check("callbacks answered at most once",
                   f"{answered}/{len(queries)} answered, {across} re-answered after a restart, "
                   f"{too_old} too late", not twice, twice[:5])

    def posts(self) -> None:
        """A duplicate post: a new message (not an edit) for something already posted —
        the same red packet (its 🧧 button `rp:<id>`), the same vote (`vt:<id>:…`
        buttons) or its result (📊 + the question), the same guess round (🏷 + the
        product) or its reveal (🎉 + the product), a second check-in board (`ci:`
        button) in a pond on one local day (the soak never asks for /board), or a second
        reply to one `/give` (a redelivered command gets no second answer)."""
        seen: dict[str, list[float]] = defaultdict(list)  # what -> wall times
        tokens = {*self.book.rounds, *self.book.votes}
        for event in self.emu.events:
            if event["kind"] != "bot_message" or event["chat_id"] not in self.soak.ponds:
                continue
            text = str(event.get("text") or "")
            data = set(callback_data(event.get("reply_markup")))
            chat = event["chat_id"]
            message = self.emu.chats[chat].messages.get(event["message_id"], {})
            replied = (message.get("reply_to_message") or {}).get("message_id")
            if (chat, replied) in self.book.gives:
                seen[f"reply to /give {chat}:{replied}"].append(event["time"])
            for item in data:
                kind, _, rest = item.partition(":")
                if kind == "rp":
                    seen[f"red packet {rest} post"].append(event["time"])
                elif kind == "ci":
                    seen[f"board in {chat} on {local_day(event['time'])}"].append(event["time"])
            for vote in {d.split(":")[1] for d in data if d.startswith("vt:")}:
                seen[f"vote {vote} post"].append(event["time"])
            for token in tokens_in(text) & tokens:
                if "🏷" in text:
                    seen[f"round {token} post"].append(event["time"])
                elif "🎉" in text:
                    seen[f"round {token} reveal"].append(event["time"])
                elif "📊" in text:
                    seen[f"vote {token} result"].append(event["time"])
        doubled = [f"{what} ×{len(times)}: " + ", ".join(self.sent_by(t) for t in times)
                   for what, times in seen.items() if len(times) > 1]
        self.check("no duplicate posts", f"{len(seen)} posts, {len(doubled)} twice",
                   not doubled, doubled[:8])

    def sent_by(self, wall_time: float) -> str:
        """When a message went out, and the life of the process that sent it."""
        moment = wall_time - (time.time() - now())
        run = self.bot.run_at(moment)
        at = f"{datetime.fromtimestamp(wall_time, UTC):%H:%M:%S}"
        if run is None:
            return at
        end = (f"{run.how or 'ended'} {run.ended - moment:.1f} s later"
               if run.ended is not None else "still running")
        return f"{at} (process #{self.bot.runs.index(run) + 1}, {end})"

    def flood(self) -> None:
        """The emulator's flood limiter (20 a minute per group, ~1/s per chat, 30/s in
        all) answered 429 on its own. For each, how many messages the chat got in the
        minute before, and how many of them from an earlier process."""
        flood = [e for e in self.emu.errors if e.get("origin") == "flood"]
        wall = time.time() - now()  # the events' wall clock from the monotonic one
        sent: dict[int, list[float]] = defaultdict(list)
        for event in self.emu.events:
            if event["actor"] == "bot" and event["kind"] in ("bot_message", "edit"):
                sent[event["chat_id"]].append(float(event["time"]) - wall)
        evidence: list[str] = []
        after_start = 0
        for e in flood:
            at, run = float(e["at"]), self.bot.run_at(float(e["at"]))
            started = run.started if run is not None else at
            after_start += at - started < 60
            window = [t for t in sent[e["chat_id"]] if at - 60 <= t < at]
            earlier = sum(1 for t in window if t < started)
            if len(evidence) < 5:
                evidence.append(
                    f"{e['method']} in {e['chat_id']}, {at - started:.1f} s after its process "
                    f"started: {len(window)} messages there in the minute before, {earlier} "
                    f"of them by an earlier process")
        if flood:
            evidence.append(f"{after_start} of {len(flood)} within 60 s of a (re)start")
        self.check("no self-caused 429", f"{len(flood)} from the flood limiter "
                   f"({self.emu.stats.total_429 - len(flood)} injected)", not flood, evidence)

    # -- nothing lost ---------------------------------------------------------------

    def lost_checkins(self) -> None:
        rows = {(u, str(d)) for u, d in self.q("SELECT user_id, day FROM checkin")}
        lost: list[str] = []
        owed = 0
        for how, sent in self.book.checkins:
            if sent.update_id is None:
                continue
            owed += 1
            day = local_day(sent.unix)
            days = {str(day)} | ({str(day + timedelta(days=1))} if how == "button" else set())
            if not any((sent.user_id, d) in rows for d in days):
                lost.append(f"{how} check-in of {sent.user_id} in {sent.chat_id} on {day} "
                            f"({self.fate(sent)})")
        self.check("0 lost check-ins", f"{owed} delivered, {len(lost)} lost", not lost,
                   self.summary(lost))

    def lost_gives(self) -> None:
        keys = {k for (k,) in self.q(
            "SELECT idem_key FROM ledger_entry WHERE idem_key LIKE 'give:%'")}
        lost = [f"/give {amount} to {user} in {chat} (message {message}, {self.fate(sent)})"
                for (chat, message), (user, amount, sent) in self.book.gives.items()
                if f"give:{chat}:{message}" not in keys]
        self.check("0 lost gives", f"{len(self.book.gives)} delivered, {len(lost)} lost",
                   not lost, self.summary(lost))

    def fate(self, sent: Sent) -> str:
        """What became of an update: handled (confirmed) or still queued at the end."""
        assert sent.update_id is not None
        if sent.update_id in self.emu.confirmed_at:
            return f"update {sent.update_id} confirmed, so handled"
        return f"update {sent.update_id} {QUEUED}"

    @staticmethod
    def summary(lost: list[str]) -> list[str]:
        queued = sum(1 for line in lost if QUEUED in line)
        return lost[:5] + ([f"{queued} of the {len(lost)} {QUEUED}"] if queued else [])

    def lost_grabs(self) -> None:
        """Every distinct member who pressed a packet's button (delivered) holds a share,
        until the shares ran out (its funder does not grab their own)."""
        db = {pid: (shares, taken, state, funder) for pid, shares, taken, state, funder in self.q(
            "SELECT id, shares, taken, state, funder_id FROM red_packet")}
        holders: dict[int, set[int]] = defaultdict(set)
        for pid, user in self.q(
                "SELECT packet_id, user_id FROM red_packet_share WHERE user_id IS NOT NULL"):
            holders[pid].add(user)
        lost: list[str] = []
        pressers_total = 0
        for post in self.book.packets.values():
            if post.packet_id not in db:
                lost.append(f"packet {post.packet_id}: posted, not in the database")
                continue
            shares, taken, state, funder = db[post.packet_id]
            pressers = {u for u, presses in post.presses.items()
                        if u != funder and any(s.update_id is not None for _, s in presses)}
            pressers_total += len(pressers)
            owed = min(shares, len(pressers))
            if taken < owed:
                missing = sorted(pressers - holders[post.packet_id])
                toasts = Counter(
                    str((self.emu.callback_answer(q) or {}).get("text") or "(no answer)")
                    for u in missing for q, _ in post.presses[u])
                lost.append(f"packet {post.packet_id} ({state}): {taken}/{shares} taken, "
                            f"{len(pressers)} pressed; e.g. {sample(missing, 3)} got "
                            f"{sample(f'{t!r} ×{n}' for t, n in toasts.most_common(3))}")
        self.check("0 lost grabs", f"{pressers_total} members pressed "
                   f"{len(self.book.packets)} packets", not lost, lost[:5])

    def owed_before(self, sent: Sent, closes: datetime) -> tuple[bool, str]:
        """Was the update of `sent` handed to a process at least OWED_MARGIN before
        `closes`, a process that lived on for OWED_MARGIN? (Then it had to be recorded
        before the close.) Also the timings, to tell a stall from a drop."""
        if sent.update_id is None:
            return False, ""
        delivered = self.emu.delivered_at.get(sent.update_id)
        if delivered is None:
            return False, ""
        close = sent.at + (closes.timestamp() - sent.unix)
        run = self.bot.run_at(delivered)
        owed = close - delivered >= OWED_MARGIN and run is not None and (
            run.ended is None or run.ended >= delivered + OWED_MARGIN)
        confirmed = self.emu.confirmed_at.get(sent.update_id)
        done = f"confirmed {confirmed - delivered:.1f} s after" if confirmed else "never confirmed"
        return owed, (f"update {sent.update_id} delivered {close - delivered:.1f} s before "
                      f"the close, {done}")

    def lost_guesses(self) -> None:
        """In a `closest` round, a guess delivered to the bot OWED_MARGIN before the close
        (to a process that lived on until the close) is recorded."""
        rounds = {product: (rid, db_time(closes)) for rid, product, closes in self.q(
            "SELECT id, product, closes_at FROM guess_round")}
        recorded = {k for (k,) in self.q("SELECT source_key FROM price_guess")}
        lost: list[str] = []
        owed = 0
        for round_ in self.book.rounds.values():
            if round_.token not in rounds or round_.mode != "closest":
                continue
            _, closes = rounds[round_.token]
            for user, guesses in round_.guesses.items():
                message_id, sent = guesses[0]
                is_owed, timing = self.owed_before(sent, closes)
                owed += is_owed
                if is_owed and f"{sent.chat_id}:{message_id}" not in recorded:
                    lost.append(f"{round_.token}: guess of {user} in {sent.chat_id}, {timing}")
        self.check("0 lost guesses", f"{owed} owed, {len(lost)} lost", not lost, lost[:5])

    def lost_votes(self) -> None:
        votes = {vid: db_time(closes) for vid, closes in self.q("SELECT id, closes_at FROM vote")}
        ballots = set(self.q("SELECT vote_id, user_id FROM vote_ballot"))
        lost: list[str] = []
        owed = 0
        for vote in self.book.votes.values():
            if vote.vote_id is None or vote.vote_id not in votes:
                continue
            for user, presses in vote.presses.items():
                query_id, sent = presses[0]
                is_owed, timing = self.owed_before(sent, votes[vote.vote_id])
                owed += is_owed
                if is_owed and (vote.vote_id, user) not in ballots:
                    answer = (self.emu.callback_answer(query_id) or {}).get("text")
                    lost.append(f"vote {vote.vote_id}: press of {user}, {timing}, "
                                f"answered {answer!r}")
        self.check("0 lost votes", f"{owed} owed, {len(lost)} lost", not lost, lost[:5])

    def games_posted(self) -> None:
        """A game recorded in a pond that still has the bot got its post (the message id
        Telegram answered is stored). For one that did not: when it opened and closed,
        and how busy its pond was (bot messages there around its opening)."""
        rows = [
            *(("red packet", *r) for r in self.q(
                "SELECT id, chat_id, message_id, created_at, NULL, state FROM red_packet")),
            *(("vote", *r) for r in self.q(
                "SELECT id, chat_id, message_id, opened_at, closed_at, state FROM vote")),
            *(("guess round", *r) for r in self.q(
                "SELECT id, chat_id, message_id, opened_at, closed_at, state FROM guess_round")),
        ]
        missing = []
        for what, gid, chat, mid, opened, closed, state in rows:
            if mid is not None or chat in self.kicked:
                continue
            start = db_time(opened).timestamp()
            sends = [e["time"] - start for e in self.emu.events if e["chat_id"] == chat
                     and e["actor"] == "bot" and e["kind"] in ("bot_message", "edit")]
            before = sum(1 for t in sends if -60 <= t < 0)
            after = sum(1 for t in sends if 0 <= t < 60)
            life = (f", {state} after {db_time(closed).timestamp() - start:.0f} s"
                    if closed is not None else f", {state}")
            missing.append(f"{what} {gid} in {chat}: opened {db_time(opened):%H:%M:%S}{life}; "
                           f"bot messages there: {before} in the minute before, {after} in "
                           f"the minute after")
        self.check("every game posted", f"{len(rows)} games, {len(missing)} without a post",
                   not missing, missing[:5])

    def closes_done(self) -> None:
        """Rounds and votes due before the traffic ended were closed and announced (the
        bot was restarted and drained since)."""
        cutoff = self.soak.traffic_ended
        stuck = [f"round {rid} ({product}): {state}, revealed {revealed}, due {closes}"
                 for rid, product, state, revealed, closes, chat in self.q(
                     "SELECT id, product, state, revealed_at, closes_at, chat_id "
                     "FROM guess_round")
                 if db_time(closes) < cutoff and chat not in self.kicked
                 and (state != "closed" or revealed is None)]
        stuck += [f"vote {vid}: {state}, announced {announced}, due {closes}"
                  for vid, state, announced, closes, chat in self.q(
                      "SELECT id, state, announced_at, closes_at, chat_id FROM vote")
                  if db_time(closes) < cutoff and chat not in self.kicked
                  and (state != "closed" or announced is None)]
        tasks = self.q("SELECT key, state, attempts, last_error FROM scheduled_task WHERE "
                       "state IN ('running', 'failed')")
        stuck += [f"task {k}: {s} after {a} attempts {e!r}" for k, s, a, e in tasks]
        [(due,)] = self.q(
            "SELECT (SELECT COUNT(*) FROM guess_round WHERE closes_at < ?) + "
            "(SELECT COUNT(*) FROM vote WHERE closes_at < ?)",
            cutoff.strftime("%Y-%m-%d %H:%M:%S"), cutoff.strftime("%Y-%m-%d %H:%M:%S"))
        self.check("scheduled closes done", f"{due} due, {len(stuck)} stuck", not stuck,
                   stuck[:6])

    # -- the process ------------------------------------------------------------------

    def process(self, shutdowns: list[str]) -> None:
        crashes = self.bot.crashes
        evidence: list[str] = []
        last_lines = Counter(
            next((line for line in reversed(log.splitlines()) if line.strip()), "(no log)")
            for _, log in crashes)
        for line, n in last_lines.most_common(3):
            run, log = next((r, g) for r, g in crashes if line in g)
            tail = [row for row in log.splitlines() if row.strip()][-6:]
            evidence.append(f"×{n} exit code {run.returncode} after "
                            f"{(run.ended or 0) - run.started:.1f} s; log ends:")
            evidence += [f"    {row[:200]}" for row in tail]
        self.check("bot never exited on its own", f"{len(crashes)} exits", not crashes,
                   evidence)
        self.check("clean shutdown (SIGTERM)",
                   " / ".join(shutdowns) + " (after the traffic / at the end)",
                   not any("killed" in t for t in shutdowns))
        violations = self.emu.violations
        self.check("Bot API spec respected", f"{len(violations)} violations", not violations,
                   [f"{v['method']}: {v['description']}" for v in violations[:5]])
        logs = self.bot.logs()
        leaked = self.emu.token in logs or self.emu.token.split(":")[1] in logs
        self.check("token never logged", "leaked" if leaked else "not found", not leaked)


# -- main -------------------------------------------------------------------------------


def latencies(soak: Soak) -> dict[str, list[float]]:
    """Seconds from a member's action to the bot confirming its update, and from the
    update's first delivery to that confirmation (the bot's own handling)."""
    emu, book = soak.emu, soak.book
    sent = [s for _, s in book.checkins] + [s for _, _, s in book.gives.values()]
    sent += [s for p in book.packets.values() for ps in p.presses.values() for _, s in ps]
    sent += [s for r in book.rounds.values() for gs in r.guesses.values() for _, s in gs]
    sent += [s for v in book.votes.values() for ps in v.presses.values() for _, s in ps]
    total: list[float] = []
    handling: list[float] = []
    for s in sent:
        if s.update_id is None or s.update_id not in emu.confirmed_at:
            continue
        total.append(emu.confirmed_at[s.update_id] - s.at)
        handling.append(emu.confirmed_at[s.update_id] - emu.delivered_at[s.update_id])
    return {"sent → confirmed": total, "delivered → confirmed": handling} if total else {}


def pct(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * q // 100)]


def print_report(soak: Soak, checks: list[Check], minutes: float, seed: int,
                 drained: tuple[bool, float], wall: float) -> None:
    book, emu, bot = soak.book, soak.emu, soak.bot
    print(f"soak: {minutes:g} min, seed {seed}, {PONDS} ponds, {MEMBERS} members, "
          f"{len(bot.runs)} bot runs, {wall:.0f} s wall")
    print("injected:")
    applied = emu.stats.injected
    kinds = sorted(set(book.faults_asked) | set(applied))
    print("  faults (applied/asked): " + ", ".join(
        f"{k} {applied[k]}/{book.faults_asked[k]}" for k in kinds))
    print("  faults by method: " + ", ".join(
        f"{m} {n}" for m, n in emu.stats.injected_by_method.most_common()))
    print(f"  SIGKILLs: {book.kills}; exits on its own: {len(bot.crashes)}; pond kicked the "
          f"bot: {sum(1 for p in soak.ponds.values() if p.kicked_at is not None)}; DMs "
          f"blocked: {book.actions['DM blocked']}")
    print("traffic: " + ", ".join(f"{k} {n}" for k, n in sorted(book.actions.items())))
    errors = Counter(
        m.group(1)[:120] for m in re.finditer(r" ERROR ([^\n]*)", bot.logs()))
    print(f"bot log: {sum(errors.values())} ERROR lines"
          + "".join(f"\n  ×{n} {line}" for line, n in errors.most_common(5)))
    waits = latencies(soak)
    if waits:
        print("updates: " + "; ".join(
            f"{label} p50 {pct(w, 50):.1f} s, p99 {pct(w, 99):.1f} s, max {max(w):.1f} s"
            for label, w in waits.items()))
    quiet, took = drained
    print(f"drain: {'quiet' if quiet else 'NOT quiet'} after {took:.1f} s, "
          f"{emu.pending_updates} updates unconfirmed")
    print("checks:")
    for c in checks:
        print(f"check {c.name}: {c.figure} {'OK' if c.ok else 'FAIL'}")
        for line in c.evidence:
            print(f"    {line}")


async def soak_run(minutes: float, seed: int, rate: float, kills_per_minute: float,
                   workdir: Path) -> tuple[Soak, list[Check], tuple[bool, float]]:
    rng = random.Random(f"{seed}:plan")
    async with Emulator() as emu:
        bot = BotProcess(emu, workdir)
        soak = Soak(emu, bot, seed, rate=rate)
        soak.populate()
        await bot.start()
        if bot.runs[-1].ready is None:
            raise SystemExit(f"the bot did not start:\n{bot.logs()[-3000:]}")
        soak.add_bot()
        began = now()
        until = began + minutes * 60
        n_kills = max(1, round(kills_per_minute * minutes))
        kill_times = sorted(began + rng.uniform(0.1, 0.9) * (until - began)
                            for _ in range(n_kills))
        background = [
            asyncio.create_task(soak.faults(until)),
            asyncio.create_task(soak.kills(kill_times)),
            asyncio.create_task(soak.kick_one(began + 0.5 * (until - began))),
            asyncio.create_task(soak.keep_alive(until)),
        ]
        await soak.traffic(until)
        soak.traffic_ended, soak.quiet = datetime.now(UTC), True
        # A restart under way completes; the last storms finish pressing.
        await asyncio.wait([*background, *soak.tasks], timeout=START_TIMEOUT)
        for task in [*background, *soak.tasks]:
            task.cancel()  # only a start that hangs is still running here
        emu.clear_faults()
        # The final clean restart, a quiet period to drain, a clean stop.
        shutdowns = [await bot.stop()]
        await bot.start()
        drained = await soak.drain(cap=60.0 + 3.0 * minutes)
        shutdowns.append(await bot.stop())
        checks = Audit(soak, bot.db_path).run(shutdowns)
        return soak, checks, drained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="traffic time (10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=20.0,
                        help="members' and operators' actions per second, storms aside (20)")
    parser.add_argument("--kills-per-minute", type=float, default=3.0)
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (database, bot log) even if all pass")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pondbot-soak-"))
    started = now()
    soak, checks, drained = asyncio.run(
        soak_run(args.minutes, args.seed, args.rate, args.kills_per_minute, workdir))
    print_report(soak, checks, args.minutes, args.seed, drained, now() - started)
    failed = [c.name for c in checks if not c.ok]
    if failed or args.keep:
        print(f"database and bot log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        print(f"FAILED: {len(failed)} of {len(checks)} checks ({', '.join(failed)})")
        return 1
    print(f"passed: all {len(checks)} checks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
