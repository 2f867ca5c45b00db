"""An emulated SMS provider: Twilio's Messages API and a generic gateway's send endpoint.

Real HTTP on a free loopback port. Both send endpoints record what they accepted in
``sent``; ``fail_next`` is a list of HTTP statuses answered (in order) before the next
successes, a 429 with ``Retry-After: retry_after``. The Twilio endpoint checks Basic auth, the
generic one ``X-Lapor-Signature`` when ``generic_secret`` is set.

It also plays the provider's inbound side: :meth:`twilio_inbound` and :meth:`generic_inbound`
POST a message to the gateway's webhook, signed like the provider does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.emulators.loopback import serve_loopback


def twilio_sign(token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's X-Twilio-Signature, computed independently of the connector's code."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def generic_sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class SentSms:
    to: str
    sender: str
    text: str
    api: str
    headers: dict[str, str] = field(default_factory=dict)


class EmulatedSmsProvider:
    """The provider's send APIs (Twilio shape and generic shape) on ``self.url``."""

    def __init__(self, *, account_sid: str = "AC0123", auth_token: str = "twilio-token",
                 generic_secret: str | None = None, retry_after: int = 1) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.generic_secret = generic_secret
        self.retry_after = retry_after
        self.sent: list[SentSms] = []
        self.fail_next: list[int] = []
        self.requests = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._twilio_send)
        app.router.add_post("/send", self._generic_send)
        self._runner, port = await serve_loopback(app)
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _failure(self) -> web.Response | None:
        self.requests += 1
        if not self.fail_next:
            return None
        status = self.fail_next.pop(0)
        headers = {"Retry-After": str(self.retry_after)} if status == 429 else {}
        return web.json_response({"code": status, "message": "emulated failure"},
                                 status=status, headers=headers)

    async def _twilio_send(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(
            f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("Authorization") != expected or \
                request.match_info["sid"] != self.account_sid:
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        failure = self._failure()
        if failure is not None:
            return failure
        form = await request.post()
        to, body = str(form.get("To", "")), str(form.get("Body", ""))
        if not to or not body:
            return web.json_response({"code": 21604, "message": "To and Body required"},
                                     status=400)
        self.sent.append(SentSms(to, str(form.get("From", "")), body, "twilio"))
        sid = f"SM{next(self._ids):032x}"
        return web.json_response({"sid": sid, "status": "queued", "to": to, "body": body},
                                 status=201)

    async def _generic_send(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.generic_secret is not None and request.headers.get("X-Lapor-Signature") != \
                generic_sign(self.generic_secret, body):
            return web.json_response({"error": "bad signature"}, status=403)
        failure = self._failure()
        if failure is not None:
            return failure
        data: dict[str, Any] = orjson.loads(body)
        self.sent.append(SentSms(data["to"], data.get("from", ""), data["text"], "generic",
                                 dict(request.headers)))
        return web.json_response({"id": f"gen-{next(self._ids)}"})

    # the inbound side ---------------------------------------------------------------------------

    @staticmethod
    async def twilio_inbound(session: aiohttp.ClientSession, url: str, token: str,
                             params: dict[str, str], *, signed_url: str | None = None,
                             signature: str | None = None) -> aiohttp.ClientResponse:
        """POST ``params`` form-encoded to ``url`` like Twilio: signed over ``signed_url``
        (the public URL Twilio was configured with; default ``url``)."""
        sig = signature if signature is not None else twilio_sign(token, signed_url or url,
                                                                  params)
        async with session.post(url, data=params,
                                headers={"X-Twilio-Signature": sig}) as response:
            await response.read()
            return response

    @staticmethod
    async def generic_inbound(session: aiohttp.ClientSession, url: str, secret: str,
                              message: dict[str, Any], *,
                              signature: str | None = None) -> aiohttp.ClientResponse:
        """POST ``message`` as JSON to ``url`` with ``X-Lapor-Signature``."""
        body = orjson.dumps(message)
        sig = signature if signature is not None else generic_sign(secret, body)
        async with session.post(url, data=body, headers={
                "Content-Type": "application/json", "X-Lapor-Signature": sig}) as response:
            await response.read()
            return response
