"""Who opened the members' page: Telegram's Mini App `initData`, checked as Telegram
documents it ("Validating data received via the Mini App").

The page receives `initData` — a query string such as
`query_id=…&user=%7B%22id%22%3A42…%7D&auth_date=1733490000&hash=<64 hex>` — and sends
it with every request. It is genuine when

    secret_key = HMAC_SHA256(key="WebAppData", msg=<bot token>)
    hash       = hex(HMAC_SHA256(key=secret_key, msg=<data-check-string>))

where the data-check-string is every received field but `hash`, as `key=<value>` lines
(values URL-decoded) sorted by key and joined by `\\n`. The hash is compared in constant
time; `auth_date` (seconds since the epoch) must be at most `MAX_AGE` old — an initData
copied from a page once open is no key for ever — and not from the future beyond a
little clock skew. Only then is the `user` field's JSON trusted.

Pure: no Telegram library, no network; the token is an argument, and nothing here puts
it (or the secret key) in an exception or a return value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode

from games.people import UserInfo

MAX_AGE = timedelta(days=1)
CLOCK_SKEW = timedelta(minutes=5)  # an auth_date this far ahead of our clock still counts
MAX_LENGTH = 8192  # Telegram's initData is a few hundred bytes; anything huge is refused
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class InitDataError(Exception):
    """Refused initData; `reason` is one of `missing`, `malformed`, `forged`, `stale`
    (safe to show: it names no secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class InitData:
    user: UserInfo
    auth_date: datetime
    query_id: str | None = None


def secret_key(token: str) -> bytes:
    return hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()


def data_check_string(fields: Mapping[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "hash")


def signature(fields: Mapping[str, str], token: str) -> str:
    """The hex `hash` Telegram puts beside `fields` for the bot with `token`."""
    return hmac.new(
        secret_key(token), data_check_string(fields).encode(), hashlib.sha256
    ).hexdigest()


def sign(fields: Mapping[str, str], token: str) -> str:
    """`fields` as a signed initData string, the way Telegram hands it to the page
    (used by the tests and the demo, which play Telegram's part)."""
    return urlencode({**fields, "hash": signature(fields, token)})


def _fields(raw: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise InitDataError("malformed") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):  # a key given twice: which one was signed?
        raise InitDataError("malformed")
    return fields


def _user(text: str) -> UserInfo:
    try:
        data = json.loads(text)
    except ValueError:
        raise InitDataError("malformed") from None
    if not isinstance(data, dict):
        raise InitDataError("malformed")
    uid = data.get("id")
    if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0:
        raise InitDataError("malformed")

    def text_of(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return UserInfo(
        id=uid,
        first_name=text_of("first_name") or "",
        last_name=text_of("last_name") or "",
        username=text_of("username"),
        language_code=text_of("language_code"),
        is_bot=data.get("is_bot") is True,
    )


def validate(raw: str | None, token: str, now: datetime, *, max_age: timedelta = MAX_AGE
             ) -> InitData:
    """The checked initData, or `InitDataError` (see the module docstring)."""
    if not raw:
        raise InitDataError("missing")
    if len(raw) > MAX_LENGTH:
        raise InitDataError("malformed")
    fields = _fields(raw)
    given = fields.get("hash", "")
    if not _HASH_RE.match(given):
        raise InitDataError("forged" if "hash" not in fields else "malformed")
    expected = signature(fields, token)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise InitDataError("forged")
    try:
        auth = datetime.fromtimestamp(int(fields.get("auth_date", "")), UTC)
    except (ValueError, OverflowError, OSError):
        raise InitDataError("malformed") from None
    if now - auth > max_age or auth - now > CLOCK_SKEW:
        raise InitDataError("stale")
    if "user" not in fields:
        raise InitDataError("malformed")
    return InitData(user=_user(fields["user"]), auth_date=auth, query_id=fields.get("query_id"))


def page_language(code: str | None, default: str) -> str:
    """The page's language for a user's `language_code`: Chinese for `zh…`, the bot's
    default language when Telegram does not say, English for any other language."""
    if not code:
        return default
    return "zh" if code.lower().startswith("zh") else "en"
