"""Telegram's Mini App initData, checked as Telegram documents it (games/webapp_auth.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, urlencode

import pytest

from games.webapp_auth import InitDataError, page_language, sign, validate

TOKEN = "123456:" + "A" * 35
OTHER = "123456:" + "B" * 35
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
USER = {"id": 42, "first_name": "小鱼", "username": "fish", "language_code": "zh-hans"}


def fields(at: datetime = NOW, **extra: str) -> dict[str, str]:
    return {
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps(USER, ensure_ascii=False, separators=(",", ":")),
        "auth_date": str(int(at.timestamp())),
        **extra,
    }


def reason(raw: str | None, token: str = TOKEN, now: datetime = NOW) -> str:
    with pytest.raises(InitDataError) as caught:
        validate(raw, token, now)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
    return caught.value.reason


def test_a_correct_signature_is_accepted() -> None:
    data = validate(sign(fields(), TOKEN), TOKEN, NOW)
    assert data.user.id == 42
    assert data.user.first_name == "小鱼" and data.user.username == "fish"
    assert data.user.language_code == "zh-hans"
    assert data.auth_date == NOW and data.query_id == "AAHdF6IQAAAAAN0XohDhrOrc"


def test_the_signature_is_telegrams_recipe_computed_independently() -> None:
    """The documented recipe, written out here on its own: HMAC of the sorted lines with
    the key HMAC("WebAppData", token)."""
    f = fields(signature="abc")  # newer clients add `signature`: it is signed like the rest
    check = "\n".join(f"{k}={f[k]}" for k in sorted(f))
    key = hmac.new(b"WebAppData", TOKEN.encode(), hashlib.sha256).digest()
    digest = hmac.new(key, check.encode(), hashlib.sha256).hexdigest()
    raw = "&".join(f"{k}={quote(v, safe='')}" for k, v in f.items()) + f"&hash={digest}"
    assert validate(raw, TOKEN, NOW).user.id == 42


def test_a_forged_hash_is_refused() -> None:
    raw = sign(fields(), TOKEN)
    pairs = dict(parse_qsl(raw))
    pairs["hash"] = ("0" if pairs["hash"][0] != "0" else "1") + pairs["hash"][1:]
    assert reason(urlencode(pairs)) == "forged"


def test_a_changed_user_is_refused() -> None:
    pairs = dict(parse_qsl(sign(fields(), TOKEN)))
    pairs["user"] = pairs["user"].replace('"id":42', '"id":43')
    assert reason(urlencode(pairs)) == "forged"


def test_another_bots_token_is_refused() -> None:
    assert reason(sign(fields(), OTHER)) == "forged"


def test_stale_and_future_dates_are_refused() -> None:
    assert reason(sign(fields(NOW - timedelta(days=1, seconds=1)), TOKEN)) == "stale"
    assert validate(sign(fields(NOW - timedelta(hours=23)), TOKEN), TOKEN, NOW).user.id == 42
    assert reason(sign(fields(NOW + timedelta(hours=1)), TOKEN)) == "stale"


@pytest.mark.parametrize("raw", [None, ""])
def test_missing_is_refused(raw: str | None) -> None:
    assert reason(raw) == "missing"


def test_without_a_hash_is_refused() -> None:
    assert reason(urlencode(fields())) == "forged"


@pytest.mark.parametrize(
    "raw",
    [
        "garbage",
        "%%%",
        "hash=zz",
        "a=1&a=2&hash=" + "0" * 64,
        "x" * 9000,
    ],
)
def test_garbled_is_refused(raw: str) -> None:
    assert reason(raw) in {"malformed", "forged"}


@pytest.mark.parametrize(
    "change",
    [
        {"user": "not json"},
        {"user": "[1,2]"},
        {"user": '{"id":"42"}'},
        {"user": '{"id":0}'},
        {"auth_date": "yesterday"},
    ],
)
def test_signed_but_garbled_fields_are_refused(change: dict[str, str]) -> None:
    assert reason(sign({**fields(), **change}, TOKEN)) == "malformed"


def test_signed_without_a_user_is_refused() -> None:
    f = fields()
    del f["user"]
    assert reason(sign(f, TOKEN)) == "malformed"


def test_page_language_follows_the_user() -> None:
    assert page_language("zh-hans", "en") == "zh"
    assert page_language("en", "zh") == "en"
    assert page_language("ru", "zh") == "en"
    assert page_language(None, "zh") == "zh"
