"""Abuse control: token buckets per client, in bounded memory, and the middleware using them.

Every limited request class has its own :class:`RateLimiter` keyed by client address (and the
API by partner too). A bucket holds ``burst`` tokens and refills at ``rate`` per second; a
request takes one token or is answered 429 with ``Retry-After`` (the seconds until a token is
back). Each limiter remembers at most ``max_keys`` clients, forgetting the least recently seen
first, so a flood from many addresses costs bounded memory and only makes the limiter forget
(fail open), never refuse honest clients.

What is limited, and why this way (the channels' redelivery decides it):

* ``POST /lapor`` and ``POST /api/v1/complaints``, per address: the citizen's browser or the
  partner app sees the 429 and its ``Retry-After`` and sends again; nothing was received. The
  API's limit is higher (a partner server relays many citizens from one address) and the API
  is also limited per partner (the credential it sends), so one partner cannot starve others.
* ``/webhooks/*``, per address, generously: Meta and Telegram deliver from a few addresses and
  redeliver after a non-2xx answer, so a 429 delays but never loses. There is deliberately no
  per-sender limit on webhooks: one WhatsApp/Meta delivery carries messages of several
  citizens (a 429 would hold back all of them), SMS providers and X polling do not redeliver,
  and a message already received is never dropped. A sender's floods are absorbed by intake
  instead: the same text again within ``repeat_window_s`` is one complaint.
* ``GET /status/…`` and ``GET /api/v1/complaints/{code}``, per address: slows the guessing of
  tracking codes.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from config.settings import GatewaySettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by client, at most ``max_keys`` of them (least recently used go)."""

    def __init__(self, per_minute: float, *, burst_s: float, max_keys: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1.0, self.rate * burst_s)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float | None:
        """Take a token for ``key``: None when allowed, else the seconds until one is back."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate


def client_address(request: web.Request, trust_forwarded_for: bool) -> str:
    """The client's address: the peer, or the last X-Forwarded-For hop behind a trusted proxy
    (the hop our own proxy appended; earlier hops are whatever the client wrote)."""
    if trust_forwarded_for:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        if hops[-1]:
            return hops[-1][:64]
    return request.remote or "unknown"


def _credential_key(request: web.Request) -> str:
    """A partner's bucket key: a digest of the credential it sent (never the key itself). A
    wrong key gets its own bucket and then a 401 from the API connector."""
    credential = request.headers.get("Authorization") or request.headers.get("X-API-Key") or ""
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1 (HTTP's delay-seconds)."""
    return str(max(1, math.ceil(seconds)))


def too_many(retry_after: float, request: web.Request) -> web.Response:
    """The 429 answer: Bahasa Indonesia for people, JSON for machines."""
    headers = {"Retry-After": retry_after_header(retry_after)}
    if request.path.startswith(("/api/", "/webhooks/")):
        return web.json_response({"error": "rate_limited", "retry_after": headers["Retry-After"]},
                                 status=429, headers=headers)
    return web.Response(status=429, headers=headers, content_type="text/plain",
                        text="Terlalu banyak permintaan. Silakan coba lagi dalam "
                             f"{headers['Retry-After']} detik.")


class RateLimits:
    """The limiters of one gateway, by request class."""

    def __init__(self, settings: GatewaySettings) -> None:
        def limiter(per_minute: float) -> RateLimiter | None:
            if per_minute <= 0:
                return None
            return RateLimiter(per_minute, burst_s=settings.rate_limit_burst_s,
                               max_keys=settings.rate_limit_max_clients)

        self._trust = settings.trust_forwarded_for
        self.form = limiter(settings.rate_limit_per_ip)
        self.api = limiter(settings.rate_limit_api_per_ip)
        self.webhook = limiter(settings.rate_limit_webhook_per_ip)
        self.lookup = limiter(settings.rate_limit_lookup_per_ip)
        self.partner = limiter(settings.rate_limit_per_partner)

    def limiter_for(self, request: web.Request) -> RateLimiter | None:
        """The per-address limiter that applies to ``request`` (None: not limited)."""
        path, method = request.path, request.method
        if path.startswith("/webhooks/"):
            return self.webhook
        if method == "POST" and path == "/lapor":
            return self.form
        if method == "POST" and path == "/api/v1/complaints":
            return self.api
        if method == "GET" and path.startswith(("/status/", "/api/v1/complaints/")):
            return self.lookup
        return None

    def middleware(self) -> Middleware:
        """The aiohttp middleware applying the per-address limits."""

        @web.middleware
        async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
            limiter = self.limiter_for(request)
            if limiter is not None:
                wait = limiter.take(client_address(request, self._trust))
                if wait is None and limiter is self.api and self.partner is not None:
                    wait = self.partner.take(_credential_key(request))
                if wait is not None:
                    return too_many(wait, request)
            return await handler(request)

        return rate_limit
