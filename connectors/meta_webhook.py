"""What the WhatsApp and the Messenger/Instagram webhooks share: handshake, signature, the
accept loop, media downloads that never block the answer, and delivery states.

A subclass parses Meta's payload into :class:`Parsed` (pure, no I/O) and says how to fetch a
:class:`MediaRef`; :class:`GraphWebhookConnector` does the rest:

* ``GET``: the verification handshake: ``hub.mode=subscribe`` and ``hub.verify_token`` equal to
  ours (constant time) answers 200 with the raw ``hub.challenge`` as text/plain; else 403.
* ``POST``: the body is read up to ``max_body_bytes`` (413 beyond), ``X-Hub-Signature-256`` is
  checked over the **raw bytes** before anything is parsed (403 when missing or wrong: Meta
  retries, nothing is stored), invalid JSON is 400 and is handed to the dead-letter hook.
  Every message is submitted in payload order; the answer is 200 only once every one of them
  was accepted by the durable intake (``StoreUnavailable`` is 503 with Retry-After, so Meta
  redelivers; what was stored already is absorbed by exact dedup on the wamid/mid).
* Media: each download+store runs as a task; the answer waits for it at most
  ``media_inline_budget_s`` (shared by the whole request). A slower one is submitted as
  ``Attachment(state="pending")``; the task keeps retrying (``errors.retry_policy``) and then
  submits a follow-up ``RawMessage`` (``native_id = "<id>#media"``, ``thread_of`` the
  complaint) carrying the stored attachment, or a rejected one when it finally fails.
* A location/media message within ``conversation_window_s`` of an earlier message of the same
  sender becomes ``thread_of`` that complaint (``Intake.recent_complaint``).
* ``STATUS KODE`` (any case, one code-like word) is no complaint: it is answered in the
  background with :meth:`Intake.public_status` (never the reporter's identity).
* Statuses (``statuses[]``, Messenger ``delivery``) never make complaints; they advance
  :class:`DeliveryTracker` (sent < delivered < read, failed is final) and the optional
  intake's ``record_delivery``.

Nothing from a citizen (text, names, numbers) is logged: ids, kinds and counts only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import mimetypes
import time
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from aiohttp import web

from config.whatsapp import GraphWebhookSettings
from connectors.base import (
    MEDIA_REF,
    BaseConnector,
    Intake,
    IntakeResult,
    RawMessage,
    Sender,
)
from connectors.commands import parse_text_command, status_text
from connectors.inbox_worker import Inbox, InboxWorker
from connectors.meta_graph import GraphClient, check_sha256
from errors import LaporError, StoreUnavailable, ValidationFailed, retry_policy
from normalizer.ids import complaint_id, parse_tracking_code, tracking_code
from normalizer.schema import Attachment, AttachmentState, Location

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
RETRY_AFTER_S = "5"  # what a 503 asks Meta to wait (Meta uses its own backoff anyway)
MEDIA_RESULT_KEEP_S = 600.0  # a finished download is reused by redeliveries this long
#: Senders whose last message this process remembers (the newest; about 250 bytes each). One
#: pushed out falls back to the time kept with their complaint (``customer_msg_at``): at worst a
#: reply goes as a template although a free-form one was allowed. A bound by count, not by the
#: 24-hour window: a peak day brings far more senders than a process should keep.
LAST_INBOUND_KEPT = 50_000
DELIVERY_STATES_KEPT = 100_000
JSON = "application/json"
STATUS_ANSWERED_KEPT = 10_000  # status queries remembered, so a redelivery is not re-answered

#: (channel, account, reason, raw bytes, content type) -> kept durably somewhere.


@dataclass(frozen=True, slots=True)
class MediaRef:
    """A file a message refers to, not yet downloaded."""

    kind: str  # image | video | audio | document | file
    name: str
    mime_type: str | None
    sha256: str | None  # lowercase hex, as given by the webhook (None: not given/unreadable)
    media_id: str | None = None  # WhatsApp: fetched through GET /{media-id}
    url: str | None = None  # Messenger/Instagram: a CDN url in the payload

    def placeholder(self, state: AttachmentState) -> Attachment:
        """The attachment as recorded before (pending) or without (rejected) its bytes."""
        ref = f"graph-media:{self.media_id}" if self.media_id else None
        return Attachment(name=self.name[:255], content_type=(self.mime_type or
                          "application/octet-stream")[:127], size=0, sha256=self.sha256,
                          storage_ref=ref, state=state)


@dataclass(slots=True)
class Inbound:
    """One message that becomes a complaint (or a follow-up of one)."""

    channel: str
    account: str
    native_id: str
    kind: str
    sender: Sender
    sender_key: str
    sent_at: datetime | None
    text: str
    location: Location | None = None
    media: tuple[MediaRef, ...] = ()
    joins_window: bool = False
    reply_hints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """The delivery state of a message we sent (``statuses[]``, Messenger ``delivery``)."""

    channel: str
    account: str
    message_id: str
    status: str  # sent | delivered | read | failed
    timestamp: float | None
    error_codes: tuple[int, ...] = ()


@dataclass(slots=True)
class Parsed:
    """What one webhook body holds."""

    messages: list[Inbound] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # kinds: reaction, sticker, echo...
    malformed: list[str] = field(default_factory=list)  # reasons, without content



_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 3}


class DeliveryTracker:
    """The newest known delivery state of each message we sent, out-of-order safe.

    In memory and bounded: the durable record belongs to the reply queue (see the report).
    """

    def __init__(self, limit: int = DELIVERY_STATES_KEPT) -> None:
        self._states: OrderedDict[str, StatusUpdate] = OrderedDict()
        self._limit = limit

    def update(self, status: StatusUpdate) -> bool:
        """Record ``status`` unless a later state is known; True when it changed the state."""
        current = self._states.get(status.message_id)
        rank = _RANK.get(status.status, 0)
        if current is not None and (_RANK.get(current.status, 0) >= rank):
            return False
        self._states[status.message_id] = status
        self._states.move_to_end(status.message_id)
        while len(self._states) > self._limit:
            self._states.popitem(last=False)
        return True

    def get(self, message_id: str) -> StatusUpdate | None:
        """The known state of one of our messages."""
        return self._states.get(message_id)


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is ``sha256=<hex HMAC-SHA256 of body>`` (constant time)."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, header[7:].strip().lower().encode("utf-8", "replace"))


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def media_name(kind: str, media_id: str | None, mime_type: str | None,
               filename: str | None = None) -> str:
    """The file name a downloaded medium is stored under."""
    if filename:
        return filename
    ext = mimetypes.guess_extension((mime_type or "").split(";")[0].strip()) or ""
    return f"{kind}-{media_id or 'lampiran'}{ext}"


def epoch(value: object, *, millis: bool = False) -> datetime | None:
    """A Meta timestamp (string or number of seconds, or milliseconds) as an aware datetime."""
    try:
        seconds = float(value) / (1000 if millis else 1)  # type: ignore[arg-type]
        return datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


class GraphWebhookConnector(BaseConnector):
    """Base of :class:`connectors.whatsapp.WhatsAppConnector` and
    :class:`connectors.meta.MetaConnector`: see the module docstring."""

    path: ClassVar[str]
    objects: ClassVar[frozenset[str]]

    def __init__(self, settings: GraphWebhookSettings, graph: GraphClient, *,
                 public_url: str | None) -> None:
        super().__init__()
        self._settings = settings
        self._graph = graph
        self._public_url = public_url
        self._secret = (settings.app_secret.get_secret_value().encode()
                        if settings.app_secret is not None else None)
        self._media: dict[tuple[str, str, str, int], asyncio.Task[Attachment]] = {}
        self._followups: set[tuple[str, str, str, int]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        #: (channel, account, address) -> when they last wrote, least recent first.
        self._last_inbound: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._answered: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        #: Delivery states of our sent messages (also recorded through the intake).
        self.deliveries = DeliveryTracker()
        self._inbox: Inbox | None = None
        self._worker: InboxWorker | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.get(self.path, self.handshake), web.post(self.path, self.receive)]

    @property
    def settings(self) -> GraphWebhookSettings:
        return self._settings

    def use_inbox(self, inbox: Inbox) -> None:
        """Answer each webhook once its body is kept in ``inbox`` (before :meth:`start`); a
        worker parses and submits the kept bodies in the background. Without an inbox a
        webhook is answered once every message in it is durable in the outbox."""
        self._inbox = inbox

    async def start(self, intake: Intake) -> None:
        """Open the Graph client and resume the media downloads a previous run left pending;
        the routes are mounted already. With an inbox, start its worker."""
        await self._graph.start()
        await super().start(intake)
        if self._inbox is not None:
            self._worker = InboxWorker(self._inbox, self.name, self._handle, self._order_key,
                                       self._inbox_failed)
            self._worker.start()
        for name, value in (await intake.list_cursors(self._pending_prefix)).items():
            try:
                message, index, ref, parent = _pending_from_json(value)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error("%s: unreadable pending media %s dropped: %s", self.name, name, exc)
                await intake.delete_cursor(name)
                continue
            key = (message.channel, message.account, message.native_id, index)
            self._followups.add(key)
            self.count("media_resumed")
            self._spawn(self._follow_up(message, index, ref, self._media_task(key, ref), parent))

    async def stop(self) -> None:
        """Stop accepting; cancel background downloads (each stays recorded as pending media
        and is resumed by the next start) and close the client."""
        await super().stop()
        if self._worker is not None:
            await self._worker.stop()
        tasks = list(self._background) + list(self._media.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._graph.close()

    # -- subclass hooks ----------------------------------------------------------------------

    @abstractmethod
    def parse(self, payload: dict[str, Any]) -> Parsed:
        """Everything in one verified, decoded webhook body (pure, no I/O)."""

    @abstractmethod
    async def send_text(self, message: Inbound, text: str) -> str | None:
        """Answer ``message``'s sender right away (inside the 24-hour window: they just
        wrote); raise ``ChannelUnavailable`` / ``ChannelRejected`` like ``send_reply``."""

    @abstractmethod
    async def fetch_media(self, ref: MediaRef) -> bytes:
        """Download ``ref`` once; raise ``ChannelUnavailable`` (retried) or a permanent
        ``ChannelRejected`` / ``AttachmentRejected``."""

    # -- HTTP --------------------------------------------------------------------------------

    async def handshake(self, request: web.Request) -> web.Response:
        """``GET``: Meta's subscription check; answers the raw ``hub.challenge``."""
        query = request.query
        expected = self._settings.verify_token
        given = query.get("hub.verify_token")
        if (query.get("hub.mode") != "subscribe" or expected is None or given is None
                or not hmac.compare_digest(given.encode(),
                                           expected.get_secret_value().encode())):
            self.count("bad_verify_token")
            return web.Response(status=403, text="verification failed")
        challenge = query.get("hub.challenge")
        if challenge is None:
            return web.Response(status=400, text="hub.challenge missing")
        return web.Response(text=challenge, content_type="text/plain")

    async def receive(self, request: web.Request) -> web.Response:
        """``POST``: verify, parse, submit every message, answer once all are durable."""
        limit = self._settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _problem(413, "too_large", f"body over {limit} bytes")
        body = await _read_limited(request, limit)
        if body is None:
            return _problem(413, "too_large", f"body over {limit} bytes")
        if self._secret is None or not verify_signature(
                self._secret, body, request.headers.get("X-Hub-Signature-256")):
            self.count("bad_signature")
            log.warning("%s: webhook refused: missing or wrong X-Hub-Signature-256", self.name)
            return _problem(403, "bad_signature", "missing or wrong X-Hub-Signature-256")
        if not self.accepting:
            return _problem(503, "paused", f"the {self.name} connector is paused",
                            retry_after=True)
        try:
            if self._inbox is not None:
                await self._inbox.put(self.name, body)
                return web.json_response({"kept": True})
            return web.json_response(await self._handle(body))
        except StoreUnavailable as exc:
            log.warning("%s: store unavailable, Meta will redeliver: %s", self.name, exc)
            return _problem(503, "unavailable", "not stored; retry", retry_after=True)

    async def _handle(self, body: bytes, received_at: datetime | None = None) -> dict[str, Any]:
        """A verified body: parse, submit every message, record the statuses; what to answer.
        Raises ``StoreUnavailable`` (nothing lost: the sender redelivers, or the inbox keeps
        the body for another try)."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.count("invalid_json")
            await self._dead(self.name, "", "signed body is not valid JSON", body)
            # Kept as a dead letter; Meta must not redeliver the same bytes for days.
            return {"received": 0, "dead_letter": True}
        if not isinstance(payload, dict) or payload.get("object") not in self.objects:
            kind = payload.get("object") if isinstance(payload, dict) else type(payload).__name__
            self.count("ignored_objects")
            log.info("%s: webhook object %r ignored", self.name, str(kind)[:40])
            return {"received": 0}
        parsed = self.parse(payload)
        for kind in parsed.ignored:
            self.count(f"ignored_{kind}")
        if parsed.ignored:
            log.info("%s: recorded without a complaint: %s", self.name,
                     ", ".join(sorted(set(parsed.ignored))))
        if parsed.malformed:
            self.count("malformed", len(parsed.malformed))
            await self._dead(self.name, "", "; ".join(parsed.malformed)[:1000], body)
        for message, exc in await self._take(parsed, body, received_at):
            # Cannot be a complaint; retrying won't help: kept for an operator.
            log.info("%s: message %s rejected: %s", self.name, message.native_id, exc)
            await self._dead(message.channel, message.account, f"rejected: {exc}", body)
        return {"received": len(parsed.messages), "statuses": len(parsed.statuses)}

    def _order_key(self, body: bytes) -> str:
        """Whose messages a kept body holds (its first sender): one sender's bodies are
        handled in order. Unparseable bodies share one key."""
        try:
            payload = orjson.loads(body)
            parsed = self.parse(payload) if isinstance(payload, dict) else None
        except Exception:  # noqa: BLE001 - the handler reports it; here it only needs a key
            return ""
        if parsed is None or not parsed.messages:
            return ""
        first = parsed.messages[0]
        return f"{first.channel}:{first.account}:{first.sender_key}"

    async def _inbox_failed(self, body: bytes, exc: Exception) -> None:
        self.count("inbox_failed")
        await self._dead(self.name, "", f"handling failed: {type(exc).__name__}", body)

    async def replay(self, payload: bytes, content_type: str) -> IntakeResult | None:
        """A kept webhook body handled again, as :meth:`receive` would.

        Dead letters are only kept after the signature was verified (an unsigned body is
        refused with 403 and never stored), so the bytes are not checked again. Messages
        already accepted with the body are duplicates (exact dedup on the wamid/mid); what is
        still malformed or rejected raises ``ValidationFailed`` (the dead letter stays).
        """
        if content_type == MEDIA_REF:
            return await self._replay_media(payload)
        try:
            decoded = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise ValidationFailed("kept body is still not valid JSON") from exc
        if not isinstance(decoded, dict) or decoded.get("object") not in self.objects:
            raise ValidationFailed(f"kept body is not a {self.name} webhook object")
        parsed = self.parse(decoded)
        outcome: list[tuple[Inbound, ValidationFailed]] = []

        async def take() -> None:
            outcome.extend(await self._take(parsed, payload))

        result = await self.captured(take())
        problems = parsed.malformed + [f"rejected {m.native_id}: {e}" for m, e in outcome]
        if problems:
            raise ValidationFailed("; ".join(problems)[:1000])
        return result

    async def _take(self, parsed: Parsed, body: bytes, received_at: datetime | None = None
                    ) -> list[tuple[Inbound, ValidationFailed]]:
        """Answer the commands, submit every message in order, record the statuses; the
        messages that cannot be complaints, with why. Raises ``StoreUnavailable``."""
        deadline = asyncio.get_running_loop().time() + self._settings.media_inline_budget_s
        rejected: list[tuple[Inbound, ValidationFailed]] = []
        for message in parsed.messages:
            if message.kind == "text" and (command := parse_text_command(message.text)):
                self._command(message, *command)
                continue
            try:
                await self._accept(message, body, deadline, received_at)
            except ValidationFailed as exc:
                rejected.append((message, exc))
        for status in parsed.statuses:
            await self._record_status(status)
        return rejected

    # -- accepting one message ---------------------------------------------------------------

    async def _accept(self, message: Inbound, body: bytes, deadline: float,
                      received_at: datetime | None = None) -> IntakeResult:
        own_id = complaint_id(message.channel, message.account, message.native_id)
        thread_of = None
        window = self._settings.conversation_window_s
        if message.joins_window and window > 0:
            recent = await self.intake.recent_complaint(
                channel=message.channel, account=message.account,
                sender_key=message.sender_key, within_s=window)
            if recent is not None and recent.complaint_id != own_id:
                thread_of = recent.complaint_id
        loop = asyncio.get_running_loop()
        attachments: list[Attachment] = []
        pending: list[tuple[int, MediaRef, asyncio.Task[Attachment]]] = []
        failed: list[tuple[int, MediaRef, asyncio.Task[Attachment]]] = []
        for index, ref in enumerate(message.media):
            task = self._media_task((message.channel, message.account, message.native_id,
                                     index), ref)
            remaining = deadline - loop.time()
            if not task.done() and remaining > 0:
                await asyncio.wait({task}, timeout=remaining)
            if task.done():
                attachments.append(self._settled(task, ref))
                if task.exception() is not None:
                    failed.append((index, ref, task))
            else:
                self.count("media_pending")
                attachments.append(ref.placeholder(AttachmentState.PENDING))
                pending.append((index, ref, task))
        hints = dict(message.reply_hints)
        if thread_of is not None:
            hints["thread_of"] = thread_of
        self._note_inbound(message)
        raw = RawMessage(
            channel=message.channel, account=message.account, native_id=message.native_id,
            received_at=received_at or datetime.now(UTC), sent_at=message.sent_at,
            sender=message.sender,
            text=message.text, location=message.location, attachments=tuple(attachments),
            thread_of=thread_of, connector=self.name, raw_payload=body, raw_content_type=JSON,
            reply_hints=hints,
        )
        # Pending downloads are recorded before the complaint is submitted, so no order of
        # failures (store down between the two, Meta redelivering) can leave one unrecorded;
        # a restart resumes them (start()).
        provisional = IntakeResult(own_id, tracking_code(own_id), False)
        for index, ref, _ in pending:
            await self.intake.save_cursor(self._pending_name(message, index),
                                          _pending_to_json(message, index, ref, provisional))
        result = await self.submit(raw)
        for index, ref, task in failed:  # given up already (the same bytes: one dead letter)
            await self._media_given_up(message, index, ref, task, result)
        for index, ref, task in pending:
            key = (message.channel, message.account, message.native_id, index)
            if (result.complaint_id, result.tracking_code) != (own_id, provisional.tracking_code):
                await self.intake.save_cursor(self._pending_name(message, index),
                                              _pending_to_json(message, index, ref, result))
            if key not in self._followups:
                self._followups.add(key)
                self._spawn(self._follow_up(message, index, ref, task, result))
        return result

    @property
    def _pending_prefix(self) -> str:
        return f"media:{self.name}:"

    def _pending_name(self, message: Inbound, index: int) -> str:
        return (f"{self._pending_prefix}{message.channel}:{message.account}:"
                f"{message.native_id}#{index}")

    def _media_task(self, key: tuple[str, str, str, int],
                    ref: MediaRef) -> asyncio.Task[Attachment]:
        """The download+store task of one medium, shared by concurrent redeliveries."""
        task = self._media.get(key)
        if task is None or task.cancelled():
            task = asyncio.create_task(self._download(ref), name=f"{self.name}-media")
            self._media[key] = task
            loop = asyncio.get_running_loop()

            def forget(done: asyncio.Task[Attachment]) -> None:
                loop.call_later(MEDIA_RESULT_KEEP_S, self._forget_media, key, done)

            task.add_done_callback(forget)
        return task

    def _forget_media(self, key: tuple[str, str, str, int],
                      task: asyncio.Task[Attachment]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: a failure was logged where it was used
        if self._media.get(key) is task:
            del self._media[key]
            self._followups.discard(key)

    async def _download(self, ref: MediaRef) -> Attachment:
        """Download, verify and store, retried with the shared policy until
        ``media_retry_for_s``; raises the last error when it gives up."""
        async for attempt in retry_policy(max_delay=self._settings.media_retry_for_s):
            with attempt:
                data = await self.fetch_media(ref)
                check_sha256(data, ref.sha256)
                stored = await self.intake.store_attachment(
                    name=ref.name, declared_type=ref.mime_type, data=data)
                self.count("media_stored")
                return stored
        raise AssertionError("unreachable: retry_policy re-raises")

    def _settled(self, task: asyncio.Task[Attachment], ref: MediaRef) -> Attachment:
        exc = task.exception()
        if exc is None:
            return task.result()
        self.count("media_failed")
        log.warning("%s: media %s not stored: %s: %s", self.name, ref.media_id or ref.kind,
                    type(exc).__name__, exc)
        return ref.placeholder(AttachmentState.REJECTED)

    async def _follow_up(self, message: Inbound, index: int, ref: MediaRef,
                         task: asyncio.Task[Attachment], parent: IntakeResult) -> None:
        """Once the pending medium is stored (or finally failed), submit it as a follow-up of
        the complaint that announced it."""
        await asyncio.wait({task})
        attachment = self._settled(task, ref)
        raw = _media_message(message, index, ref, attachment, parent, self.name)
        try:
            async for attempt in retry_policy(max_delay=self._settings.media_retry_for_s):
                with attempt:
                    await self.submit(raw)
                    if attachment.state is not AttachmentState.STORED:
                        await self._media_given_up(message, index, ref, task, parent)
            await self.intake.delete_cursor(self._pending_name(message, index))
        except LaporError as exc:  # stays recorded as pending: the next start resumes it
            log.error("%s: follow-up %s not stored: %s", self.name, raw.native_id, exc)
            return
        self.count("media_followups")

    async def _media_given_up(self, message: Inbound, index: int, ref: MediaRef,
                              task: asyncio.Task[Attachment], parent: IntakeResult) -> None:
        """Keep a medium whose download was given up as a dead letter (its reference and
        why), so an operator sees it and can replay it (:meth:`_replay_media`)."""
        error = task.exception()
        await self._dead(message.channel, message.account,
                         f"media never downloaded: {type(error).__name__}: {error}"[:1000],
                         _pending_to_json(message, index, ref, parent).encode(),
                         content_type=MEDIA_REF)

    async def _replay_media(self, payload: bytes) -> IntakeResult:
        """A medium that never downloaded, tried once more; stored, it joins the complaint
        as a follow-up of its own (``<id>#mediaN-replay``: a second replay is a duplicate)."""
        try:
            message, index, ref, parent = _pending_from_json(payload.decode())
        except (UnicodeDecodeError, orjson.JSONDecodeError, KeyError, TypeError,
                ValueError) as exc:
            raise ValidationFailed(f"unreadable media reference: {type(exc).__name__}") from exc
        try:
            data = await self.fetch_media(ref)
            check_sha256(data, ref.sha256)
            attachment = await self.intake.store_attachment(
                name=ref.name, declared_type=ref.mime_type, data=data)
        except StoreUnavailable:
            raise
        except LaporError as exc:
            raise ValidationFailed(f"media still not downloadable: {type(exc).__name__}: "
                                   f"{exc}") from exc
        return await self.submit(_media_message(message, index, ref, attachment, parent,
                                                self.name, replayed=True))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=f"{self.name}-followup")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- status queries, delivery statuses, windows, dead letters -----------------------------

    def _command(self, message: Inbound, meaning: str, typed: str) -> None:
        """``STATUS KODE`` / ``BATAL KODE``: answered in the background, once per message id."""
        self.count("status_queries" if meaning == "status" else "withdrawals")
        self._note_inbound(message)
        key = (message.channel, message.account, message.native_id)
        if key in self._answered:
            return
        self._answered[key] = None
        while len(self._answered) > STATUS_ANSWERED_KEPT:
            self._answered.popitem(last=False)
        self._spawn(self._answer_command(message, meaning, typed))

    async def _answer_command(self, message: Inbound, meaning: str, typed: str) -> None:
        try:
            if meaning == "status":
                code = parse_tracking_code(typed) if typed else None
                status = await self.intake.public_status(code) if code else None
                answer = status_text(code or typed.strip(), status)
            else:
                answer = await self.intake.withdraw(
                    channel=message.channel, account=message.account,
                    sender_key=message.sender_key, typed_code=typed or None)
            await self.send_text(message, answer)
        except LaporError as exc:  # the citizen can ask again
            self.record_error(f"command reply failed: {type(exc).__name__}")
            log.warning("%s: reply to command %s failed: %s", self.name, message.native_id, exc)


    async def _record_status(self, status: StatusUpdate) -> None:
        self.count("statuses")
        # Durable first (the store only moves states forward): if it fails, Meta gets 503,
        # redelivers, and the status is recorded then.
        await self.intake.record_delivery(
            channel=status.channel, provider_id=status.message_id, state=status.status,
            at=status.timestamp, error=",".join(str(c) for c in status.error_codes) or None)
        self.deliveries.update(status)
        if status.status == "failed":
            log.warning("%s: our message %s failed: codes %s", self.name, status.message_id,
                        list(status.error_codes))

    def _note_inbound(self, message: Inbound) -> None:
        """Remember when this citizen last wrote (opens Meta's 24-hour reply window)."""
        address = message.reply_hints.get("address")
        if not address:
            return
        when = message.sent_at.timestamp() if message.sent_at else time.time()
        key = (message.channel, message.account, address)
        kept = self._last_inbound
        kept[key] = max(when, kept.get(key, 0.0))
        kept.move_to_end(key)
        while len(kept) > LAST_INBOUND_KEPT:
            kept.popitem(last=False)

    def last_inbound(self, channel: str, account: str, address: str,
                     hints: dict[str, str] | Any) -> float | None:
        """When the citizen last wrote to us (epoch seconds), from the hints kept with the
        complaint and from what this process saw since."""
        times = [self._last_inbound.get((channel, account, address))]
        try:
            times.append(float(hints.get("customer_msg_at", "")))
        except (TypeError, ValueError):
            pass
        known = [t for t in times if t is not None]
        return max(known) if known else None

    async def _dead(self, channel: str, account: str, reason: str, body: bytes, *,
                    content_type: str = JSON) -> None:
        self.count("dead_letters")
        await self.intake.dead_letter(channel=channel, account=account, reason=reason,
                                      payload=body, content_type=content_type)


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it is longer than ``limit``."""
    data = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK):
        data.extend(chunk)
        if len(data) > limit:
            return None
    return bytes(data)


def _problem(status: int, error: str, detail: str, *, retry_after: bool = False) -> web.Response:
    headers = {"Retry-After": RETRY_AFTER_S} if retry_after else None
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)



def _media_message(message: Inbound, index: int, ref: MediaRef, attachment: Attachment,
                   parent: IntakeResult, connector: str, *, replayed: bool = False) -> RawMessage:
    """The follow-up that brings a medium (stored, or finally failed) to its complaint."""
    suffix = ("#media" if index == 0 else f"#media{index}") + ("-replay" if replayed else "")
    if attachment.state is AttachmentState.STORED:
        text = f"Lampiran susulan untuk laporan {parent.tracking_code}: {attachment.name}"
    else:
        text = f"Lampiran untuk laporan {parent.tracking_code} gagal diunduh: {attachment.name}"
    return RawMessage(
        channel=message.channel, account=message.account,
        native_id=f"{message.native_id}{suffix}", received_at=datetime.now(UTC),
        sent_at=message.sent_at, sender=message.sender, text=text,
        attachments=(attachment,), thread_of=parent.complaint_id, connector=connector,
        raw_payload=orjson.dumps({"media_of": message.native_id, "index": index,
                                  "media_id": ref.media_id}),
        raw_content_type=JSON,
        reply_hints={**message.reply_hints, "thread_of": parent.complaint_id},
    )


def _pending_to_json(message: Inbound, index: int, ref: MediaRef, parent: IntakeResult) -> str:
    """What resuming a pending download needs, as the cursor's value."""
    return orjson.dumps({
        "channel": message.channel, "account": message.account,
        "native_id": message.native_id, "index": index,
        "sent_at": message.sent_at.isoformat() if message.sent_at else None,
        "sender": message.sender.model_dump(), "sender_key": message.sender_key,
        "reply_hints": message.reply_hints,
        "ref": {"kind": ref.kind, "name": ref.name, "mime_type": ref.mime_type,
                "sha256": ref.sha256, "media_id": ref.media_id, "url": ref.url},
        "parent": {"id": parent.complaint_id, "code": parent.tracking_code},
    }).decode()


def _pending_from_json(value: str) -> tuple[Inbound, int, MediaRef, IntakeResult]:
    data = orjson.loads(value)
    sent_at = datetime.fromisoformat(data["sent_at"]) if data["sent_at"] else None
    message = Inbound(channel=data["channel"], account=data["account"],
                      native_id=data["native_id"], kind="media",
                      sender=Sender(**data["sender"]), sender_key=data["sender_key"],
                      sent_at=sent_at, text="", reply_hints=dict(data["reply_hints"]))
    ref = MediaRef(**data["ref"])
    parent = IntakeResult(data["parent"]["id"], data["parent"]["code"], True)
    return message, int(data["index"]), ref, parent
