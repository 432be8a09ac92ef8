"""`WEBAPP_URL` must be https, like `WEBHOOK_URL` (http only with a local Bot API server);
unset, there is no page and `/me` says so."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, Settings


def test_webapp_url_must_be_https() -> None:
    assert Settings(webapp_url=None).webapp_address() is None
    assert Settings(webapp_url="  ").webapp_address() is None
    assert Settings(webapp_url="https://pond.example/app/").webapp_address() == (
        "https://pond.example/app/")
    for bad in ("http://pond.example/app/", "ftp://x/", "pond.example/app"):
        with pytest.raises(ConfigError):
            Settings(webapp_url=bad).webapp_address()
    local = Settings(webapp_url="http://127.0.0.1:8089/app/",
                     telegram_api_base="http://127.0.0.1:8081")
    assert local.webapp_address() == "http://127.0.0.1:8089/app/"


def test_the_page_is_served_on_127_0_0_1_8089_by_default() -> None:
    s = Settings()
    assert (s.webapp_host, s.webapp_port) == ("127.0.0.1", 8089)
