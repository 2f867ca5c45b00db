"""The Graph API client shared by the WhatsApp and Messenger/Instagram connectors.

Media download (docs/CHANNELS.md 1.4): ``GET {api_base}/{media-id}`` with the Bearer token
answers ``{url, mime_type, sha256, file_size, id, messaging_product}``; the short-lived ``url``
(5 minutes) is fetched **with the same Bearer header**. Sends: ``POST {api_base}/{path}``.

Errors are translated here, at the boundary: 429, 5xx, timeouts and network errors become
:class:`ChannelUnavailable` (``retry_after`` from ``Retry-After``), Graph's throttling codes
too; any other 4xx becomes :class:`GraphRejected` carrying Graph's ``error.code``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from errors import AttachmentRejected, ChannelRejected, ChannelUnavailable

log = logging.getLogger(__name__)

#: Graph error codes that mean "slow down" although the HTTP status is 400
#: (4 app limit, 17 user limit, 32 page limit, 613 calls limit, 80007 WABA limit,
#: 130429 throughput, 131048 spam rate, 131056 pair rate).
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80007, 130429, 131048, 131056})
#: WhatsApp 131047: "re-engagement message", more than 24 h since the customer wrote.
WA_OUTSIDE_WINDOW = 131047
#: Messenger/Instagram 10 / 2018278 (and 551 / 1545041): outside the allowed window.
MESSENGER_OUTSIDE_WINDOW_SUBCODES = frozenset({2018278, 1545041})
DEFAULT_RETRY_AFTER_S = 30.0  # a 429 without Retry-After
CHUNK = 64 * 1024
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class GraphRejected(ChannelRejected):
    """The Graph API refused the request (4xx); ``code`` / ``subcode`` are Graph's."""

    def __init__(self, message: str, *, status: int, code: int | None,
                 subcode: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.subcode = subcode


def normalize_sha256(value: object) -> str | None:
    """A sha256 given by Meta as lowercase hex; Meta documents hex but one sample is base64
    (docs/CHANNELS.md 1.4), so 44-character base64 of 32 bytes is accepted too. None when the
    value is missing or neither form."""
    if not isinstance(value, str) or not value:
        return None
    if _HEX64.match(value):
        return value.lower()
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_"
                               if ("-" in value or "_" in value) else None, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def graph_error(status: int, body: bytes, headers: Any, what: str) -> Exception:
    """The exception for a non-2xx Graph answer (never includes the request's content)."""
    code: int | None = None
    subcode: int | None = None
    message = ""
    try:
        error = orjson.loads(body).get("error") or {}
        code = error.get("code") if isinstance(error.get("code"), int) else None
        subcode = (error.get("error_subcode") if isinstance(error.get("error_subcode"), int)
                   else None)
        message = str(error.get("message") or "")[:200]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    detail = f"{what}: HTTP {status}" + (f" code {code}" if code is not None else "") + \
        (f"/{subcode}" if subcode is not None else "") + (f" ({message})" if message else "")
    if status == 429 or status >= 500 or (code in THROTTLE_CODES):
        retry_after = _retry_after(headers)
        if retry_after is None and status == 429:
            retry_after = DEFAULT_RETRY_AFTER_S
        return ChannelUnavailable(detail, retry_after=retry_after)
    return GraphRejected(detail, status=status, code=code, subcode=subcode)


class GraphClient:
    """A small async client of the Graph API with one Bearer token.

    ``start()`` / ``close()`` own the aiohttp session (call from the event loop). Every method
    raises :class:`ChannelUnavailable` (retriable) or :class:`GraphRejected` (permanent).
    """

    def __init__(self, api_base: str, token: SecretStr | None, *, timeout_s: float) -> None:
        self._base = api_base.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout,
                                                  headers={"User-Agent": "lapor-gateway"})

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            raise ChannelRejected("no Graph API token configured")
        return {"Authorization": f"Bearer {self._token.get_secret_value()}"}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("GraphClient used before start()")
        return self._session

    async def media_info(self, media_id: str) -> dict[str, Any]:
        """``GET /{media-id}``: the media's short-lived ``url``, ``mime_type``, ``sha256``,
        ``file_size``."""
        if not media_id or "/" in media_id or "?" in media_id:
            raise ChannelRejected("invalid media id")
        try:
            async with self.session.get(f"{self._base}/{media_id}",
                                        headers=self._auth()) as response:
                body = await response.read()
                if response.status >= 300:
                    raise graph_error(response.status, body, response.headers, "media info")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ChannelUnavailable(f"media info: {type(exc).__name__}") from exc
        try:
            info = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ChannelUnavailable("media info: answer is not JSON") from exc
        if not isinstance(info, dict) or not isinstance(info.get("url"), str):
            raise ChannelUnavailable("media info: answer has no url")
        return info

    async def fetch(self, url: str, *, bearer: bool, max_bytes: int) -> bytes:
        """GET ``url`` (with the Bearer token when ``bearer``), at most ``max_bytes``.

        Raises :class:`AttachmentRejected` when the file is larger than ``max_bytes``.
        """
        if not url.startswith(("https://", "http://")):
            raise ChannelRejected("media url is not http(s)")
        headers = self._auth() if bearer else {}
        try:
            async with self.session.get(url, headers=headers) as response:
                if response.status >= 300:
                    raise graph_error(response.status, await response.read(),
                                      response.headers, "media download")
                if response.content_length is not None and response.content_length > max_bytes:
                    raise AttachmentRejected("media too large", {"lampiran": "too large"})
                data = bytearray()
                async for chunk in response.content.iter_chunked(CHUNK):
                    data.extend(chunk)
                    if len(data) > max_bytes:
                        raise AttachmentRejected("media too large", {"lampiran": "too large"})
                return bytes(data)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ChannelUnavailable(f"media download: {type(exc).__name__}") from exc

    async def post(self, path: str, payload: dict[str, Any], what: str) -> dict[str, Any]:
        """``POST {api_base}/{path}`` with a JSON body; the decoded JSON answer."""
        try:
            async with self.session.post(
                f"{self._base}/{path.lstrip('/')}", data=orjson.dumps(payload),
                headers={**self._auth(), "Content-Type": "application/json"},
            ) as response:
                body = await response.read()
                if response.status >= 300:
                    raise graph_error(response.status, body, response.headers, what)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ChannelUnavailable(f"{what}: {type(exc).__name__}") from exc
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = {}
        return answer if isinstance(answer, dict) else {}


def check_sha256(data: bytes, *expected: str | None) -> None:
    """Raise :class:`ChannelUnavailable` (retried: a truncated or corrupted transfer) when
    ``data`` does not match every given digest."""
    digest = hashlib.sha256(data).hexdigest()
    for want in expected:
        if want is not None and want != digest:
            raise ChannelUnavailable("media sha256 mismatch")
