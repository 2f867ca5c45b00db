"""``[connectors.telegram]``: the province's Telegram bot, by webhook or by long polling.

Webhook mode serves ``POST /webhooks/telegram`` and, when ``gateway.public_url`` is set, registers
``<public_url>/webhooks/telegram`` with ``setWebhook`` at start-up. Polling mode runs the
gateway's own ``getUpdates`` loop and keeps the offset as a durable cursor. Secrets belong in the
environment (``LAPOR_CONNECTORS__TELEGRAM__TOKEN``, ``LAPOR_CONNECTORS__TELEGRAM__SECRET_TOKEN``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from config.base import ConnectorSettings

#: Telegram refuses larger downloads through the Bot API: 20 MB, decimal, as PTB's
#: ``telegram.constants.FileSizeLimit.FILESIZE_DOWNLOAD`` (``config/`` imports pydantic only).
TELEGRAM_DOWNLOAD_LIMIT = 20_000_000
#: What ``setWebhook`` accepts as ``secret_token`` (Bot API documentation).
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramSettings(ConnectorSettings):
    """``[connectors.telegram]``: the bot token, how updates arrive, and conversation rules."""

    enabled: bool = Field(False, description="Run the Telegram connector.")
    token: SecretStr = Field(
        SecretStr(""), description="The bot token from @BotFather (required when enabled)."
    )
    mode: Literal["webhook", "polling"] = Field(
        "webhook",
        description='"webhook" (Telegram POSTs to /webhooks/telegram; needs secret_token) or '
        '"polling" (the gateway calls getUpdates; no public URL needed).',
    )
    secret_token: SecretStr | None = Field(
        None,
        description="Webhook secret (1-256 characters A-Z a-z 0-9 _ -), sent by Telegram as "
        "X-Telegram-Bot-Api-Secret-Token; required in webhook mode.",
    )
    api_base: str = Field(
        "https://api.telegram.org",
        description="Bot API base URL (method calls go to <api_base>/bot<token>/<method>, "
        "files to <api_base>/file/bot<token>/<path>); point it at an emulator in tests.",
    )
    poll_timeout_s: int = Field(
        30, ge=0, le=50, description="Long-poll timeout of each getUpdates call (polling mode)."
    )
    poll_limit: int = Field(100, ge=1, le=100, description="Updates fetched per getUpdates call.")
    request_timeout_s: float = Field(
        10.0, gt=0, description="Connect/read/write timeout of Bot API calls and downloads."
    )
    conversation_window_s: float = Field(
        600.0, gt=0,
        description="Album items, locations, contacts and caption-less media sent within this "
        "many seconds of a complaint join it as follow-ups instead of starting a new one.",
    )
    max_download_bytes: int = Field(
        TELEGRAM_DOWNLOAD_LIMIT, gt=0, le=TELEGRAM_DOWNLOAD_LIMIT,
        description="Largest attachment downloaded (Telegram's own limit is 20 MB); larger "
        "files are skipped, the citizen is told, and the text is still accepted.",
    )
    send_interval_s: float = Field(
        1.0 / 30, ge=0,
        description="Least time between two messages the bot sends (Telegram allows about 30 "
        "per second in total).",
    )
    chat_send_interval_s: float = Field(
        1.0, ge=0, description="Least time between two messages to the same chat."
    )
    media_retry_for_s: float = Field(
        30.0, ge=0,
        description="How long a failing attachment download is retried while its message is "
        "handled; then the complaint is accepted without it (the citizen is told) and the file "
        "is kept as a dead letter an operator can replay.",
    )
    drain_timeout_s: float = Field(
        10.0, gt=0, description="How long stop() waits for an update being handled to finish."
    )

    @field_validator("secret_token")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SECRET_RE.match(value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> TelegramSettings:
        if not self.enabled:
            return self
        if not self.token.get_secret_value():
            raise ValueError("connectors.telegram.token is required when the connector is enabled")
        if self.mode == "webhook" and self.secret_token is None:
            raise ValueError("connectors.telegram.secret_token is required in webhook mode")
        return self
