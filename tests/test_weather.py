"""Which failures are weather (`bot.weather`): retried or redelivered, never fatal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiogram.exceptions import (
    ClientDecodeError,
    RestartingTelegram,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramServerError,
)
from aiogram.methods import GetUpdates
from aiohttp import ServerDisconnectedError
from pydantic import BaseModel, ValidationError
from sqlalchemy import exc as sa

from bot.emulator.server import HTML_502
from services.weather import describe, is_database_outage, is_database_unreachable, is_transient

METHOD = GetUpdates()
TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij"


class _Shape(BaseModel):
    ok: bool


def _validation_error() -> ValidationError:
    try:
        _Shape.model_validate({"ok": "not a bool at all"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


def html_page() -> ClientDecodeError:
    try:
        json.loads(HTML_502)
    except ValueError as exc:
        return ClientDecodeError("Failed to decode object", exc, HTML_502)
    raise AssertionError("unreachable")


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TelegramServerError(METHOD, "Bad Gateway"), True),
        (RestartingTelegram(METHOD, "restart"), True),
        (TelegramNetworkError(METHOD, "Request timeout error"), True),
        (html_page(), True),
        (TimeoutError(), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (ServerDisconnectedError(), True),
        (ClientDecodeError("Failed to deserialize object", _validation_error(), {}), False),
        (TelegramEntityTooLarge(METHOD, "Request Entity Too Large"), False),
        (TelegramBadRequest(METHOD, "Bad Request: chat not found"), False),
        (TelegramForbiddenError(METHOD, "Forbidden: bot was kicked"), False),
        (ValueError("a bug"), False),
    ],
)
def test_telegram_weather(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
    assert not is_database_outage(exc) or isinstance(exc, OSError | TimeoutError)


def _dbapi(orig: Exception, cls: Any = sa.DBAPIError, invalidated: bool = False) -> Any:
    return cls("SELECT 1", None, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("exc", "outage"),
    [
        (_dbapi(Exception("server closed the connection"), sa.OperationalError), True),
        (_dbapi(Exception("database is locked"), sa.OperationalError), True),
        (_dbapi(Exception("connection is closed"), sa.InterfaceError), True),
        (_dbapi(Exception("terminating connection"), invalidated=True), True),
        (_dbapi(_PgError("57P01")), True),  # admin shutdown: a failover
        (_dbapi(_PgError("57P03")), True),  # cannot connect now
        (_dbapi(_PgError("40001")), True),  # serialization failure
        (_dbapi(_PgError("25006")), True),  # read-only transaction: a standby
        (_dbapi(_PgError("23505")), False),  # unique violation
        (_dbapi(_PgError("42P01")), False),  # undefined table
        (sa.TimeoutError("QueuePool limit reached"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (_dbapi(Exception("UNIQUE constraint failed"), sa.IntegrityError), False),
        (_dbapi(Exception("syntax error"), sa.ProgrammingError), False),
        (TelegramServerError(METHOD, "Bad Gateway"), False),
        (html_page(), False),
        (KeyError("a bug"), False),
    ],
)
def test_database_outages(exc: BaseException, outage: bool) -> None:
    assert is_database_outage(exc) is outage


def test_describe_is_one_line_without_the_page_or_the_token() -> None:
    page = describe(html_page(), TOKEN)
    assert "\n" not in page and "<html>" not in page and "ClientDecodeError" in page
    leak = TelegramNetworkError(METHOD, f"ClientOSError: https://api/bot{TOKEN}/getUpdates")
    assert TOKEN not in describe(leak, TOKEN)
    statement = describe(_dbapi(Exception("gone"), sa.OperationalError))
    assert "\n" not in statement and "SELECT" not in statement
    try:
        raise ValueError("a bug nobody expected")
    except ValueError as exc:
        assert "Traceback" in describe(exc, trace=True)


@pytest.mark.parametrize(
    ("exc", "unreachable"),
    [
        (_dbapi(Exception("connection is closed"), sa.InterfaceError), True),
        (_dbapi(Exception("terminating connection"), invalidated=True), True),
        (_dbapi(_PgError("57P01")), True),  # admin shutdown
        (_dbapi(_PgError("08006")), True),  # connection failure
        (_dbapi(_PgError("53300")), True),  # too many connections
        (_dbapi(_PgError("25006")), True),  # a read-only standby
        (sa.TimeoutError("QueuePool limit reached"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (_dbapi(_PgError("40001")), False),  # this transaction's conflict
        (_dbapi(_PgError("57014")), False),  # this statement's timeout
        (_dbapi(Exception("database is locked"), sa.OperationalError), False),
        (_dbapi(Exception("UNIQUE constraint failed"), sa.IntegrityError), False),
        (html_page(), False),
    ],
)
def test_whole_database_outages(exc: BaseException, unreachable: bool) -> None:
    assert is_database_unreachable(exc) is unreachable
    assert is_database_outage(exc) or not unreachable
