"""``[connectors.x]``: mentions of our X (Twitter) account, and optionally a hashtag search.

Reading uses the app's OAuth 2.0 Bearer token; replies (a reply tweet or a DM) need the
account's OAuth 1.0a user context (consumer key/secret + access token/secret). Secrets belong in
the environment (``LAPOR_CONNECTORS__X__BEARER_TOKEN``...).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from config.base import ConnectorSettings


class XSettings(ConnectorSettings):
    """``[connectors.x]``: polling, rate limits and replies."""

    enabled: bool = Field(False, description="Poll X for mentions of user_id.")
    bearer_token: SecretStr | None = Field(
        None, description="App OAuth 2.0 Bearer token (reads mentions and search)."
    )
    user_id: str | None = Field(
        None, description="Numeric id of our account (e.g. @LAPOR1708); its mentions are read."
    )
    username: str | None = Field(
        None,
        description="Our handle without @ (strips a leading @handle from the text when the "
        "tweet carries no mention entities).",
    )
    poll_interval_s: float = Field(
        60.0, gt=0,
        description="Seconds between polls (mentions: 180 requests / 15 min per user, 450 per "
        "app; a rate-limited answer waits for x-rate-limit-reset instead).",
    )
    hashtag: str | None = Field(
        None,
        description='Also search recent tweets with this hashtag (e.g. "#lapor"); unset: '
        "mentions only.",
    )
    max_results: int = Field(
        100, ge=5, le=100,
        description="Tweets per page (5-100; at least 10 with a hashtag). Keep max_results x "
        "max_pages at 800 (what X keeps), or a burst between two polls beyond it is skipped.")
    max_pages: int = Field(
        8, ge=1, le=100, description="Pages per poll (8 x 100 = the 800 mentions X keeps)."
    )
    backfill: bool = Field(
        True,
        description="On the very first poll (no saved since_id), take the mentions X still "
        "returns; false starts from the newest one without submitting older ones.",
    )
    reply_mode: Literal["tweet", "dm", "none"] = Field(
        "tweet",
        description='How citizens get their tracking code: "tweet" (a reply tweet), "dm" (a '
        'direct message) or "none".',
    )
    consumer_key: SecretStr | None = Field(None, description="OAuth 1.0a API key (replies).")
    consumer_secret: SecretStr | None = Field(
        None, description="OAuth 1.0a API key secret (replies)."
    )
    access_token: SecretStr | None = Field(
        None, description="OAuth 1.0a access token of our account (replies)."
    )
    access_token_secret: SecretStr | None = Field(
        None, description="OAuth 1.0a access token secret of our account (replies)."
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Timeout of one API request.")
    max_backoff_s: float = Field(
        900.0, gt=0, description="Longest wait after repeated failures (5xx, network)."
    )

    @model_validator(mode="after")
    def _credentials(self) -> XSettings:
        if not self.enabled:
            return self
        if self.bearer_token is None or not self.user_id:
            raise ValueError("connectors.x needs bearer_token and user_id when enabled")
        if self.reply_mode != "none" and None in (self.consumer_key, self.consumer_secret,
                                                  self.access_token, self.access_token_secret):
            raise ValueError(
                f"reply_mode {self.reply_mode} needs consumer_key, consumer_secret, "
                "access_token and access_token_secret (or set reply_mode = \"none\")")
        if self.hashtag and self.max_results < 10:
            raise ValueError("max_results must be at least 10 with a hashtag (X's recent "
                             "search refuses fewer)")
        return self
