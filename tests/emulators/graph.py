"""A local Graph API emulator (aiohttp, loopback) and builders of Meta's webhook payloads.

:class:`EmulatedGraph` serves what the WhatsApp and Meta connectors call (docs/CHANNELS.md 1.4):

* ``GET /{version}/{media-id}`` with ``Authorization: Bearer <token>`` ->
  ``{url, mime_type, sha256, file_size, id, messaging_product}``;
* ``GET <url>`` (``/_lookaside/{media-id}``), again requiring the same Bearer token;
* ``GET /_cdn/{name}``: Messenger/Instagram attachment URLs (no token);
* ``POST /{version}/{phone-number-id}/messages`` (WhatsApp) and ``POST /{version}/me/messages``
  (Messenger/Instagram) for sends, recorded in ``sent``.

Failures are scripted per kind (``media_info``, ``media_download``, ``cdn``, ``send``):
``fail("media_download", 503, times=2)`` answers 503 twice, then normally; 429 carries
``Retry-After``. ``outside_window`` recipients get Graph's "outside the window" errors.

The payload builders sign exactly the bytes they send: ``json.dumps(..., ensure_ascii=True)``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connectors.base import BaseConnector, Intake
from tests.emulators.loopback import serve_loopback

VERSION = "v21.0"
TOKEN = "graph-test-token"


@dataclass
class Failure:
    status: int
    retry_after: float | None = None
    code: int | None = None
    subcode: int | None = None


class EmulatedGraph:
    """The Graph API on 127.0.0.1 (see the module docstring). Use ``async with``."""

    def __init__(self, *, token: str = TOKEN, version: str = VERSION) -> None:
        self.token = token
        self.version = version
        self.media: dict[str, tuple[bytes, str]] = {}
        self.cdn: dict[str, bytes] = {}
        self.failures: dict[str, deque[Failure]] = {}
        self.calls: Counter[str] = Counter()
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.outside_window: set[str] = set()
        self.bad_auth = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def api_base(self) -> str:
        return f"{self.url}/{self.version}"

    def add_media(self, media_id: str, data: bytes, mime_type: str) -> str:
        """Serve ``data`` as WhatsApp media ``media_id``; its sha256 (hex)."""
        self.media[media_id] = (data, mime_type)
        return hashlib.sha256(data).hexdigest()

    def add_cdn(self, name: str, data: bytes) -> str:
        """Serve ``data`` at a Messenger-style attachment URL; the URL."""
        self.cdn[name] = data
        return f"{self.url}/_cdn/{name}"

    def fail(self, kind: str, status: int, *, times: int = 1, retry_after: float | None = None,
             code: int | None = None, subcode: int | None = None) -> None:
        """Answer the next ``times`` calls of ``kind`` with ``status``."""
        queue = self.failures.setdefault(kind, deque())
        for _ in range(times):
            queue.append(Failure(status, retry_after, code, subcode))

    async def __aenter__(self) -> EmulatedGraph:
        app = web.Application()
        app.router.add_get("/_lookaside/{media_id}", self._lookaside)
        app.router.add_get("/_cdn/{name}", self._cdn)
        app.router.add_get("/{version}/{media_id}", self._media_info)
        app.router.add_post("/{version}/{node}/messages", self._messages)
        self._runner, port = await serve_loopback(app)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers ----------------------------------------------------------------------------

    def _failure(self, kind: str) -> web.Response | None:
        self.calls[kind] += 1
        queue = self.failures.get(kind)
        if not queue:
            return None
        failure = queue.popleft()
        headers = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
        error: dict[str, Any] = {"message": f"emulated {failure.status}", "type": "OAuthException",
                                 "code": failure.code or (4 if failure.status == 429 else 2)}
        if failure.subcode is not None:
            error["error_subcode"] = failure.subcode
        return web.json_response({"error": error}, status=failure.status, headers=headers)

    def _authorised(self, request: web.Request) -> bool:
        ok = request.headers.get("Authorization") == f"Bearer {self.token}"
        if not ok:
            self.bad_auth += 1
        return ok

    @staticmethod
    def _auth_error() -> web.Response:
        return web.json_response({"error": {"message": "Invalid OAuth access token.",
                                             "type": "OAuthException", "code": 190}}, status=401)

    async def _media_info(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._auth_error()
        if (failure := self._failure("media_info")) is not None:
            return failure
        media_id = request.match_info["media_id"]
        if media_id not in self.media:
            return web.json_response({"error": {"message": "Unsupported get request.",
                                                "code": 100}}, status=400)
        data, mime = self.media[media_id]
        return web.json_response({
            "messaging_product": "whatsapp", "url": f"{self.url}/_lookaside/{media_id}",
            "mime_type": mime, "sha256": hashlib.sha256(data).hexdigest(),
            "file_size": str(len(data)), "id": media_id,
        })

    async def _lookaside(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._auth_error()
        if (failure := self._failure("media_download")) is not None:
            return failure
        data, mime = self.media[request.match_info["media_id"]]
        return web.Response(body=data, content_type=mime.split(";")[0])

    async def _cdn(self, request: web.Request) -> web.Response:
        if (failure := self._failure("cdn")) is not None:
            return failure
        name = request.match_info["name"]
        if name not in self.cdn:
            return web.Response(status=404)
        return web.Response(body=self.cdn[name], content_type="application/octet-stream")

    async def _messages(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._auth_error()
        if (failure := self._failure("send")) is not None:
            return failure
        node = request.match_info["node"]
        body = await request.json()
        n = len(self.sent) + 1
        if node == "me":  # Messenger / Instagram
            recipient = body.get("recipient", {}).get("id")
            if not recipient or not body.get("message", {}).get("text"):
                return web.json_response({"error": {"message": "bad send", "code": 100}},
                                         status=400)
            if recipient in self.outside_window and body.get("messaging_type") == "RESPONSE":
                return web.json_response({"error": {
                    "message": "outside of allowed window", "code": 10,
                    "error_subcode": 2018278}}, status=400)
            self.sent.append((node, body))
            return web.json_response({"recipient_id": recipient, "message_id": f"m_out{n}"})
        if body.get("messaging_product") != "whatsapp" or not body.get("to") or \
                body.get("type") not in ("text", "template"):
            return web.json_response({"error": {"message": "bad send", "code": 100}},
                                     status=400)
        if body["to"] in self.outside_window and body["type"] == "text":
            return web.json_response({"error": {
                "message": "Re-engagement message", "code": 131047}}, status=400)
        self.sent.append((node, body))
        return web.json_response({"messaging_product": "whatsapp",
                                  "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                                  "messages": [{"id": f"wamid.OUT{n}"}]})


# -- webhook payloads (docs/CHANNELS.md 1.2) ----------------------------------------------------


def encode(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes Meta sends: escaped unicode (``ensure_ascii=True``)."""
    return json.dumps(payload, ensure_ascii=True).encode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def wa_message(wamid: str, sender: str, kind: str = "text", *, ts: float | None = None,
               **content: Any) -> dict[str, Any]:
    """One ``messages[]`` element; ``content`` is the type's object (``text={"body": ...}``)."""
    message: dict[str, Any] = {"from": sender, "id": wamid,
                               "timestamp": str(int(ts if ts is not None else time.time())),
                               "type": kind}
    message.update(content)
    return message


def wa_change(phone_number_id: str, *, messages: Iterable[dict[str, Any]] = (),
              contacts: Iterable[tuple[str, str]] = (),
              statuses: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """One ``changes[]`` element; ``contacts`` are (wa_id, profile name) pairs."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
    }
    if contacts:
        value["contacts"] = [{"profile": {"name": name}, "wa_id": wa_id}
                             for wa_id, name in contacts]
    if messages:
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {"field": "messages", "value": value}


def wa_payload(*entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``whatsapp_business_account`` body; each argument is one entry's changes."""
    return {"object": "whatsapp_business_account",
            "entry": [{"id": f"WABA{i}", "changes": changes} for i, changes in enumerate(entries)]}


def wa_status(message_id: str, status: str, recipient: str, *, ts: float | None = None,
              error_code: int | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {"id": message_id, "status": status, "recipient_id": recipient,
                               "timestamp": str(int(ts if ts is not None else time.time()))}
    if error_code is not None:
        element["errors"] = [{"code": error_code, "title": "emulated"}]
    return element


def messaging(sender: str, recipient: str, *, ts_ms: int | None = None,
              **event: Any) -> dict[str, Any]:
    """One Messenger/Instagram ``messaging[]`` event (``message={...}``, ``delivery=...``)."""
    element: dict[str, Any] = {"sender": {"id": sender}, "recipient": {"id": recipient},
                               "timestamp": ts_ms if ts_ms is not None else int(time.time() * 1000)}
    element.update(event)
    return element


def meta_payload(obj: str, *entries: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """A ``page`` or ``instagram`` body; each entry is (page/IG id, messaging events)."""
    return {"object": obj, "entry": [{"id": account, "time": int(time.time() * 1000),
                                      "messaging": events} for account, events in entries]}


class WebhookClient:
    """Posts signed webhook bodies to a connector's route, like Meta does."""

    def __init__(self, client: TestClient[Any, Any], path: str, secret: str) -> None:
        self.client = client
        self.path = path
        self.secret = secret

    async def post(self, payload: Mapping[str, Any] | bytes, *,
                   sign_with: str | None = None,
                   headers: Mapping[str, str] | None = None) -> aiohttp.ClientResponse:
        body = payload if isinstance(payload, bytes) else encode(payload)
        all_headers = {"Content-Type": "application/json",
                       "X-Hub-Signature-256": signature(sign_with or self.secret, body)}
        all_headers.update(headers or {})
        response = await self.client.post(self.path, data=body, headers=all_headers)
        await response.read()
        return response


@asynccontextmanager
async def serve(connector: BaseConnector, intake: Intake) -> AsyncIterator[TestClient[Any, Any]]:
    """The connector's routes in an aiohttp server on 127.0.0.1, started with ``intake``."""
    app = web.Application()
    app.router.add_routes(connector.routes())
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    await connector.start(intake)
    try:
        yield client
    finally:
        await connector.stop()
        await client.close()
