"""``[connectors.whatsapp]`` and ``[connectors.meta]``: Meta's webhooks and the Graph API.

Both connectors (:mod:`connectors.whatsapp`, :mod:`connectors.meta`) verify Meta's
``X-Hub-Signature-256`` with the App Secret, answer the ``hub.challenge`` handshake with the
verify token, download media and send replies through the Graph API at ``api_base`` (point it
at an emulator in tests). Secrets belong in the environment, e.g.
``LAPOR_CONNECTORS__WHATSAPP__APP_SECRET`` and ``LAPOR_CONNECTORS__WHATSAPP__ACCESS_TOKEN``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from config.base import ConnectorSettings

MiB = 1024 * 1024
#: The Graph API version we were written against (Meta supports each for about two years).
GRAPH_API_BASE = "https://graph.facebook.com/v21.0"
DAY_S = 24 * 3600.0


class GraphWebhookSettings(ConnectorSettings):
    """Fields shared by the WhatsApp and the Messenger/Instagram webhooks."""

    enabled: bool = Field(False, description="Serve the webhook routes and accept messages.")
    verify_token: SecretStr | None = Field(
        None, description="The token typed into the Meta app's webhook settings; GET "
        "handshakes with another hub.verify_token are refused with 403.",
    )
    app_secret: SecretStr | None = Field(
        None, description="The Meta App Secret: key of the X-Hub-Signature-256 HMAC-SHA256 "
        "over the raw body. POSTs without a valid signature are refused with 403.",
    )
    api_base: str = Field(
        GRAPH_API_BASE, description="Graph API base URL including the version (an emulator's "
        "URL in tests).",
    )
    request_timeout_s: float = Field(15.0, gt=0, description="Timeout of one Graph API call.")
    max_body_bytes: int = Field(
        2 * MiB, gt=0, description="Largest webhook body accepted (larger is HTTP 413).",
    )
    conversation_window_s: float = Field(
        120.0, ge=0, description="A location or media message arriving this many seconds after "
        "an earlier message of the same sender joins that complaint (thread_of) instead of "
        "starting one; 0 disables joining.",
    )
    media_max_bytes: int = Field(
        16 * MiB, gt=0, description="Largest media file downloaded; larger ones are recorded "
        "as rejected attachments.",
    )
    inbox: bool = Field(
        True, description="Answer a webhook once its signed body is kept durably (one group "
        "commit per burst) and parse and submit it in the background, so a burst never waits "
        "on normalisation; false answers only once every message is in the outbox.",
    )
    media_inline_budget_s: float = Field(
        2.0, ge=0, description="How long the webhook answer may wait for media to download "
        "(Meta wants 2xx within a few seconds); later media is accepted as a pending "
        "attachment and sent as a follow-up once downloaded.",
    )
    media_retry_for_s: float = Field(
        3600.0, gt=0, description="How long a failing media download keeps being retried "
        "in the background (backoff with jitter, Retry-After honoured).",
    )
    customer_window_s: float = Field(
        DAY_S - 300.0, gt=0, description="Free-form replies are sent only this long after the "
        "citizen's last message (Meta's 24-hour window, minus a safety margin).",
    )


class WhatsAppSettings(GraphWebhookSettings):
    """``[connectors.whatsapp]``: a WhatsApp Business number through the Cloud API."""

    access_token: SecretStr | None = Field(
        None, description="System-user access token (Bearer) for media downloads and sends.",
    )
    phone_number_id: str | None = Field(
        None, description="Our business phone number id: replies go out from it when a "
        "message does not say which number received it. Messages to every number of the "
        "app's WhatsApp Business Account are accepted.",
    )
    template_name: str | None = Field(
        None, description="Approved message template sent instead of free text outside the "
        "24-hour window; its body must have one variable ({{1}}), the tracking code. Unset: "
        "replies outside the window fail with a clear reason.",
    )
    template_language: str = Field("id", description="Language code of the template.")

    @model_validator(mode="after")
    def _credentials(self) -> WhatsAppSettings:
        if self.enabled:
            missing = [key for key in ("verify_token", "app_secret", "access_token")
                       if getattr(self, key) is None]
            if missing:
                raise ValueError(f"enabled whatsapp connector needs {', '.join(missing)}")
        return self


class MetaSettings(GraphWebhookSettings):
    """``[connectors.meta]``: a Facebook Page (Messenger) and its Instagram account."""

    page_access_token: SecretStr | None = Field(
        None, description="Page access token (Bearer) for sends and attachment downloads.",
    )
    messenger: bool = Field(True, description='Accept Messenger messages (object "page").')
    instagram: bool = Field(True, description='Accept Instagram messages (object "instagram").')
    human_agent_tag: bool = Field(
        False, description="Outside the 24-hour window, send with the HUMAN_AGENT message tag "
        "(allowed up to 7 days, needs Meta's Human Agent permission); else such replies fail "
        "with a clear reason.",
    )

    @model_validator(mode="after")
    def _credentials(self) -> MetaSettings:
        if self.enabled:
            missing = [key for key in ("verify_token", "app_secret", "page_access_token")
                       if getattr(self, key) is None]
            if missing:
                raise ValueError(f"enabled meta connector needs {', '.join(missing)}")
        return self
