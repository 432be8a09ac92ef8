"""Database tables.

Chat and user ids are 64-bit (`BigInteger`); every timestamp is a timezone-aware UTC
datetime. Balances live on `Member` (the shop-wide wallet) and change only together with
a `LedgerEntry` row in the same transaction (see `storage.ledger`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from games.people import display_name

# A naming convention makes constraint names stable across SQLite and PostgreSQL, which
# alembic's batch mode needs to alter tables on SQLite.
SQLModel.metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# 64-bit everywhere; on SQLite an INTEGER PRIMARY KEY is the 64-bit rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _ts(nullable: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable)


class LedgerKind(StrEnum):
    """Why points moved. Stored as text; the set is closed."""

    checkin = "checkin"
    streak_bonus = "streak_bonus"
    guess_price = "guess_price"
    vote = "vote"
    survey = "survey"
    red_packet = "red_packet"
    red_packet_refund = "red_packet_refund"
    lottery = "lottery"
    redeem = "redeem"
    refund = "refund"
    referral = "referral"
    birthday = "birthday"
    purchase = "purchase"
    task_bonus = "task_bonus"
    admin_adjust = "admin_adjust"
    expire = "expire"


class PondStatus(StrEnum):
    active = "active"
    inactive = "inactive"  # bot removed, kicked or the chat answers 403
    migrated = "migrated"  # became a supergroup; `migrated_to` holds the new id


class PondTrust(StrEnum):
    """Whether a group is one of the shop's ponds (SPEC F1, trust boundary).

    Points are shop-wide, so only groups the shop vouches for are served: one where a
    global operator (`OPERATOR_IDS`) is the creator or an administrator (`operator`,
    decided from the admin list and decided again when such an admin is promoted or
    demoted), or one a global operator approved (`approved`: `/ponds approve`, or
    adding the bot themselves). `stranger`: checked, no global operator among the admins.
    `revoked`: a global operator stopped serving it; only an approval undoes that.
    `unchecked`: not decided yet (a group just seen, or a pond from before the boundary).
    """

    unchecked = "unchecked"
    operator = "operator"
    approved = "approved"
    stranger = "stranger"
    revoked = "revoked"


SERVED_TRUST = frozenset({PondTrust.operator, PondTrust.approved})


class TableBase(SQLModel):
    """Base of every table: its pydantic validator and serializer are built on first
    use, not at import (rows are made by SQLAlchemy, rarely validated or dumped)."""

    model_config = SQLModel.model_config | {"defer_build": True}


class Pond(TableBase, table=True):
    """A group the bot has seen; served as a pond only when `served` (see PondTrust)."""

    chat_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    title: str = Field(default="", max_length=255)
    chat_type: str = Field(default="group", max_length=16)
    status: str = Field(default=PondStatus.active, max_length=16)
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    language: str = Field(default="zh", max_length=8)
    migrated_to: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Only the settings that differ from `games.settings.PondSettings` defaults.
    settings: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict)
    )
    trust: str = Field(default=PondTrust.unchecked, max_length=16)
    # Who approved or revoked it (or added the bot as a global operator), and when the
    # trust last changed.
    trusted_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    trust_changed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # When the bot said, once and for good, that the group is not a pond of this shop.
    stranger_notice_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())

    @property
    def served(self) -> bool:
        return self.status == PondStatus.active and self.trust in SERVED_TRUST


class OperatorGiveDay(TableBase, table=True):
    """Points a pond operator who is not a global operator gave in one pond on one local
    day: the running total the `operator_give_daily_cap` setting bounds. Bumped in the
    transaction of the `/give` it counts; the ledger keeps the audit trail."""

    __tablename__ = "operator_give_day"

    chat_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    actor_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    day: date = Field(sa_column=Column(Date, primary_key=True))
    given: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class Member(TableBase, table=True):
    """A customer, shop-wide: one wallet, one streak, whichever ponds they are in."""

    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        Index("ix_member_username_lower", "username_lower"),
        Index("ix_member_birthday", "birthday"),
    )

    user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    username: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    username_lower: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    first_name: str = Field(default="", max_length=128)
    last_name: str = Field(default="", max_length=128)
    language_code: str | None = Field(default=None, max_length=16)
    is_bot: bool = Field(default=False)
    dm_linked: bool = Field(default=False)
    balance: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    lifetime_earned: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    streak: int = Field(default=0)
    # The last day (in the timezone of the pond used) the member checked in; `streak`
    # counts the consecutive days ending there (see games/checkin.py).
    last_checkin_day: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    tier: str = Field(default="", max_length=16)
    # Sum of the member's recorded purchases (F2), in cents: what tiers are computed from.
    lifetime_spent_cents: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, default=0)
    )
    # F10 birthday: `MM-DD` (registered by /birthday in the DM), when it was last set
    # (changeable once a year), and the year whose greeting waits for the member's DM
    # (paid, not yet told: sent by the job, or at their next /start).
    birthday: str | None = Field(default=None, sa_column=Column(String(5), nullable=True))
    birthday_set_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    birthday_greeting: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())

    @property
    def display_name(self) -> str:
        return display_name(self.first_name, self.last_name, self.username, str(self.user_id))


class Membership(TableBase, table=True):
    """A member's presence in one pond."""

    chat_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    # member | administrator | creator | left | kicked
    status: str = Field(default="member", max_length=16)
    joined_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    left_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    first_seen_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    last_seen_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class LedgerEntry(TableBase, table=True):
    """One change of one member's balance. Rows are only ever inserted."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        UniqueConstraint("idem_key", name="uq_ledger_entry_idem_key"),
        CheckConstraint("delta <> 0", name="delta_not_zero"),
        CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
        Index("ix_ledger_entry_user_id_id", "user_id", "id"),
        # a pond's entries in a span (/stats, /review, active members): migration 0015
        Index("ix_ledger_entry_chat_id_created_at", "chat_id", "created_at"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    delta: int = Field(sa_column=Column(BigInteger, nullable=False))
    balance_after: int = Field(sa_column=Column(BigInteger, nullable=False))
    kind: str = Field(max_length=32)
    ref: str = Field(default="", max_length=255)
    actor_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # The domain event that caused the change; a replay of that event finds this key taken.
    idem_key: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Job(StrEnum):
    """The names of the scheduled jobs, as stored in `scheduled_task.job`: the features
    that schedule a task and the job modules that run it both name it from here."""

    guess_close = "guess.close"
    vote_close = "vote.close"
    invite_credit = "invites.credit"
    red_packet_expire = "red_packet.expire"
    red_packet_drop = "red_packet.drop"  # a scheduled drop's firing (scheduler/drops.py)
    promo_post = "promo.post"
    promo_deliver = "promo.deliver"
    tier_notice = "orders.tier_notice"
    birthdays = "members.birthdays"  # greetings and gifts due (scheduler/members.py)
    points_expiry = "points.expiry"  # the daily expiry of old lots and its reminders
    survey_close = "survey.close"
    segment_deliver = "segment.deliver"  # DMs of a post or drop `to=<segment>`


class TaskState(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    missed = "missed"  # due while the bot was down, past its grace window
    failed = "failed"
    cancelled = "cancelled"


class ScheduledTask(TableBase, table=True):
    """Something to do at a time: the database, not the timer library, is the source of
    truth. A run claims its row with an atomic state change, so it runs once even if
    two processes are started by mistake; a claim whose owner stopped answering is
    taken over."""

    __tablename__ = "scheduled_task"
    __table_args__ = (Index("ix_scheduled_task_state_run_at", "state", "run_at"),)

    key: str = Field(primary_key=True, max_length=200)
    job: str = Field(max_length=64)
    run_at: datetime = Field(sa_column=_ts())
    payload: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict)
    )
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    state: str = Field(default=TaskState.pending, max_length=16)
    # Deadlines (closing a round, refunding a packet) run however late; posts only
    # within `grace_seconds` of their time, else they are recorded as missed.
    catch_up: bool = Field(default=True)
    grace_seconds: int = Field(default=600)
    cron: str | None = Field(default=None, max_length=120)
    timezone: str | None = Field(default=None, max_length=64)
    attempts: int = Field(default=0)  # runs started since the last success
    claimed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # A run in flight: the process instance running it, the run's own token (an outcome
    # is recorded only under it) and when the owner last said it was alive.
    owner: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    claim: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    heartbeat_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_error: str = Field(default="", max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Checkin(TableBase, table=True):
    """One member's check-in for one day (shop-wide: one row per member and day)."""

    __tablename__ = "checkin"
    __table_args__ = (
        UniqueConstraint("user_id", "day", name="uq_checkin_user_id_day"),
        Index("ix_checkin_chat_id_day", "chat_id", "day"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))  # the pond used
    day: date = Field(sa_column=Column(Date, nullable=False))
    streak: int = Field(default=1)  # the streak this check-in reached
    points: int = Field(default=0)  # base + streak bonus + milestone paid
    makeup: bool = Field(default=False)  # a 补签 bought later (pays nothing)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class CheckinBoard(TableBase, table=True):
    """The pond's check-in board: the message the bot edits in place."""

    __tablename__ = "checkin_board"

    chat_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    # None while a post is on its way (the row claims the day's automatic post first).
    message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    day: date = Field(sa_column=Column(Date, nullable=False))  # local day it was posted
    posted_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    posted_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class RedPacket(TableBase, table=True):
    """A red packet (红包) dropped in a pond. Its shares are decided at creation
    (`RedPacketShare`); `taken` counts the grabbed ones and is the lock every grab takes.
    `state` goes open → finished (all taken), open → expired or open → recalled (an
    operator's or the funder's `/redpacket recall`), never back."""

    __tablename__ = "red_packet"
    __table_args__ = (
        UniqueConstraint("source_key", name="uq_red_packet_source_key"),
        CheckConstraint("taken >= 0 AND taken <= shares", name="taken_in_range"),
        CheckConstraint("total >= shares AND shares >= 1", name="share_at_least_one"),
        Index("ix_red_packet_chat_id_state", "chat_id", "state"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Who sent it (None: an anonymous admin); members pay from their balance, the shop not.
    funder_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    funder_name: str = Field(default="", max_length=128)
    shop_funded: bool = Field(default=False)
    total: int = Field(sa_column=Column(BigInteger, nullable=False))
    shares: int
    mode: str = Field(max_length=8)  # random | equal
    password: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    taken: int = Field(default=0)
    state: str = Field(default="open", max_length=16)
    refunded: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    # The command message that created it: a redelivered command finds it taken.
    source_key: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts())
    closed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # A drop `to=<segment>` (F10): only the members `RedPacketEligible` names may grab it.
    segment: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))


class RedPacketEligible(TableBase, table=True):
    """Who may grab a targeted packet (`RedPacket.segment`): the pond's members in that
    segment when it dropped, linked DM or not — written with the packet, never after."""

    __tablename__ = "red_packet_eligible"

    packet_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))


class RedPacketShare(TableBase, table=True):
    """One pre-computed share; `user_id` is set by the grab that takes it."""

    __tablename__ = "red_packet_share"
    __table_args__ = (
        UniqueConstraint("packet_id", "user_id", name="uq_red_packet_share_packet_id_user_id"),
    )

    packet_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    seq: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    user_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    grabbed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


# -- F4 guess the price, F5 votes, F9 invites (services in storage/guess.py,
# storage/votes.py, storage/invites.py) ---------------------------------------------


class GuessRound(TableBase, table=True):
    """A guess-the-price round. `price_cents` is secret until the round is closed."""

    __tablename__ = "guess_round"
    __table_args__ = (
        # Set to chat_id while the round is open, NULL afterwards: one open round a pond.
        UniqueConstraint("open_chat_id", name="uq_guess_round_open_chat_id"),
        UniqueConstraint("source_key", name="uq_guess_round_source_key"),
        Index("ix_guess_round_chat_id_id", "chat_id", "id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    open_chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    source_key: str = Field(max_length=64)  # the operator's command message
    product: str = Field(max_length=255)
    photo_file_id: str | None = Field(default=None, max_length=255)
    price_cents: int = Field(sa_column=Column(BigInteger, nullable=False))
    prize: int = Field(sa_column=Column(BigInteger, nullable=False))
    mode: str = Field(max_length=8)
    max_attempts: int = Field(default=3)
    max_winners: int = Field(default=1)
    tolerance_cents: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    state: str = Field(default="open", max_length=8)  # open | closed | canceled
    guessers: int = Field(default=0)
    winners: int = Field(default=0)  # hit mode: winner slots taken so far
    message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    opened_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    opened_at: datetime = Field(sa_column=_ts())
    closes_at: datetime = Field(sa_column=_ts())
    closed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    revealed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class PriceGuess(TableBase, table=True):
    """One attempt of one member in one round."""

    __tablename__ = "price_guess"
    __table_args__ = (
        UniqueConstraint("round_id", "user_id", "attempt", name="uq_price_guess_round_id"),
        UniqueConstraint("source_key", name="uq_price_guess_source_key"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    round_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    attempt: int = Field(default=1)
    cents: int = Field(sa_column=Column(BigInteger, nullable=False))
    won: bool = Field(default=False)
    source_key: str = Field(max_length=64)  # the member's message (chat:message id)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Vote(TableBase, table=True):
    """A vote with inline buttons; the tally is counted from the ballots."""

    __tablename__ = "vote"
    __table_args__ = (
        UniqueConstraint("source_key", name="uq_vote_source_key"),
        Index("ix_vote_chat_id_id", "chat_id", "id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    source_key: str = Field(max_length=64)
    question: str = Field(max_length=255)
    options: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    points: int = Field(default=0)  # participation points, paid once per member
    state: str = Field(default="open", max_length=8)  # open | closed | canceled
    message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    opened_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    opened_at: datetime = Field(sa_column=_ts())
    closes_at: datetime = Field(sa_column=_ts())
    closed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    announced_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class VoteBallot(TableBase, table=True):
    """A member's one ballot in a vote (changing the vote moves it)."""

    __tablename__ = "vote_ballot"

    vote_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    option: int = Field(default=0)
    cast_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    changed_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class InviteLink(TableBase, table=True):
    """A member's personal invite link to one pond (created once, reused)."""

    __tablename__ = "invite_link"
    __table_args__ = (UniqueConstraint("link", name="uq_invite_link_link"),)

    chat_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    link: str = Field(max_length=255)
    name: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Referral(TableBase, table=True):
    """A newcomer who joined a pond through a member's link; credited once, after the
    newcomer's first check-in."""

    __tablename__ = "referral"
    __table_args__ = (Index("ix_referral_referrer_id_chat_id", "referrer_id", "chat_id"),)

    newcomer_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    referrer_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    joined_at: datetime = Field(sa_column=_ts())
    credited_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class PromoState(StrEnum):
    draft = "draft"  # previewed, waiting for its author's confirmation
    scheduled = "scheduled"
    sent = "sent"  # a one-off post that fired
    cancelled = "cancelled"
    discarded = "discarded"  # the preview was dismissed (or never confirmed)


class PromoPost(TableBase, table=True):
    """A promotion post (大促预告) for one pond, or for every active pond (`chat_id`
    None: a broadcast). Its schedule is the `scheduled_task` keyed `promo.post:<id>`."""

    __tablename__ = "promo_post"
    __table_args__ = (
        UniqueConstraint("source_key", name="uq_promo_post_source_key"),
        Index("ix_promo_post_state_chat_id", "state", "chat_id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # The operator (or, for an anonymous admin, the group itself) and where the preview is.
    author_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    preview_chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    # at | every; `drop`: a scheduled red packet (storage/drops.py; `cron` set: recurring),
    # never a post: no preview, no delivery, outside the frequency cap.
    kind: str = Field(max_length=8)
    run_at: datetime = Field(sa_column=_ts())  # a one-off's time; a recurring post's first
    cron: str | None = Field(default=None, sa_column=Column(String(120), nullable=True))
    timezone: str = Field(max_length=64)
    text: str = Field(sa_column=Column(String(4096), nullable=False))
    photo_file_id: str | None = Field(default=None, sa_column=Column(String(255), nullable=True))
    button_text: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    button_url: str | None = Field(default=None, sa_column=Column(String(1024), nullable=True))
    pin: bool = Field(default=False)
    # `to=<segment>`: sent by DM to the pond's linked members of that segment (F10).
    segment: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    state: str = Field(default=PromoState.draft, max_length=16)
    # The command message: a redelivered command finds its draft already made.
    source_key: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    confirmed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class DeliveryState(StrEnum):
    pending = "pending"
    queued = "queued"  # handed to the outbox, its request not issued yet: never sent
    sending = "sending"  # its request issued (or about to be); outcome not yet recorded
    sent = "sent"
    failed = "failed"  # Telegram refused the message (not a 403)
    skipped = "skipped"  # the pond is inactive or answered 403
    capped = "capped"  # a recurring post over the pond's frequency cap
    unknown = "unknown"  # was `sending` when the process died: never sent again


class BroadcastDelivery(TableBase, table=True):
    """One post occurrence in one pond: the progress of a broadcast, so a crash in the
    middle resumes without sending any pond a second copy."""

    __tablename__ = "broadcast_delivery"
    __table_args__ = (
        UniqueConstraint("post_id", "occurrence", "chat_id", name="uq_broadcast_delivery_post_id"),
        Index("ix_broadcast_delivery_chat_id_occurrence", "chat_id", "occurrence"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    post_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    occurrence: datetime = Field(sa_column=_ts())  # when this firing was due
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: str = Field(default=DeliveryState.pending, max_length=16)
    claim: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class SaleCampaign(TableBase, table=True):
    """A sale campaign (双十一, 618 …) of one pond, or of every pond (`scope` 0).
    `phases` holds only the phase ranges changed from the defaults (games/campaign.py)."""

    __tablename__ = "campaign"
    __table_args__ = (UniqueConstraint("scope", "name", name="uq_campaign_scope"),)

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    scope: int = Field(sa_column=Column(BigInteger, nullable=False))
    name: str = Field(max_length=32)
    sale_day: date = Field(sa_column=Column(Date, nullable=False))
    phases: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict)
    )
    created_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


# -- F7 shop, F8 lottery, F2 purchases (services in storage/shop.py, storage/lottery.py,
# storage/orders.py) ---------------------------------------------------------------


class ItemKind(StrEnum):
    coupon = "coupon"  # a code from the item's pool, or one the bot generates
    goods = "goods"  # handed over by the shop: a `pending` redemption, later `fulfilled`


class ShopItem(TableBase, table=True):
    """Something members buy with points (shop-wide). `stock` is the units left: for a
    pool item (`pool`, codes uploaded by an operator) the count of its unused codes. A
    redemption takes a unit with a guarded update of this row, which is also the lock
    that serialises concurrent redemptions of one item."""

    __tablename__ = "shop_item"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("cash_cents >= 0", name="cash_not_negative"),
        UniqueConstraint("source_key", name="uq_shop_item_source_key"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    name: str = Field(max_length=128)
    kind: str = Field(default=ItemKind.coupon, max_length=8)
    price: int = Field(sa_column=Column(BigInteger, nullable=False))  # points
    cash_cents: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    stock: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    pool: bool = Field(default=False)  # codes come from `shop_code` rows uploaded for it
    per_member_limit: int = Field(default=1)  # 0: no limit
    # Local days (the shop's timezone) it is on sale, both ends included; None: open.
    active_from: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    active_until: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    on_sale: bool = Field(default=True)
    redeemed: int = Field(default=0)  # redemptions not refunded
    source_key: str = Field(max_length=100)  # the operator's command message
    created_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class CodeState(StrEnum):
    free = "free"
    assigned = "assigned"
    void = "void"  # its redemption was refunded: never given again


class ShopCode(TableBase, table=True):
    """One coupon code of an item: uploaded into the pool (`free`), or generated at the
    redemption that takes it (inserted `assigned`)."""

    __tablename__ = "shop_code"
    __table_args__ = (
        UniqueConstraint("item_id", "code", name="uq_shop_code_item_id"),
        Index("ix_shop_code_item_id_state", "item_id", "state"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    item_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    code: str = Field(max_length=64)
    state: str = Field(default=CodeState.free, max_length=8)
    redemption_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    generated: bool = Field(default=False)
    added_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class RedemptionStatus(StrEnum):
    undelivered = "undelivered"  # a code not yet in its owner's DM
    delivered = "delivered"
    pending = "pending"  # goods waiting to be handed over
    fulfilled = "fulfilled"
    refunded = "refunded"


class Redemption(TableBase, table=True):
    """One unit of an item bought by (or won by) a member. `source_key` names the
    command (or draw) that made it, so a replay finds it instead of buying again."""

    __tablename__ = "redemption"
    __table_args__ = (
        UniqueConstraint("source_key", name="uq_redemption_source_key"),
        Index("ix_redemption_user_id_status", "user_id", "status"),
        Index("ix_redemption_item_id_user_id", "item_id", "user_id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    item_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    price: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    cash_cents: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    code: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    status: str = Field(max_length=16)
    via_draw: bool = Field(default=False)  # a lottery prize, not bought
    source_key: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    fulfilled_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    refunded_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # Who fulfilled or refunded it, and why it was refunded.
    handled_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    reason: str = Field(default="", max_length=255)


class PrizeKind(StrEnum):
    points = "points"
    item = "item"
    nothing = "none"  # 谢谢参与


class Prize(TableBase, table=True):
    """A line of the lottery's prize table (shop-wide). `stock` None: unlimited."""

    __tablename__ = "lottery_prize"
    __table_args__ = (
        CheckConstraint("stock IS NULL OR stock >= 0", name="stock_not_negative"),
        CheckConstraint("weight > 0", name="weight_positive"),
        UniqueConstraint("source_key", name="uq_lottery_prize_source_key"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    name: str = Field(max_length=128)
    weight: int
    stock: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    kind: str = Field(max_length=8)
    points: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    item_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    active: bool = Field(default=True)
    won: int = Field(default=0)
    source_key: str = Field(max_length=100)
    created_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Draw(TableBase, table=True):
    """One lottery draw: free (`free_slot` numbers the member's free draws of that local
    day, so two concurrent free draws cannot both take the last one) or paid (`cost`)."""

    __tablename__ = "lottery_draw"
    __table_args__ = (
        UniqueConstraint("source_key", name="uq_lottery_draw_source_key"),
        UniqueConstraint("user_id", "day", "free_slot", name="uq_lottery_draw_user_id"),
        Index("ix_lottery_draw_user_id_id", "user_id", "id"),
        # a pond's draws of a day (the day's tasks after every action, /stats): 0015
        Index("ix_lottery_draw_chat_id_day", "chat_id", "day"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    day: date = Field(sa_column=Column(Date, nullable=False))  # local day of the pond used
    free_slot: int | None = Field(default=None)
    cost: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    prize_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    prize_name: str = Field(default="", max_length=128)
    won_points: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    redemption_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    source_key: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Order(TableBase, table=True):
    """A purchase in the shop, recorded by an operator (`/order`) or imported; keyed by
    its order number (a typed order without one is keyed by its command message)."""

    __tablename__ = "purchase_order"
    __table_args__ = (
        UniqueConstraint("order_no", name="uq_purchase_order_order_no"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        Index("ix_purchase_order_user_id_paid_at", "user_id", "paid_at"),
        Index("ix_purchase_order_paid_at", "paid_at"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    order_no: str = Field(max_length=100)
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    amount_cents: int = Field(sa_column=Column(BigInteger, nullable=False))
    points: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    paid_at: datetime = Field(sa_column=_ts())
    source: str = Field(max_length=8)  # command | import
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    actor_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ShopSettings(TableBase, table=True):
    """The shop-wide defaults (one row, id 1): what differs from `PondSettings`' own
    defaults, plus `timezone` and `language` when a global operator set them. A pond
    follows a default while its own value equals it (see `storage.settings`)."""

    __tablename__ = "shop_settings"

    id: int = Field(default=1, sa_column=Column(Integer, primary_key=True, autoincrement=False))
    settings: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict)
    )
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class SettingsAudit(TableBase, table=True):
    """One changed setting: who, when, in which pond (`chat_id` None: the shop-wide
    default), old → new as `/settings` shows values. `source_key` names the command
    that made the change, so a replayed command changes nothing a second time."""

    __tablename__ = "settings_audit"
    __table_args__ = (
        UniqueConstraint("source_key", "key", name="uq_settings_audit_source_key"),
        Index("ix_settings_audit_chat_id_id", "chat_id", "id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    key: str = Field(max_length=64)
    old_value: str = Field(default="", max_length=600)
    new_value: str = Field(default="", max_length=600)
    actor_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    source_key: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class SalesPlan(TableBase, table=True):
    """A `/plan <sales> <per_buyer>` an operator set: the target `/review` compares a
    campaign with. `chat_id` is the pond, or 0 for a global operator's shop-wide plan
    (set in their private chat), like `SaleCampaign.scope`. Every /plan is a row — the
    history stays — and the latest of a scope (highest id) is the one in force; a pond
    without a plan of its own follows the shop-wide one. `source_key` names the command,
    so a replayed /plan stores nothing a second time (storage/plans.py)."""

    __tablename__ = "sales_plan"
    __table_args__ = (
        UniqueConstraint("source_key", name="uq_sales_plan_source_key"),
        Index("ix_sales_plan_chat_id_id", "chat_id", "id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    sales: int = Field(sa_column=Column(Integer, nullable=False))
    per_buyer: int = Field(sa_column=Column(Integer, nullable=False))
    set_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    source_key: str = Field(max_length=100)
    set_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


# -- F10 surveys, profiles and targeted deliveries (migration 0014) ---------------------


class Survey(TableBase, table=True):
    """A survey (问卷): a vote whose answers go to the members' profiles under `key`."""

    __tablename__ = "survey"
    __table_args__ = (
        UniqueConstraint("source_key", name="uq_survey_source_key"),
        Index("ix_survey_chat_id_id", "chat_id", "id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    source_key: str = Field(max_length=64)
    key: str = Field(max_length=32)  # the profile key its answers are stored under
    question: str = Field(max_length=255)
    options: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    points: int = Field(default=0)  # paid once per member and survey
    state: str = Field(default="open", max_length=8)  # open | closed
    message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    opened_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    opened_at: datetime = Field(sa_column=_ts())
    closes_at: datetime = Field(sa_column=_ts())
    closed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    announced_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class SurveyAnswer(TableBase, table=True):
    """A member's one answer to a survey (a change moves it)."""

    __tablename__ = "survey_answer"

    survey_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    option: int = Field(default=0)
    answered_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class MemberProfile(TableBase, table=True):
    """What a member answered, by key (skin type, style …): the latest answer wins."""

    __tablename__ = "member_profile"

    user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    key: str = Field(sa_column=Column(String(32), primary_key=True))
    value: str = Field(max_length=100)
    survey_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    answered_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class SegmentDelivery(TableBase, table=True):
    """One DM of a post (or drop) `to=<segment>` to one member, per occurrence: like
    `BroadcastDelivery`, so a crash in the middle resumes without a second copy."""

    __tablename__ = "segment_delivery"
    __table_args__ = (
        UniqueConstraint(
            "post_id", "occurrence", "user_id", name="uq_segment_delivery_post_id"
        ),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    post_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    occurrence: datetime = Field(sa_column=_ts())
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))  # the pond
    state: str = Field(default=DeliveryState.pending, max_length=16)
    claim: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


# -- F14 points expiry (rules in games/expiry.py, storage/expiry.py) -------------------


class PointsLotEpoch(TableBase, table=True):
    """When lots began (one row, id 1, written by migration 0013): the balances from
    before it count as one lot earned at that moment. No row: every credit is its own lot."""

    __tablename__ = "points_lot_epoch"

    id: int = Field(default=1, sa_column=Column(Integer, primary_key=True, autoincrement=False))
    lots_from: datetime = Field(sa_column=_ts())


class ExpiryNotice(TableBase, table=True):
    """The one reminder a member gets for a lot (their earnings of `lot_day`) before it
    expires on `expires_on`: written before the DM goes out, `sent_at` set by its answer."""

    __tablename__ = "points_expiry_notice"

    user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    lot_day: date = Field(sa_column=Column(Date, primary_key=True))
    expires_on: date = Field(sa_column=Column(Date, nullable=False))
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    sent_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
