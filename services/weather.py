"""Which failures are weather: they pass, and the same work succeeds when tried again.

Telegram's side: a 5xx, an HTML error page instead of JSON (aiogram raises
`ClientDecodeError`, which is not a `TelegramAPIError`), a timeout, a refused or
dropped connection. Every Bot API call treats these alike: the polling loop and the
start-up calls retry with backoff, the outbox retries like a 5xx, the admin cache keeps
what it knew.

The database's side: an update whose handling failed on one of these is not confirmed
to Telegram, so it is handled again (see `bot.dedup` and `handlers.errors`):

* the connection is gone or cannot be had: SQLAlchemy's `OperationalError` and
  `InterfaceError` (server closed the connection, SQLite "database is locked"), any
  `DBAPIError` that invalidated its connection, the pool's `TimeoutError`, a session
  left unusable by such a failure (`PendingRollbackError`), and a raw `OSError` or
  `TimeoutError` from a driver's connect (asyncpg raises those unwrapped);
* PostgreSQL says "not now" with a SQLSTATE: class 08 (connection), 40 (serialization
  failure, deadlock: the transaction may simply be run again), 53 (out of resources),
  57 (admin shutdown, cannot connect now: a failover), 58 (system error), 25006 (a
  read-only transaction: a standby that is not promoted yet), 55P03 (lock not
  available).

Not weather: a constraint violated (`IntegrityError`), bad SQL or data
(`ProgrammingError`, `DataError`): running the same update again fails the same way,
so it is logged and skipped like any other bug. A failure that repeats anyway while the
database answers others is skipped after a few tries (a poison update), so misjudging
one costs seconds, not a pond.

Of these, `is_database_unreachable` picks those that say nothing about the update at
hand — the database as a whole is away (no connection, a failover, a standby, too many
connections): an update failing that way is never taken for a poison update, however
long the outage lasts.
"""

from __future__ import annotations

import traceback

from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramEntityTooLarge,
    TelegramNetworkError,
    TelegramServerError,
)
from aiohttp import ClientError
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

__all__ = ["describe", "is_database_outage", "is_database_unreachable", "is_transient"]

_RETRYABLE_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
_RETRYABLE_SQLSTATES = frozenset({"25006", "55P03"})
_UNREACHABLE_SQLSTATE_CLASSES = ("08", "53")
_UNREACHABLE_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03"})


def is_transient(exc: BaseException) -> bool:
    """A failure of the way to Telegram, not of the request: the same call may succeed
    in a moment. (429 is not here: it says exactly when to come back.)"""
    if isinstance(exc, TelegramEntityTooLarge):  # a network error class, but final
        return False
    if isinstance(exc, TelegramServerError | TelegramNetworkError):
        return True
    if isinstance(exc, ClientDecodeError):
        # A body that is not JSON at all (an HTML "502 Bad Gateway" page, a cut-off
        # answer) is the front end's trouble; valid JSON of the wrong shape is not.
        return not isinstance(exc.original, ValidationError)
    return isinstance(exc, TimeoutError | OSError | ClientError)


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (getattr(exc, "orig", None), exc.__cause__, exc):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_database_outage(exc: BaseException) -> bool:
    """The database could not do the work right now (see the module docstring); the
    same update handled again later will very likely succeed."""
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.ProgrammingError | sa_exc.DataError):
        return False
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.PendingRollbackError | sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    code = _sqlstate(exc)
    if code is not None:
        return code in _RETRYABLE_SQLSTATES or code.startswith(_RETRYABLE_SQLSTATE_CLASSES)
    if isinstance(exc, TelegramAPIError | ClientDecodeError | ClientError):
        return False  # Telegram's weather, not the database's
    return isinstance(exc, OSError | TimeoutError) or _is_asyncpg_outage(exc)


def is_database_unreachable(exc: BaseException) -> bool:
    """An outage of the whole database, not a failure of one statement: the connection
    is gone or cannot be had, or the server is shutting down, starting, a read-only
    standby, or out of connections."""
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.ProgrammingError | sa_exc.DataError):
        return False
    if isinstance(exc, sa_exc.InterfaceError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    code = _sqlstate(exc)
    if code is not None:
        return code in _UNREACHABLE_SQLSTATES or code.startswith(_UNREACHABLE_SQLSTATE_CLASSES)
    if isinstance(exc, sa_exc.SQLAlchemyError | TelegramAPIError | ClientDecodeError):
        return False
    if isinstance(exc, ClientError):
        return False
    return isinstance(exc, OSError | TimeoutError) or _is_asyncpg_outage(exc)


def _is_asyncpg_outage(exc: BaseException) -> bool:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - the PostgreSQL driver is optional
        return False
    return isinstance(
        exc,
        asyncpg.exceptions.PostgresConnectionError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.ConnectionDoesNotExistError,
    )


def describe(exc: BaseException, token: str | None = None, *, trace: bool = False) -> str:
    """One line about `exc` for the log: its kind and a short reason, never the HTML
    page Telegram's front end sent, never the token. `trace`: the whole traceback
    (for failures nobody expected)."""
    if trace:
        text = "".join(traceback.format_exception(exc)).rstrip()
    elif isinstance(exc, TelegramAPIError):
        text = f"{type(exc).__name__}: {exc.message}"
    elif isinstance(exc, ClientDecodeError):
        text = f"{type(exc).__name__}: {exc.message} (not a JSON answer)"
    elif isinstance(exc, sa_exc.StatementError):
        text = f"{type(exc).__name__}: {exc.orig!r}" if exc.orig is not None else type(exc).__name__
    else:
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        text = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    if token:
        text = text.replace(token, "<token>")
    return text
