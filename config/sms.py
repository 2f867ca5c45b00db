"""``[connectors.sms]``: SMS 1708 through Twilio, a generic Indonesian HTTP gateway, or Gammu SMSD.

Inbound routes (see :mod:`connectors.sms`): ``POST /webhooks/sms/twilio`` for ``provider =
"twilio"``, ``POST /webhooks/sms/generic`` for ``"generic"`` and ``"gammu"`` (Gammu's
``RunOnReceive`` script posts there). Secrets belong in the environment
(``LAPOR_CONNECTORS__SMS__AUTH_TOKEN``, ``LAPOR_CONNECTORS__SMS__GENERIC_HMAC_SECRET``).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from config.base import ConnectorSettings


class SmsSettings(ConnectorSettings):
    """``[connectors.sms]``: inbound webhooks, the send API for replies, multipart handling."""

    enabled: bool = Field(False, description="Accept SMS on the provider's route.")
    provider: Literal["twilio", "generic", "gammu"] = Field(
        "generic",
        description='"twilio" (form webhook, X-Twilio-Signature), "generic" (JSON webhook '
        'with X-Lapor-Signature) or "gammu" (the sms-receive command posts to the generic '
        "route).",
    )
    account: str = Field(
        "1708",
        description="Our number or short code, recorded as the message's account when the "
        "provider does not say which number received it.",
    )
    auth_token: SecretStr | None = Field(
        None, description="Twilio Auth Token: verifies X-Twilio-Signature, authenticates sends."
    )
    account_sid: str | None = Field(None, description="Twilio Account SID (for the send API).")
    from_number: str | None = Field(
        None, description="Sender number or short code for replies (default: the account)."
    )
    send_api_base: str | None = Field(
        None,
        description="Base URL of the provider's send API. Twilio: default "
        "https://api.twilio.com; generic/gammu: POST <base>/send; unset means no replies.",
    )
    generic_hmac_secret: SecretStr | None = Field(
        None,
        description="Shared secret of the generic route: X-Lapor-Signature = "
        "sha256=<hex HMAC-SHA256 of the raw body>; also signs our calls to its send API.",
    )
    send_token: SecretStr | None = Field(
        None, description="Bearer token for the generic provider's send API (optional)."
    )
    multipart_window_s: float = Field(
        600.0, gt=0,
        description="How long the parts of a concatenated SMS are held for the missing ones; "
        "then what arrived is submitted as it is.",
    )
    max_reply_parts: int = Field(
        3, ge=1, le=10,
        description="At most this many SMS per reply (153 GSM-7 / 67 UCS-2 characters each "
        "when split); longer replies are truncated.",
    )
    request_timeout_s: float = Field(15.0, gt=0, description="Timeout of one send API call.")
    gateway_url: str = Field(
        "http://127.0.0.1:8080",
        description="Where `lapor-gateway sms-receive` (Gammu RunOnReceive) posts messages: "
        "the gateway's base URL.",
    )

    @model_validator(mode="after")
    def _credentials(self) -> SmsSettings:
        if not self.enabled:
            return self
        if self.provider == "twilio" and self.auth_token is None:
            raise ValueError("provider twilio needs auth_token")
        if self.provider in ("generic", "gammu") and self.generic_hmac_secret is None:
            raise ValueError(f"provider {self.provider} needs generic_hmac_secret")
        return self


def gammu_environment() -> dict[str, str]:
    """The variables Gammu SMSD's ``RunOnReceive`` sets (``SMS_*``, ``DECODED_*``): the only
    place outside the settings tree that reads the process environment."""
    return {k: v for k, v in os.environ.items() if k.startswith(("SMS_", "DECODED_"))}
