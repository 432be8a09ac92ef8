"""Database tables.

Chat and user ids are 64-bit (`BigInteger`); every timestamp is a timezone-aware UTC
datetime. Balances live on `Member` (the shop-wide wallet) and change only together with
a `LedgerEntry` row in the same transaction (see `storage.ledger`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
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


class Pond(SQLModel, table=True):
    """A group the bot serves."""

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
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Member(SQLModel, table=True):
    """A customer, shop-wide: one wallet, one streak, whichever ponds they are in."""

    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        Index("ix_member_username_lower", "username_lower"),
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
    tier: str = Field(default="", max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())

    @property
    def display_name(self) -> str:
        name = f"{self.first_name} {self.last_name}".strip()
        return name or (f"@{self.username}" if self.username else str(self.user_id))


class Membership(SQLModel, table=True):
    """A member's presence in one pond."""

    chat_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    # member | administrator | creator | left | kicked
    status: str = Field(default="member", max_length=16)
    joined_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    left_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    first_seen_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    last_seen_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class LedgerEntry(SQLModel, table=True):
    """One change of one member's balance. Rows are only ever inserted."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        UniqueConstraint("idem_key", name="uq_ledger_entry_idem_key"),
        CheckConstraint("delta <> 0", name="delta_not_zero"),
        CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
        Index("ix_ledger_entry_user_id_id", "user_id", "id"),
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
