"""Settings from the environment and `.env` (pydantic-settings).

Only the composition root (`bot.app`, `bot.cli`) reads settings; everything else gets
the values it needs passed in. Secrets are `SecretStr` so they never print.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/pondbot.db"
_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,100}$")


class ConfigError(Exception):
    """A setting is missing or malformed. The message never contains a secret."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    bot_token: SecretStr | None = None
    database_url: str = Field(default=DEFAULT_DATABASE_URL, repr=False)
    redis_url: SecretStr | None = None
    telegram_api_base: str | None = None
    operator_ids: Annotated[frozenset[int], NoDecode] = frozenset()
    tz: str = "Asia/Shanghai"
    locale: Literal["zh", "en"] = "zh"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    auto_migrate: bool = True

    webhook_url: str | None = None
    webhook_path: str = "/telegram/webhook"
    webhook_secret: SecretStr | None = None
    webhook_host: str = "0.0.0.0"
    webhook_port: int = Field(default=8080, ge=1, le=65535)
    # How many deliveries Telegram keeps in flight at once (setWebhook, 1-100).
    webhook_max_connections: int = Field(default=40, ge=1, le=100)
    health_path: str = "/healthz"  # for the load balancer: 200 when this instance serves

    # The members' page (F15): its public address, and where polling mode serves it.
    webapp_url: str | None = None
    webapp_host: str = "127.0.0.1"
    webapp_port: int = Field(default=8089, ge=1, le=65535)

    @field_validator("operator_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p for p in re.split(r"[,\s;]+", value.strip()) if p]
            try:
                return frozenset(int(p) for p in parts)
            except ValueError:
                raise ValueError("OPERATOR_IDS must be user ids separated by commas") from None
        if isinstance(value, int):
            return frozenset({value})
        return value

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # `Asia`: a folder of tzdata
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def token(self) -> str:
        """The bot token, checked. Raises `ConfigError` with a message free of the token."""
        raw = self.bot_token.get_secret_value().strip() if self.bot_token else ""
        if not raw:
            raise ConfigError(
                "BOT_TOKEN is not set (get one from @BotFather, or try `pondbot demo`)"
            )
        if not _TOKEN_RE.match(raw):
            raise ConfigError(
                "BOT_TOKEN is malformed: expected <bot id>:<secret> as @BotFather gives it"
            )
        return raw

    def webhook_endpoint(self) -> str:
        """The URL Telegram posts updates to: `WEBHOOK_URL` + `WEBHOOK_PATH`. It must be
        https, except with `TELEGRAM_API_BASE` set (a local Bot API server), where http
        is accepted. Raises `ConfigError` otherwise."""
        from urllib.parse import urlsplit

        raw = (self.webhook_url or "").strip()
        if not raw:
            raise ConfigError("--webhook needs WEBHOOK_URL (the public https URL Telegram calls)")
        parts = urlsplit(raw)
        allowed = ("https", "http") if self.telegram_api_base else ("https",)
        if parts.scheme.lower() not in allowed or not parts.hostname:
            raise ConfigError(
                "WEBHOOK_URL must be an https URL (http only with TELEGRAM_API_BASE, "
                "a local Bot API server)"
            )
        if not self.webhook_path.startswith("/"):
            raise ConfigError("WEBHOOK_PATH must start with /")
        return raw.rstrip("/") + self.webhook_path

    def webapp_address(self) -> str | None:
        """`WEBAPP_URL`, the page's public address (the `/me` button opens it), or None
        when unset. Like `WEBHOOK_URL` it must be https, except with `TELEGRAM_API_BASE`
        set. Raises `ConfigError` otherwise."""
        from urllib.parse import urlsplit

        raw = (self.webapp_url or "").strip()
        if not raw:
            return None
        parts = urlsplit(raw)
        allowed = ("https", "http") if self.telegram_api_base else ("https",)
        if parts.scheme.lower() not in allowed or not parts.hostname:
            raise ConfigError(
                "WEBAPP_URL must be an https URL (http only with TELEGRAM_API_BASE, "
                "a local Bot API server)"
            )
        return raw

    def webhook_secret_value(self) -> str:
        raw = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", raw):
            raise ConfigError(
                "--webhook needs WEBHOOK_SECRET: 1-256 characters of A-Z, a-z, 0-9, _ and -"
            )
        return raw


def load_settings() -> Settings:
    """Read settings, turning validation errors into one short line per problem."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            lines.append(f"{where}: {err['msg']}")
        raise ConfigError("; ".join(lines)) from None
