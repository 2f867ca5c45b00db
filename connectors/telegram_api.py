"""The Telegram Bot API boundary: PTB's transport, error translation, log redaction, and the
rate limiter every message the bot sends goes through.

PTB errors never leave this boundary untranslated: ``translate_error`` maps them onto
:mod:`errors` (``ChannelUnavailable`` with ``retry_after`` for 429, 5xx, network and 409;
``ChannelRejected`` for 400, 403, a rejected token and the rest), to be raised ``from`` the
original.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

import orjson
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from errors import ChannelError, ChannelRejected, ChannelUnavailable

T = TypeVar("T")

#: Loggers that print request URLs, which carry the bot token (``.../bot<token>/getMe``).
URL_LOGGERS = ("httpx", "telegram.Bot", "telegram.request.BaseRequest",
               "telegram.request.HTTPXRequest")


# --------------------------------------------------------------------------- error boundary


def _seconds(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class FloodLimited(TelegramError):
    """A Bot API answer with ``parameters.retry_after`` (429), raised by :class:`Request`.

    PTB's own ``RetryAfter`` emits a ``PTBDeprecationWarning`` from its constructor (22.2+,
    unless the ``PTB_TIMEDELTA`` environment variable is set), which is noise in production
    and an error under ``-W error``; we read ``retry_after`` from the answer ourselves instead.
    """

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"Flood control exceeded. Retry in {retry_after:g} seconds")
        self.retry_after = retry_after


class Request(HTTPXRequest):
    """PTB's httpx transport, raising :class:`FloodLimited` for answers with retry_after."""

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, payload = await super().do_request(*args, **kwargs)
        if code >= 400 and payload[:1] == b"{":
            try:
                parameters = orjson.loads(payload).get("parameters") or {}
                retry_after = float(parameters.get("retry_after") or 0)
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                retry_after = 0.0
            if retry_after > 0:
                raise FloodLimited(retry_after)
        return code, payload


def translate_error(exc: TelegramError) -> ChannelError:
    """The gateway's error for a PTB error (raise it ``from`` the original).

    Messages never include the token (PTB's ``InvalidToken`` message may).
    """
    if isinstance(exc, FloodLimited):
        return ChannelUnavailable(f"telegram: flood limit, retry after {exc.retry_after:g}s",
                                  retry_after=exc.retry_after)
    if isinstance(exc, RetryAfter):  # PTB's own, should a 429 bypass Request
        with warnings.catch_warnings():
            # PTB 22.2+ warns when retry_after is read as a number (PTB_TIMEDELTA unset).
            warnings.simplefilter("ignore", PTBDeprecationWarning)
            retry_after = _seconds(exc.retry_after)
        return ChannelUnavailable(f"telegram: flood limit, retry after {retry_after:g}s",
                                  retry_after=retry_after)
    if isinstance(exc, InvalidToken):
        return ChannelRejected("telegram: the bot token was rejected (getMe 401/404)")
    if isinstance(exc, BadRequest):  # a NetworkError subclass in PTB: test it first
        return ChannelRejected(f"telegram: bad request: {exc.message}")
    if isinstance(exc, Forbidden):
        return ChannelRejected(f"telegram: forbidden: {exc.message}")
    if isinstance(exc, ChatMigrated):
        return ChannelRejected("telegram: the group moved to a supergroup")
    if isinstance(exc, TimedOut):
        return ChannelUnavailable("telegram: timed out")
    if isinstance(exc, Conflict):
        # Another poller, or a webhook set by someone else: may settle; back off and retry.
        return ChannelUnavailable(f"telegram: conflict: {exc.message}")
    if isinstance(exc, NetworkError):  # network failures and 5xx
        return ChannelUnavailable(f"telegram: network error: {exc.message}")
    return ChannelRejected(f"telegram: {type(exc).__name__}: {exc.message}")


async def call_api(call: Awaitable[T]) -> T:
    """Await a Bot API call, translating PTB errors at the boundary."""
    try:
        return await call
    except TelegramError as exc:
        raise translate_error(exc) from exc


class RedactToken(logging.Filter):
    """Removes the bot token from records of loggers that print request URLs (httpx, PTB)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        if self._token:
            message = record.getMessage()
            if self._token in message:
                record.msg = message.replace(self._token, "<token>")
                record.args = ()
        return True


# --------------------------------------------------------------------------- sending


class RateLimiter:
    """Spaces the bot's messages (overall and per chat) and pauses everything after a 429.

    ``acquire`` reserves the next free slot and sleeps until it; ``pause`` (called on
    ``RetryAfter``) holds every sender until Telegram's ``retry_after`` has passed, like PTB's
    ``AIORateLimiter``.
    """

    def __init__(self, interval_s: float, chat_interval_s: float) -> None:
        self._interval = interval_s
        self._chat_interval = chat_interval_s
        self._lock = asyncio.Lock()
        self._next_any = 0.0
        self._next_chat: dict[str, float] = {}
        self._paused_until = 0.0

    def paused_for(self) -> float:
        """Seconds left of a 429 pause (0 when sending is allowed)."""
        return max(0.0, self._paused_until - time.monotonic())

    async def acquire(self, chat: str) -> None:
        """Wait until a message to ``chat`` may be sent (short spacing waits only: callers
        check :meth:`paused_for` first and do not sleep through a 429 pause)."""
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._paused_until, self._next_any, self._next_chat.get(chat, 0.0))
            self._next_any = start + self._interval
            self._next_chat[chat] = start + self._chat_interval
            if len(self._next_chat) > 1000:
                self._next_chat = {k: v for k, v in self._next_chat.items() if v > now}
        if start > now:
            await asyncio.sleep(start - now)
        while True:  # a 429 may have arrived while we waited for our slot
            wait = self._paused_until - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every sender for ``seconds`` (a 429's ``retry_after``)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
