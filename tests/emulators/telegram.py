"""A local Telegram Bot API emulator (aiohttp) for the Telegram connector's tests.

It follows the documented behaviour (docs/CHANNELS.md section 2) closely enough for
python-telegram-bot to talk to it over real HTTP:

* ``/bot<token>/<method>`` for ``getMe``, ``getUpdates`` (offset confirmation, negative
  offsets, ``limit``, long polling with ``timeout``; 409 while a webhook is set),
  ``setWebhook`` / ``deleteWebhook`` / ``getWebhookInfo``, ``getFile`` (400 "file is too big"
  over 20 MB) and ``sendMessage``; a wrong token is 401, an unknown method 404. Parameters come
  as a query string, a form, JSON, or not at all (PTB sends ``getMe`` with an empty body).
* ``/file/bot<token>/<file_path>`` serves the bytes registered with :meth:`add_file`.
* :meth:`fail` queues a 429 (``parameters.retry_after``) or a 502 for a method. After a 429 the
  method stays flood-limited until ``retry_after`` has passed, as on Telegram: a call that comes
  earlier is answered 429 again and counted in ``flood_violations`` (tests count, never time);
  a call arriving within ``IN_FLIGHT_S`` of the 429 was sent before the client could know of it
  (concurrent sends already on the wire) and is answered 429 without counting.
* With a webhook set, pending updates are POSTed to it one at a time, in order, with
  ``X-Telegram-Bot-Api-Secret-Token``; non-2xx answers are retried (``last_error_message``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from tests.emulators.loopback import serve_loopback

DOWNLOAD_LIMIT = 20_000_000  # bytes; Telegram's getFile refuses larger files
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
IN_FLIGHT_S = 0.25  # calls this soon after a 429 were already on the wire when it was sent
_STRING_FIELDS = frozenset({"text", "caption", "url", "secret_token", "file_id", "ip_address"})


class TelegramEmulator:
    """One bot on a fake Bot API server at ``self.url`` (``api_base`` for the connector)."""

    def __init__(self, *, token: str = "123456789:AAE-test_TOKEN_0123456789abcdefghij",
                 bot_id: int = 123456789, username: str = "lapor_prov_bot",
                 webhook_retry_s: float = 0.05) -> None:
        self.token = token
        self.bot_id = bot_id
        self.username = username
        self.webhook_retry_s = webhook_retry_s
        self.url = ""
        #: Updates not yet confirmed (by a higher getUpdates offset or a 2xx webhook answer).
        self.updates: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.responses: Counter[tuple[str, int]] = Counter()
        self.sent: list[dict[str, Any]] = []
        self.deliveries: list[tuple[int, int | None]] = []
        #: How often each update_id was handed out by getUpdates.
        self.served: Counter[int] = Counter()
        self.webhook: dict[str, Any] | None = None
        self.last_error_message: str | None = None
        self.flood_violations = 0
        self.blocked_chats: set[int] = set()
        self._files: dict[str, tuple[str, str, bytes | None, int]] = {}
        self._failures: dict[str, list[tuple[int, int | None]]] = {}
        self._flood_until: dict[str, float] = {}
        self._flood_issued: dict[str, float] = {}
        self._update_ids = itertools.count(10_000)
        self._message_ids = itertools.count(1)
        self._sent_ids = itertools.count(900_000)
        self._arrival = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._delivery: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- server

    async def start(self) -> str:
        """Serve on a free loopback port; return the base URL."""
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner, port = await serve_loopback(app, shutdown_timeout=1.0)
        self.url = f"http://127.0.0.1:{port}"
        self._delivery = asyncio.create_task(self._deliver_loop())
        return self.url

    async def __aenter__(self) -> TelegramEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._delivery is not None:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
        if self._runner is not None:
            await self._runner.cleanup()

    # ----------------------------------------------------------------- test controls

    def fail(self, method: str, status: int, *, retry_after: int | None = None,
             times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``status`` (429 or 5xx)."""
        self._failures.setdefault(method, []).extend([(status, retry_after)] * times)

    def recover(self) -> None:
        """Forget the failures still queued by :meth:`fail`."""
        self._failures.clear()

    def count(self, method: str) -> int:
        """How many times ``method`` was called."""
        return sum(1 for name, _ in self.calls if name == method)

    def add_file(self, data: bytes | None, *, size: int | None = None,
                 name: str = "file.bin") -> tuple[str, str]:
        """Register a downloadable file; ``(file_id, file_unique_id)``. ``data=None`` with a
        ``size`` makes a file known only by its size (e.g. over the 20 MB limit)."""
        index = len(self._files) + 1
        file_id, unique = f"FILE{index:04d}-{name}", f"U{index:04d}"
        real_size = size if size is not None else len(data or b"")
        self._files[file_id] = (unique, f"documents/{unique}_{name}", data, real_size)
        return file_id, unique

    def user(self, user_id: int = 5550001, *, first_name: str = "Siti",
             username: str | None = "siti_warga") -> dict[str, Any]:
        """A citizen's User object."""
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name,
                                "last_name": "Rahma", "language_code": "id"}
        if username:
            user["username"] = username
        return user

    def message(self, text: str | None = None, *, user: dict[str, Any] | None = None,
                chat_type: str = "private", chat_id: int | None = None,
                **fields: Any) -> dict[str, Any]:
        """A Message object from ``user`` (default: one citizen) in a private chat or group."""
        sender = user or self.user()
        if chat_type == "private":
            chat = {"id": sender["id"], "type": "private", "first_name": sender["first_name"]}
        else:
            chat = {"id": chat_id or -100_200_300, "type": chat_type, "title": "Warga RT 05"}
        msg: dict[str, Any] = {"message_id": next(self._message_ids), "from": sender,
                               "chat": chat, "date": int(time.time())}
        if text is not None:
            msg["text"] = text
        msg.update(fields)
        return msg

    def bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "LAPOR Prov",
                "username": self.username}

    def push(self, kind: str = "message", payload: dict[str, Any] | None = None,
             *, update_id: int | None = None) -> dict[str, Any]:
        """Queue an update (``{"update_id": ..., kind: payload}``); returns it."""
        update = {"update_id": next(self._update_ids) if update_id is None else update_id,
                  kind: payload}
        self.updates.append(update)
        self._notify()
        return update

    def push_message(self, text: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Queue a ``message`` update built by :meth:`message`."""
        return self.push("message", self.message(text, **kwargs))

    def push_edit(self, original: dict[str, Any], text: str) -> dict[str, Any]:
        """Queue an ``edited_message`` update for ``original`` with new text."""
        edited = {**original, "text": text, "edit_date": original["date"] + 60}
        return self.push("edited_message", edited)

    def _notify(self) -> None:
        self._arrival.set()
        self._arrival = asyncio.Event()

    # ----------------------------------------------------------------- HTTP

    async def _method(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append((method, params))
        if request.match_info["token"] != self.token:
            return self._error(method, 401, "Unauthorized")
        until = self._flood_until.get(method, 0.0)
        if time.monotonic() < until:
            if time.monotonic() - self._flood_issued.get(method, 0.0) > IN_FLIGHT_S:
                self.flood_violations += 1
            return self._flood(method, max(1, int(until - time.monotonic()) + 1))
        queued = self._failures.get(method)
        if queued:
            status, retry_after = queued.pop(0)
            if status == 429:
                wait = retry_after or 1
                self._flood_until[method] = time.monotonic() + wait
                self._flood_issued[method] = time.monotonic()
                return self._flood(method, wait)
            self.responses[(method, status)] += 1
            return web.Response(status=status, text=f"<html>{status} Bad Gateway</html>",
                                content_type="text/html")
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return self._error(method, 404, "Not Found")
        response: web.StreamResponse = await handler(params)
        return response

    def _ok(self, method: str, result: Any) -> web.Response:
        self.responses[(method, 200)] += 1
        return web.json_response({"ok": True, "result": result})

    def _error(self, method: str, code: int, description: str,
               **extra: Any) -> web.Response:
        self.responses[(method, code)] += 1
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        body.update(extra)
        return web.json_response(body, status=code)

    def _flood(self, method: str, retry_after: int) -> web.Response:
        return self._error(method, 429, f"Too Many Requests: retry after {retry_after}",
                           parameters={"retry_after": retry_after})

    async def _api_getMe(self, params: dict[str, Any]) -> web.Response:
        return self._ok("getMe", {**self.bot_user(), "can_join_groups": True,
                                  "can_read_all_group_messages": False,
                                  "supports_inline_queries": False})

    async def _api_getUpdates(self, params: dict[str, Any]) -> web.Response:
        if self.webhook is not None:
            return self._error("getUpdates", 409, "Conflict: can't use getUpdates method "
                               "while webhook is active; use deleteWebhook to delete the "
                               "webhook first")
        offset = int(params.get("offset") or 0)
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = float(params.get("timeout") or 0)
        if offset > 0:  # confirms every update before it
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        elif offset < 0:
            self.updates = self.updates[offset:]
        deadline = time.monotonic() + timeout
        while True:
            batch = self.updates[:limit]
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                self.served.update(u["update_id"] for u in batch)
                return self._ok("getUpdates", batch)
            arrival = self._arrival
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrival.wait(), remaining)

    async def _api_setWebhook(self, params: dict[str, Any]) -> web.Response:
        url = params.get("url") or ""
        if not url:
            self.webhook = None
        else:
            self.webhook = {"url": url, "secret_token": params.get("secret_token"),
                            "allowed_updates": params.get("allowed_updates")}
            self._notify()
        return self._ok("setWebhook", True)

    async def _api_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook = None
        if params.get("drop_pending_updates") in (True, "true"):
            self.updates.clear()
        return self._ok("deleteWebhook", True)

    async def _api_getWebhookInfo(self, params: dict[str, Any]) -> web.Response:
        info: dict[str, Any] = {"url": self.webhook["url"] if self.webhook else "",
                                "has_custom_certificate": False,
                                "pending_update_count": len(self.updates)}
        if self.last_error_message:
            info["last_error_date"] = int(time.time())
            info["last_error_message"] = self.last_error_message
        return self._ok("getWebhookInfo", info)

    async def _api_getFile(self, params: dict[str, Any]) -> web.Response:
        found = self._files.get(str(params.get("file_id")))
        if found is None:
            return self._error("getFile", 400, "Bad Request: invalid file_id")
        unique, path, _, size = found
        if size > DOWNLOAD_LIMIT:
            return self._error("getFile", 400, "Bad Request: file is too big")
        return self._ok("getFile", {"file_id": params["file_id"], "file_unique_id": unique,
                                    "file_size": size, "file_path": path})

    async def _api_sendMessage(self, params: dict[str, Any]) -> web.Response:
        text = params.get("text")
        if params.get("chat_id") in (None, ""):
            return self._error("sendMessage", 400, "Bad Request: chat_id is empty")
        if not text:
            return self._error("sendMessage", 400, "Bad Request: message text is empty")
        chat_id = int(params["chat_id"])
        if chat_id in self.blocked_chats:
            return self._error("sendMessage", 403, "Forbidden: bot was blocked by the user")
        reply = params.get("reply_parameters") or {}
        reply_to = reply.get("message_id") if isinstance(reply, dict) else None
        reply_to = reply_to or params.get("reply_to_message_id")
        message_id = next(self._sent_ids)
        self.sent.append({"chat_id": chat_id, "text": text, "reply_to_message_id": reply_to,
                          "message_id": message_id})
        chat_type = "private" if chat_id > 0 else "supergroup"
        return self._ok("sendMessage", {"message_id": message_id, "from": self.bot_user(),
                                        "chat": {"id": chat_id, "type": chat_type},
                                        "date": int(time.time()), "text": text})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        for _, file_path, data, _ in self._files.values():
            if file_path == path and data is not None:
                self.calls.append(("download", {"path": path}))
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)

    # ----------------------------------------------------------------- webhook delivery

    async def _deliver_loop(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                hook = self.webhook
                if hook is None or not self.updates:
                    arrival = self._arrival
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(arrival.wait(), 0.5)
                    continue
                update = self.updates[0]
                headers = {"Content-Type": "application/json"}
                if hook.get("secret_token"):
                    headers[SECRET_HEADER] = hook["secret_token"]
                status: int | None = None
                try:
                    async with session.post(hook["url"], data=json.dumps(update).encode(),
                                            headers=headers) as response:
                        status = response.status
                        await response.read()
                except aiohttp.ClientError as exc:
                    self.last_error_message = f"Connection failed: {type(exc).__name__}"
                self.deliveries.append((update["update_id"], status))
                if status is not None and 200 <= status < 300:
                    if self.updates and self.updates[0] is update:
                        self.updates.pop(0)
                    continue
                if status is not None:
                    self.last_error_message = f"Wrong response from the webhook: {status}"
                await asyncio.sleep(self.webhook_retry_s)


async def _params(request: web.Request) -> dict[str, Any]:
    """Query string, then form or JSON body; empty bodies are fine (PTB's getMe)."""
    params: dict[str, Any] = {k: _value(k, v) for k, v in request.query.items()}
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        params.update({k: _value(k, v) for k, v in form.items() if isinstance(v, str)})
        return params
    body = await request.read()
    if body.strip():
        with contextlib.suppress(ValueError):
            data = json.loads(body)
            if isinstance(data, dict):
                params.update(data)
    return params


def _value(key: str, value: str) -> Any:
    """Form values arrive as strings; PTB JSON-encodes everything that is not a string."""
    if key in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
