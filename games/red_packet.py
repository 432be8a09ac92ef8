"""Red packets (抢红包): the command's arguments, who pays, the split, who may grab. Pure
functions.

The split is decided when the packet is created, not at grab time: the shares are a
pre-computed list stored with the packet, and a grab takes the next one in order. Grabs
are then a single guarded update (no arithmetic under the lock), the sum is exact by
construction, and because the list is shuffled with the injected `random.Random`, every
grab position has the same expected amount — early grabbers have no edge.

* `random`: WeChat-style "double average" — each share is uniform in
  [1, 2 × remaining / remaining_shares], capped so that every later share can still get
  1 point; the last share takes the remainder.
* `equal`: total // shares each; the remainder adds one point to each of the first shares.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from games.campaign import Campaign, Phase, parse_phase
from games.parsing import ParseError, fold, parse_duration, parse_points
from games.promo import PostRequest, parse_when
from games.settings import PondSettings

MAX_PASSWORD = 32  # characters, after folding


class SplitMode(StrEnum):
    random = "random"
    equal = "equal"


def split_random(total: int, shares: int, rng: random.Random) -> list[int]:
    """Double-average split, shuffled: sums to `total`, every share >= 1."""
    _check_split(total, shares)
    amounts: list[int] = []
    remaining, left = total, shares
    while left > 1:
        upper = min(2 * remaining // left, remaining - (left - 1))
        amount = rng.randint(1, max(1, upper))
        amounts.append(amount)
        remaining -= amount
        left -= 1
    amounts.append(remaining)
    rng.shuffle(amounts)
    return amounts


def split_equal(total: int, shares: int) -> list[int]:
    """total // shares each; the first `total % shares` shares get one point more."""
    _check_split(total, shares)
    base, extra = divmod(total, shares)
    return [base + 1 if i < extra else base for i in range(shares)]


def split(total: int, shares: int, mode: SplitMode, rng: random.Random) -> list[int]:
    if mode is SplitMode.equal:
        return split_equal(total, shares)
    return split_random(total, shares, rng)


def _check_split(total: int, shares: int) -> None:
    if shares < 1:
        raise ValueError("a packet has at least one share")
    if total < shares:
        raise ValueError("every share needs at least 1 point")


def luckiest(grabs: Sequence[tuple[int, int]]) -> int | None:
    """The seq of the largest share among `(seq, amount)` grabs; ties go to the
    earliest grab. None when nobody grabbed."""
    best: tuple[int, int] | None = None
    for seq, amount in grabs:
        if best is None or amount > best[1] or (amount == best[1] and seq < best[0]):
            best = (seq, amount)
    return None if best is None else best[0]


# -- the command ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PacketLimits:
    """A pond's bounds (from `PondSettings`)."""

    max_total: int
    max_shares: int
    default_expiry: timedelta
    max_expiry: timedelta


def packet_limits(settings: PondSettings) -> PacketLimits:
    return PacketLimits(
        max_total=settings.redpacket_max_total,
        max_shares=settings.redpacket_max_shares,
        default_expiry=timedelta(seconds=settings.redpacket_expiry_seconds),
        max_expiry=timedelta(seconds=settings.redpacket_max_expiry_seconds),
    )


@dataclass(frozen=True, slots=True)
class PacketArgs:
    total: int
    shares: int
    mode: SplitMode
    password: str | None
    expiry: timedelta


def normalize_password(text: str) -> str:
    """How typed text is compared with a packet's password: folded, case-insensitive,
    inner whitespace collapsed."""
    return " ".join(fold(text).casefold().split())


def parse_packet(args: str | None, limits: PacketLimits) -> PacketArgs:
    """`<total> <shares> [random|equal] [pwd=<口令>] [for=<duration>]`."""
    parts = fold(args or "").split()
    if len(parts) < 2:
        raise ParseError("usage")
    total = parse_points(parts[0], maximum=10**12)
    shares = parse_points(parts[1], maximum=10**12)
    if total > limits.max_total:
        raise ParseError("total_too_large")
    if shares > limits.max_shares:
        raise ParseError("too_many_shares")
    if total < shares:
        raise ParseError("share_below_one")
    mode: SplitMode | None = None
    password: str | None = None
    expiry: timedelta | None = None
    for part in parts[2:]:
        key, eq, value = part.partition("=")
        key = key.lower()
        if not eq and key in ("random", "equal") and mode is None:
            mode = SplitMode(key)
        elif eq and key in ("pwd", "口令") and password is None:
            password = normalize_password(value)
            if not password or password.startswith("/"):
                raise ParseError("bad_password")
            if len(password) > MAX_PASSWORD:
                raise ParseError("password_too_long")
        elif eq and key == "for" and expiry is None:
            try:
                expiry = parse_duration(value, maximum=limits.max_expiry)
            except ParseError as exc:
                raise ParseError(
                    "expiry_too_long" if exc.code == "too_large" else "bad_duration"
                ) from exc
        else:
            raise ParseError("usage")
    return PacketArgs(
        total=total,
        shares=shares,
        mode=mode or SplitMode.random,
        password=password,
        expiry=expiry or min(limits.default_expiry, limits.max_expiry),
    )


# -- scheduled drops (`/redpacket at …`, `/redpacket every …`) -------------------------


class DropError(ParseError):
    """A drop's command refused: `part` says which ("time", "phase", "packet")."""

    def __init__(self, part: str, code: str) -> None:
        super().__init__(code)
        self.part = part


@dataclass(frozen=True, slots=True)
class DropArgs:
    when: PostRequest  # `at` or `every` with its time (no text)
    packet: str  # the packet's own arguments, parsed again by each firing
    args: PacketArgs
    phase: Phase | None  # `every … phase=<phase>`: only on that phase's days


def parse_drop(args: str | None, limits: PacketLimits) -> DropArgs:
    """`at <YYYY-MM-DD HH:MM|+duration> <packet>` or `every <cron> <packet> [phase=…]`,
    the packet's arguments as for `/redpacket`."""
    words = fold(args or "").split()
    verb = words[0].lower() if words else ""
    if verb not in ("at", "every"):
        raise DropError("time", "usage")
    try:
        local, delay, cron, used = parse_when(verb, words[1:])
    except ParseError as exc:
        raise DropError("time", exc.code) from exc
    phase: Phase | None = None
    kept: list[str] = []
    for word in words[1 + used :]:
        key, eq, value = word.partition("=")
        if not (eq and key.lower() in ("phase", "阶段")):
            kept.append(word)
        elif verb != "every" or phase is not None:
            raise DropError("time", "usage")
        else:
            try:
                phase = parse_phase(value)
            except ParseError as exc:
                raise DropError("phase", exc.code) from exc
    packet = " ".join(kept)
    try:
        parsed = parse_packet(packet, limits)
    except ParseError as exc:
        raise DropError("packet", exc.code) from exc
    return DropArgs(PostRequest(verb, local, delay, cron, False, "", None), packet, parsed, phase)


def drop_fires_on(campaigns: Iterable[Campaign], phase: Phase | None, day: date) -> bool:
    """Whether a drop limited to `phase` fires on the local `day`: a day in that phase of
    a campaign (without a campaign, never); a drop without a phase fires every time."""
    return phase is None or any(c.phase_on(day) is phase for c in campaigns)


# -- who pays ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Funding:
    """Who pays a packet. `shop_funded`: the shop (the sender is an operator), else the
    sender's own balance, debited at once. `capped`: the shop pays a pond admin's packet,
    which counts against their daily cap like a /give (global operators have none)."""

    shop_funded: bool
    capped: bool


def funding(*, operator: bool, global_operator: bool, members_may_send: bool) -> Funding | None:
    """Who pays a packet sent by this sender; None: members may not send packets in
    this pond (`redpacket_members_may_send`), and the sender is not an operator."""
    if operator:
        return Funding(shop_funded=True, capped=not global_operator)
    if not members_may_send:
        return None
    return Funding(shop_funded=False, capped=False)


# -- grabbing ------------------------------------------------------------------------


class PacketState(StrEnum):
    open = "open"
    finished = "finished"  # every share taken
    expired = "expired"  # time ran out; a member's unclaimed points went back
    recalled = "recalled"  # taken back early (`/redpacket recall`); refunded like expired


class Refusal(StrEnum):
    """Why a grab changed nothing (each has its own toast)."""

    unknown = "unknown"  # forged or stale packet id
    wrong_chat = "wrong_chat"  # the button's message is not in the packet's chat
    own_packet = "own_packet"
    needs_password = "needs_password"
    already = "already"
    gone = "gone"  # every share taken
    expired = "expired"
    recalled = "recalled"
    not_member = "not_member"  # bots, anonymous admins, channels
    not_ready = "not_ready"  # a button on a post whose message id is not stored yet
    not_for_you = "not_for_you"  # a drop `to=<segment>`: only that segment's members grab


@dataclass(frozen=True, slots=True)
class PacketView:
    """What a grab needs to know about a packet."""

    chat_id: int
    funder_id: int | None
    state: PacketState
    expires_at: datetime
    has_password: bool
    # A drop `to=<segment>` (F10): only the pond's members in that segment when it
    # dropped may grab it (the budget is meant for them, not for the fastest thumb).
    segment: str | None = None


def refusal(
    packet: PacketView | None,
    *,
    user_id: int,
    chat_id: int,
    now: datetime,
    by_password: bool,
    already: bool,
    eligible: bool = True,
) -> Refusal | None:
    """Why `user_id` may not grab now (None: they may). Order matters: a closed
    packet says so before anything personal. `eligible`: for a packet with a
    `segment`, whether `user_id` was among that segment's members when it dropped; a
    member outside it learns so before being asked for a password they could not use."""
    if packet is None:
        return Refusal.unknown
    if packet.chat_id != chat_id:
        return Refusal.wrong_chat
    if already:
        return Refusal.already
    if packet.state is PacketState.finished:
        return Refusal.gone
    if packet.state is PacketState.recalled:
        return Refusal.recalled
    if packet.state is PacketState.expired or now >= packet.expires_at:
        return Refusal.expired
    if packet.funder_id == user_id:
        return Refusal.own_packet
    if packet.segment is not None and not eligible:
        return Refusal.not_for_you
    if packet.has_password and not by_password:
        return Refusal.needs_password
    return None
