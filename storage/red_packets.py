"""Red packets in the database: create (and fund), grab, expire or recall (and refund),
show.

Plain functions over the caller's unit of work; none of them commits.

A grab is one short write transaction: read the packet (and whether this member already
has a share), decide with `games.red_packet.refusal`, then

    UPDATE red_packet SET taken = taken + 1, state = … WHERE id = :p AND state = 'open'
        AND taken < shares AND expires_at > :now RETURNING taken
    UPDATE red_packet_share SET user_id = :u … WHERE packet_id = :p AND seq = :taken
        AND user_id IS NULL RETURNING amount

plus the ledger credit. The counter update is the packet's lock: on SQLite every write
transaction is serialized anyway (BEGIN IMMEDIATE); on PostgreSQL concurrent grabs of one
packet queue on that row and each re-checks `taken < shares` once it gets it, so the
n-th grab takes exactly share n and no grab ever needs a retry. The same SQL runs on both
(no `SKIP LOCKED`). The unique (packet_id, user_id) is the last guard: two concurrent
grabs by one member on PostgreSQL make the second fail with an IntegrityError, which the
caller reports as "already grabbed" after the rollback.

`grab_many` takes the same decision for many members at once (one function decides for
both): its counter update asks for the count it read (`taken = :read`) and gives up when
another process moved the packet meanwhile, so the caller grabs one by one instead.

A drop `to=<segment>` (F10) makes a targeted packet: its row names the segment and
`red_packet_eligible` lists who may grab it (`allow`, in the firing's transaction). The
decision reads that list for the grabbing members only when the packet row it has just
read names a segment: an ordinary packet's grab runs no extra statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from games.people import display_name
from games.red_packet import PacketArgs, PacketState, PacketView, Refusal, refusal
from storage import ledger, repo
from storage.dialect import insert_for
from storage.models import LedgerKind, Member, RedPacket, RedPacketEligible, RedPacketShare

_packet = RedPacket.__table__  # type: ignore[attr-defined]
_share = RedPacketShare.__table__  # type: ignore[attr-defined]
_eligible = RedPacketEligible.__table__  # type: ignore[attr-defined]


def fund_key(packet_id: int) -> str:
    return f"rp:{packet_id}:fund"


def grab_key(packet_id: int, user_id: int) -> str:
    return f"rp:{packet_id}:grab:{user_id}"


def refund_key(packet_id: int) -> str:
    return f"rp:{packet_id}:refund"


def expiry_task_key(packet_id: int) -> str:
    return f"rp:{packet_id}:expire"


@dataclass(frozen=True, slots=True)
class GrabLine:
    seq: int
    user_id: int
    name: str
    amount: int


@dataclass(frozen=True, slots=True)
class PacketCard:
    """Everything the packet's message shows."""

    id: int
    chat_id: int
    message_id: int | None
    funder_id: int | None
    funder_name: str
    shop_funded: bool
    total: int
    shares: int
    mode: str
    password: str | None
    taken: int
    state: PacketState
    refunded: int
    expires_at: datetime
    grabs: tuple[GrabLine, ...] = field(default=())
    segment: str | None = None  # a drop `to=<segment>`: only its members may grab

    @property
    def closed(self) -> bool:
        return self.state is not PacketState.open


@dataclass(frozen=True, slots=True)
class Created:
    card: PacketCard
    applied: bool  # False: the command was delivered before and made this packet then


@dataclass(frozen=True, slots=True)
class Grab:
    """What a grab did: `amount` points, or why nothing (`refused`).

    `card` is the packet as this grab left it (None for an unknown id or another
    chat's button); `closed` is set when the packet is closed for good — finished, or
    past its time (even before the expiry job has recorded it)."""

    packet_id: int
    refused: Refusal | None
    amount: int | None = None
    card: PacketCard | None = None
    closed: PacketState | None = None

    @property
    def finished(self) -> bool:
        return self.refused is None and self.closed is PacketState.finished


def _card(row: Any, grabs: Sequence[GrabLine] = ()) -> PacketCard:
    return PacketCard(
        id=int(row.id),
        chat_id=int(row.chat_id),
        message_id=None if row.message_id is None else int(row.message_id),
        funder_id=None if row.funder_id is None else int(row.funder_id),
        funder_name=row.funder_name,
        shop_funded=bool(row.shop_funded),
        total=int(row.total),
        shares=int(row.shares),
        mode=row.mode,
        password=row.password,
        taken=int(row.taken),
        state=PacketState(row.state),
        refunded=int(row.refunded),
        expires_at=row.expires_at,
        grabs=tuple(grabs),
        segment=row.segment,
    )


async def create(
    session: AsyncSession,
    *,
    chat_id: int,
    funder: repo.UserInfo | None,
    funder_name: str,
    shop_funded: bool,
    args: PacketArgs,
    amounts: Sequence[int],
    source_key: str,
    now: datetime,
    segment: str | None = None,
) -> Created:
    """Record a packet and its shares; a member's packet is paid from their balance
    (raises `ledger.InsufficientPoints`, and the caller's unit of work rolls back).
    `segment`: a drop `to=<segment>`, which only the members `allow` names may grab."""
    if sum(amounts) != args.total or len(amounts) != args.shares or min(amounts) < 1:
        raise ValueError("shares must be >= 1 each and sum to the total")
    packet_id = await session.scalar(
        insert_for(session, _packet)
        .values(
            chat_id=chat_id,
            funder_id=funder.id if funder else None,
            funder_name=funder_name[:128],
            shop_funded=shop_funded,
            total=args.total,
            shares=args.shares,
            mode=str(args.mode),
            password=args.password,
            taken=0,
            state=str(PacketState.open),
            refunded=0,
            source_key=source_key,
            created_at=now,
            expires_at=now + args.expiry,
            segment=segment,
        )
        .on_conflict_do_nothing(index_elements=["source_key"])
        .returning(_packet.c.id)
    )
    if packet_id is None:
        row = (
            await session.execute(select(_packet).where(_packet.c.source_key == source_key))
        ).one()
        return Created(_card(row), applied=False)
    packet_id = int(packet_id)
    await session.execute(
        insert(_share),
        [{"packet_id": packet_id, "seq": i, "amount": a} for i, a in enumerate(amounts, 1)],
    )
    if not shop_funded:
        if funder is None:
            raise ValueError("a member's packet needs the member")
        await repo.upsert_member(session, funder, now)
        await ledger.spend(
            session,
            user_id=funder.id,
            amount=args.total,
            kind=LedgerKind.red_packet,
            key=fund_key(packet_id),
            chat_id=chat_id,
            actor_id=funder.id,
            ref=f"red packet {packet_id}",
            now=now,
        )
    card = await get_card(session, packet_id)
    assert card is not None
    return Created(card, applied=True)


async def allow(session: AsyncSession, packet_id: int, user_ids: Sequence[int]) -> int:
    """Let `user_ids` grab the targeted packet `packet_id` (in the transaction that made
    it; rows already there are kept). How many were named."""
    rows = [{"packet_id": packet_id, "user_id": u} for u in sorted(set(user_ids))]
    stmt = insert_for(session, _eligible)
    for start in range(0, len(rows), 500):
        await session.execute(
            stmt.values(rows[start : start + 500]).on_conflict_do_nothing(
                index_elements=["packet_id", "user_id"]
            )
        )
    return len(rows)


async def set_message(session: AsyncSession, packet_id: int, message_id: int) -> None:
    """Store the post's message id, as Telegram's answer to the post gave it (the only
    source: a button press never names the post)."""
    await session.execute(
        update(_packet)
        .where(_packet.c.id == packet_id, _packet.c.message_id.is_(None))
        .values(message_id=message_id)
    )


def _off_post(
    card: PacketCard, chat_id: int, message_id: int | None, genuine: bool
) -> Refusal | None:
    """Why a grab from `message_id` in `chat_id` is not on the packet's post (None: it
    is, or it is a typed password, which needs no post).

    The post's id is stored only from Telegram's answer to the post: before that a press
    is `not_ready`. After, a press on the stored post counts, and so does one on a
    message that carries this packet's own button (Telegram's copy of the message, which
    a client cannot forge: only the bot puts keyboards on its messages) — the packet's
    second post, when a crash came between Telegram's answer and the id's commit. A
    press on any other message (forged data, another chat) is refused."""
    if card.chat_id != chat_id:
        return Refusal.wrong_chat
    if message_id is None:
        return None
    if card.message_id is None:
        return Refusal.not_ready
    return None if card.message_id == message_id or genuine else Refusal.wrong_chat


async def unposted(session: AsyncSession, now: datetime) -> list[PacketCard]:
    """Open packets whose post never went out (or whose answer was never recorded)."""
    rows = (
        await session.execute(
            select(_packet)
            .where(
                _packet.c.state == str(PacketState.open),
                _packet.c.message_id.is_(None),
                _packet.c.expires_at > now,
            )
            .order_by(_packet.c.id)
        )
    ).all()
    return [_card(r) for r in rows]


async def get_card(
    session: AsyncSession, packet_id: int, *, with_grabs: bool = False
) -> PacketCard | None:
    row = (await session.execute(select(_packet).where(_packet.c.id == packet_id))).first()
    if row is None:
        return None
    grabs: list[GrabLine] = []
    if with_grabs:
        member = Member.__table__  # type: ignore[attr-defined]
        rows = (
            await session.execute(
                select(
                    _share.c.seq,
                    _share.c.user_id,
                    _share.c.amount,
                    member.c.first_name,
                    member.c.last_name,
                    member.c.username,
                )
                .select_from(_share.outerjoin(member, member.c.user_id == _share.c.user_id))
                .where(_share.c.packet_id == packet_id, _share.c.user_id.is_not(None))
                .order_by(_share.c.seq)  # seq is the grab order
            )
        ).all()
        for r in rows:
            name = display_name(r.first_name, r.last_name, r.username, str(r.user_id))
            grabs.append(GrabLine(int(r.seq), int(r.user_id), name, int(r.amount)))
    return _card(row, grabs)


@dataclass(frozen=True, slots=True)
class GrabRequest:
    """One member's grab in `grab_many` (the arguments of `grab`)."""

    user: repo.UserInfo
    chat_id: int
    message_id: int | None
    by_password: bool
    # The pressed message carries this packet's own button (Telegram's copy of it): a
    # post of the packet, even one whose id was never stored (see `_off_post`).
    genuine: bool = False


async def grab(
    session: AsyncSession,
    *,
    packet_id: int,
    user: repo.UserInfo,
    chat_id: int,
    message_id: int | None,
    by_password: bool,
    now: datetime,
    genuine: bool = False,
) -> Grab:
    """Take the next share of an open packet for `user` (see the module docstring).
    `message_id` is the message whose button was pressed (None: typed password);
    `genuine`: that message carries this packet's own button.

    `grab_many` of one member that waits for the packet instead of giving up when it
    moved: the one grab is still decided from what was read, and the counter update
    (`taken < shares`) takes whichever share is next, or finds the packet closed."""
    request = GrabRequest(user, chat_id, message_id, by_password, genuine)
    grabs = await _grab(session, packet_id, [request], now=now, wait=True)
    assert grabs is not None  # waiting never gives up
    return grabs[0]


async def grab_many(
    session: AsyncSession, packet_id: int, requests: Sequence[GrabRequest], *, now: datetime
) -> list[Grab] | None:
    """`grab` for many members in one go, with the outcome each would have had grabbing
    one after the other in this order (one counter update, one share update, one ledger
    batch). None when the packet moved under us since we read it (PostgreSQL: another
    process grabbed meanwhile); the caller then grabs one by one."""
    return await _grab(session, packet_id, requests, now=now, wait=False)


async def _grab(
    session: AsyncSession,
    packet_id: int,
    requests: Sequence[GrabRequest],
    *,
    now: datetime,
    wait: bool,
) -> list[Grab] | None:
    """The one grab decision, for `grab` (`wait`: a single request) and `grab_many`."""
    assert not wait or len(requests) == 1
    users = sorted({r.user.id for r in requests})
    row = (await session.execute(select(_packet).where(_packet.c.id == packet_id))).first()
    if row is None:
        return [Grab(packet_id, Refusal.unknown) for _ in requests]
    card = _card(row)
    had = set(
        (
            await session.execute(
                select(_share.c.user_id).where(
                    _share.c.packet_id == packet_id, _share.c.user_id.in_(users)
                )
            )
        ).scalars()
    )
    eligible: set[int] = set()  # of `users`, who may grab a targeted packet
    if card.segment is not None:  # (the row read above says so: no query otherwise)
        eligible = set(
            (
                await session.execute(
                    select(_eligible.c.user_id).where(
                        _eligible.c.packet_id == packet_id, _eligible.c.user_id.in_(users)
                    )
                )
            ).scalars()
        )
    view = PacketView(
        chat_id=card.chat_id,
        funder_id=card.funder_id,
        state=card.state,
        expires_at=card.expires_at,
        has_password=card.password is not None,
        segment=card.segment,
    )
    taken = card.taken
    outcomes: list[Refusal | None] = []
    wrong: set[int] = set()  # positions of buttons not on the packet's stored post
    closings: list[PacketState | None] = []
    winners: list[GrabRequest] = []
    for r in requests:
        closed = view.state if view.state is not PacketState.open else (
            PacketState.expired if now >= view.expires_at else None
        )
        closings.append(closed)
        off = _off_post(card, r.chat_id, r.message_id, r.genuine)
        if off is not None:
            outcomes.append(off)
            wrong.add(len(outcomes) - 1)
            continue
        why = refusal(
            view,
            user_id=r.user.id,
            chat_id=r.chat_id,
            now=now,
            by_password=r.by_password,
            already=r.user.id in had,
            eligible=r.user.id in eligible,
        )
        outcomes.append(why)
        if why is None:
            had.add(r.user.id)
            winners.append(r)
            taken += 1
            if taken >= card.shares:
                view = replace(view, state=PacketState.finished)
    if not winners:
        return [
            Grab(packet_id, why) if i in wrong else Grab(packet_id, why, card=card, closed=closed)
            for i, (why, closed) in enumerate(zip(outcomes, closings, strict=True))
        ]
    k = len(winners)
    finishing = _packet.c.taken + k >= _packet.c.shares
    # Waiting: whatever share is next (PostgreSQL: after the row's other writers).
    # Not waiting: exactly the shares decided above, or nothing.
    unmoved = _packet.c.taken < _packet.c.shares if wait else _packet.c.taken == card.taken
    after = await session.scalar(
        update(_packet)
        .where(
            _packet.c.id == packet_id,
            _packet.c.state == str(PacketState.open),
            unmoved,
            _packet.c.expires_at > now,
        )
        .values(
            taken=_packet.c.taken + k,
            state=case((finishing, str(PacketState.finished)), else_=_packet.c.state),
            closed_at=case((finishing, now), else_=_packet.c.closed_at),
        )
        .returning(_packet.c.taken)
    )
    if wait and after is None:  # closed since we looked (PostgreSQL: while we waited)
        fresh = await get_card(session, packet_id)
        assert fresh is not None
        if fresh.state is PacketState.finished:
            return [Grab(packet_id, Refusal.gone, card=fresh, closed=PacketState.finished)]
        if fresh.state is PacketState.recalled:
            return [Grab(packet_id, Refusal.recalled, card=fresh, closed=PacketState.recalled)]
        return [Grab(packet_id, Refusal.expired, card=fresh, closed=PacketState.expired)]
    if wait:
        taken = int(after)
    elif after is None or int(after) != taken:
        return None
    first = taken - k + 1
    await session.execute(
        update(_share)
        .where(
            _share.c.packet_id == packet_id,
            _share.c.seq == bindparam("s"),
            _share.c.user_id.is_(None),
        )
        .values(user_id=bindparam("u"), grabbed_at=now),
        [{"s": first + i, "u": r.user.id} for i, r in enumerate(winners)],
    )
    amounts = {
        int(s.seq): (s.user_id, int(s.amount))
        for s in (
            await session.execute(
                select(_share.c.seq, _share.c.user_id, _share.c.amount).where(
                    _share.c.packet_id == packet_id,
                    _share.c.seq >= first,
                    _share.c.seq <= taken,
                )
            )
        ).all()
    }
    got: dict[int, int] = {}
    for i, r in enumerate(winners):
        holder, amount = amounts.get(first + i, (None, 0))
        if holder != r.user.id:  # pragma: no cover - `taken` and the shares move together
            raise RuntimeError(f"red packet {packet_id}: share {first + i} missing or taken")
        got[r.user.id] = amount
    await _credit_many(session, winners, got, packet_id, now)
    finished = taken >= card.shares
    state = PacketState.finished if finished else PacketState.open
    card = replace(card, taken=taken, state=state)
    last = winners[-1]
    grabs: list[Grab] = []
    for i, (r, why, shut) in enumerate(zip(requests, outcomes, closings, strict=True)):
        if i in wrong:
            grabs.append(Grab(packet_id, why))
        elif why is not None:
            grabs.append(Grab(packet_id, why, card=card, closed=shut))
        else:
            done = finished and r is last
            grabs.append(
                Grab(
                    packet_id,
                    None,
                    amount=got[r.user.id],
                    card=card,
                    closed=PacketState.finished if done else None,
                )
            )
    return grabs


async def _credit_many(
    session: AsyncSession,
    winners: Sequence[GrabRequest],
    got: dict[int, int],
    packet_id: int,
    now: datetime,
) -> None:
    awards = [
        ledger.Award(
            user_id=r.user.id,
            amount=got[r.user.id],
            kind=LedgerKind.red_packet,
            key=grab_key(packet_id, r.user.id),
            chat_id=r.chat_id,
            ref=f"red packet {packet_id}",
        )
        for r in winners
    ]
    recorded: set[int] = set()
    while True:
        try:
            await ledger.award_many(session, awards, now=now)
            return
        except ledger.UnknownMember as exc:
            # Not recorded yet (nothing was written, so the transaction carries on).
            if exc.user_id in recorded:  # pragma: no cover - upsert_member records them
                raise
            recorded.add(exc.user_id)
            user = next(r.user for r in winners if r.user.id == exc.user_id)
            await repo.upsert_member(session, user, now)


@dataclass(frozen=True, slots=True)
class Expired:
    card: PacketCard
    applied: bool  # False: it had been closed before (finished, or expired by an earlier run)


async def expire(session: AsyncSession, packet_id: int, *, now: datetime) -> Expired | None:
    """Close an open packet whose time is up; a member's unclaimed points go back to
    them, once (ledger key `rp:<id>:refund`). Safe to run any number of times."""
    closed = await session.scalar(
        update(_packet)
        .where(
            _packet.c.id == packet_id,
            _packet.c.state == str(PacketState.open),
            _packet.c.expires_at <= now,
        )
        .values(state=str(PacketState.expired), closed_at=now)
        .returning(_packet.c.id)
    )
    applied = closed is not None
    if applied:
        await _refund_unclaimed(session, packet_id, now)
    card = await get_card(session, packet_id, with_grabs=True)
    return None if card is None else Expired(card, applied)


async def recall(session: AsyncSession, packet_id: int, *, now: datetime) -> Expired | None:
    """Close an open packet before its time (`/redpacket recall`): like an expiry, a
    member's unclaimed points go back to them by the same ledger key, so a recall and a
    later expiry run can never both refund; a shop packet just stops. `applied` False:
    it was closed already. None for an unknown packet."""
    closed = await session.scalar(
        update(_packet)
        .where(_packet.c.id == packet_id, _packet.c.state == str(PacketState.open))
        .values(state=str(PacketState.recalled), closed_at=now)
        .returning(_packet.c.id)
    )
    applied = closed is not None
    if applied:
        await _refund_unclaimed(session, packet_id, now)
    card = await get_card(session, packet_id, with_grabs=True)
    return None if card is None else Expired(card, applied)


async def _refund_unclaimed(session: AsyncSession, packet_id: int, now: datetime) -> None:
    """Give a member's packet's unclaimed shares back to them, once (`refund_key`); the
    shop's points are no wallet: a shop packet refunds nothing."""
    row = (await session.execute(select(_packet).where(_packet.c.id == packet_id))).one()
    unclaimed = int(
        await session.scalar(
            select(func.coalesce(func.sum(_share.c.amount), 0)).where(
                _share.c.packet_id == packet_id, _share.c.user_id.is_(None)
            )
        )
        or 0
    )
    if unclaimed and not row.shop_funded and row.funder_id is not None:
        await ledger.award(
            session,
            user_id=int(row.funder_id),
            amount=unclaimed,
            kind=LedgerKind.red_packet_refund,
            key=refund_key(packet_id),
            chat_id=int(row.chat_id),
            ref=f"red packet {packet_id}",
            now=now,
        )
        await session.execute(
            update(_packet).where(_packet.c.id == packet_id).values(refunded=unclaimed)
        )


async def open_passwords(session: AsyncSession, chat_id: int, now: datetime) -> dict[str, int]:
    """Password → packet id of the pond's open password packets (the oldest first wins)."""
    rows = (
        await session.execute(
            select(_packet.c.id, _packet.c.password)
            .where(
                _packet.c.chat_id == chat_id,
                _packet.c.state == str(PacketState.open),
                _packet.c.password.is_not(None),
                _packet.c.expires_at > now,
            )
            .order_by(_packet.c.id.desc())
        )
    ).all()
    return {str(r.password): int(r.id) for r in rows}  # later (older) ids overwrite


async def paid_out(session: AsyncSession, packet_id: int) -> int:
    """Points grabbed so far (a check for tests and reports)."""
    return int(
        await session.scalar(
            select(func.coalesce(func.sum(_share.c.amount), 0)).where(
                _share.c.packet_id == packet_id, _share.c.user_id.is_not(None)
            )
        )
        or 0
    )
