"""SMS 1708: Twilio and generic (Indonesian) HTTP gateways, and Gammu SMSD's ``RunOnReceive``.

Inbound routes (mounted by provider, see :class:`config.sms.SmsSettings`):

``POST /webhooks/sms/twilio`` (``provider = "twilio"``)
    Twilio's form-encoded webhook (``MessageSid``, ``From``, ``To``, ``Body``...). The
    ``X-Twilio-Signature`` header must equal base64(HMAC-SHA1(auth_token, URL + every POST
    parameter sorted by name, name and value concatenated)), where URL is rebuilt from
    ``gateway.public_url`` + the request path and query (Twilio signs the URL it called, not
    the one a TLS proxy forwards). Wrong or missing: 403. Twilio joins concatenated SMS itself.

``POST /webhooks/sms/generic`` (``provider = "generic"`` or ``"gammu"``)
    For Indonesian SMS gateways and our own Gammu script. Body (``application/json``)::

        {"id": "provider message id", "from": "0812...", "to": "1708",
         "text": "...", "received_at": "2026-11-29T04:00:00+07:00",
         "parts": {"ref": "a1", "index": 1, "total": 3}}

    ``to``, ``received_at`` and ``parts`` are optional; ``parts`` marks one part of a
    concatenated SMS (``index`` from 1). Header ``X-Lapor-Signature: sha256=<hex>``: the
    HMAC-SHA256 of the raw body with ``generic_hmac_secret``. Wrong or missing: 403;
    malformed JSON: 400.

Both answer only after the message is durable (``Intake.submit`` returned, or the part was
saved): Twilio gets 200 with an empty TwiML ``<Response/>``, the generic route 200
``{"ok": true}``. ``StoreUnavailable`` gives 503 with ``Retry-After`` (the provider retries).

Parts of a concatenated SMS are held until all ``total`` arrived, or until
``multipart_window_s`` after the first one (then the text received so far is submitted). They
are held durably through :meth:`Intake.save_cursor` (one cursor per multipart message plus a
list of pending ones), so a gateway restart between parts loses nothing. Limits: one lock per
process, so two gateway instances receiving parts of the same message at the same instant can
race; a table with a row per part (see the issue report) would remove that.

``STATUS KODE`` (any case) is answered with :meth:`Intake.public_status` through the send API
and is not a complaint; anything else is a complaint. Phone numbers become E.164 (``+62...``).

Replies (:meth:`SmsConnector.send_reply`) go through the provider's send API: Twilio's
``POST /2010-04-01/Accounts/{sid}/Messages.json`` (Basic auth) or the generic provider's
``POST <send_api_base>/send`` with JSON ``{"to", "from", "text", "ref"}`` signed like the
inbound route. Length handling (:func:`sms_parts`): a text that fits one SMS (160 GSM-7 or 70
UCS-2 characters) is one message; a longer one is split at word boundaries into parts of 153
GSM-7 / 67 UCS-2 characters (room for the concatenation header), each sent as its own message,
at most ``max_reply_parts`` of them, the last truncated with ``...``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.sms import SmsSettings
from connectors.base import (
    BaseConnector,
    Intake,
    IntakeResult,
    RawMessage,
    ReplyTarget,
    Sender,
)
from connectors.commands import parse_text_command, status_text
from errors import (
    ChannelRejected,
    ChannelUnavailable,
    ConfigError,
    LaporError,
    StoreUnavailable,
    ValidationFailed,
    retry_policy,
)
from normalizer.ids import parse_tracking_code
from normalizer.normalize import normalize_phone
from normalizer.raw import sender_key

log = logging.getLogger(__name__)

TWILIO_API_BASE = "https://api.twilio.com"
SIGNATURE_HEADER = "X-Lapor-Signature"
TWILIO_ROUTE, GENERIC_ROUTE = "/webhooks/sms/twilio", "/webhooks/sms/generic"
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
MAX_WEBHOOK_BYTES = 64 * 1024  # an SMS is at most a few KiB even with 255 parts
PENDING_CURSOR = "sms:parts:pending"  # the list of multipart messages still waiting for parts
PARTS_PREFIX = "sms:parts:"  # cursors holding the parts of one concatenated message
DONE_KEEP_S = 86400.0  # a finished multipart message remembers its part ids this long
GAP = " [...] "  # stands for a part that never arrived within the window
SENT_MEMORY = 10_000  # reply parts remembered per process, so a retried reply skips sent parts

# GSM 03.38: the basic character set (1 septet each) and the extension table (2 septets).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
GSM7_SINGLE, GSM7_PART = 160, 153  # septets in one SMS / in one part of a concatenated SMS
UCS2_SINGLE, UCS2_PART = 70, 67  # UTF-16 code units likewise


# --- signatures -------------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """``X-Twilio-Signature`` for a form POST to ``url``: base64(HMAC-SHA1(auth_token, url +
    the parameters sorted by name (then value), each name and value concatenated))."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def generic_signature(secret: str, body: bytes) -> str:
    """``X-Lapor-Signature`` for ``body``: ``sha256=`` + hex HMAC-SHA256 with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization: Basic`` value (aiohttp 3.14 deprecates ``BasicAuth``)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _same(given: str, expected: str) -> bool:
    # aiohttp keeps undecodable header bytes as surrogates: encode them back, never crash.
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                               expected.encode())


# --- SMS length -------------------------------------------------------------------------------


def is_gsm7(text: str) -> bool:
    """Whether ``text`` can be sent in the GSM-7 alphabet (else it goes as UCS-2)."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


def sms_length(text: str) -> int:
    """Length in the unit that limits an SMS: septets (GSM-7) or UTF-16 code units (UCS-2)."""
    if is_gsm7(text):
        return sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
    return len(text.encode("utf-16-le")) // 2


def sms_parts(text: str, max_parts: int = 3) -> list[str]:
    """Split ``text`` into SMS-sized parts (see the module docstring); never more than
    ``max_parts``, the last one truncated with ``...`` when the text is longer."""
    gsm = is_gsm7(text)
    single, part = (GSM7_SINGLE, GSM7_PART) if gsm else (UCS2_SINGLE, UCS2_PART)
    if sms_length(text) <= single:
        return [text]
    parts: list[str] = []
    rest = text
    while rest:
        if len(parts) == max_parts - 1 and sms_length(rest) > part:
            parts.append(_cut(rest, part - 3).rstrip() + "...")
            break
        chunk = _cut(rest, part)
        if len(chunk) < len(rest):
            space = chunk.rfind(" ")
            if space > len(chunk) // 2:
                chunk = chunk[: space + 1]
        parts.append(chunk.strip())
        rest = rest[len(chunk):].lstrip()
    return [p for p in parts if p]


def _cut(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose SMS length is at most ``limit``."""
    used = 0
    for index, ch in enumerate(text):
        used += sms_length(ch)
        if used > limit:
            return text[:index]
    return text


# --- inbound shapes ---------------------------------------------------------------------------


class SmsParts(BaseModel):
    """Which part of a concatenated SMS a generic-route message is."""

    model_config = ConfigDict(extra="ignore")

    ref: str = Field(min_length=1, max_length=64)
    index: int = Field(ge=1, le=255)
    total: int = Field(ge=1, le=255)


class GenericSms(BaseModel):
    """The body of ``POST /webhooks/sms/generic`` (see the module docstring)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(min_length=1, max_length=200)
    from_: str = Field(alias="from", min_length=1, max_length=64)
    to: str | None = Field(None, max_length=64)
    text: str = Field("", max_length=20000)
    received_at: datetime | None = None
    parts: SmsParts | None = None

    def to_json(self) -> bytes:
        """The JSON body as a provider (or our Gammu script) sends it."""
        return orjson.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True))


@dataclass(frozen=True, slots=True)
class InboundSms:
    """One complete SMS (parts joined), as either route received it."""

    native_id: str
    sender: str
    to: str | None
    text: str
    received_at: datetime
    payload: bytes
    content_type: str


# --- Gammu SMSD RunOnReceive ------------------------------------------------------------------


def gammu_messages_from_env(env: Mapping[str, str], ids: Sequence[str] = (), *,
                            to: str | None = None) -> list[GenericSms]:
    """The messages of one Gammu ``RunOnReceive`` run, in the generic route's shape.

    ``env`` is the script's environment (``SMS_MESSAGES``, ``SMS_n_NUMBER``, ``SMS_n_TEXT``,
    ``DECODED_PARTS``, ``DECODED_n_TEXT``), ``ids`` the message ids SMSD appended to the command
    line. One run is one (possibly multipart) message: the joined ``DECODED_n_TEXT`` when
    present, else the ``SMS_n_TEXT`` of each physical part concatenated per sender. The id is a
    hash of the SMSD ids (file names contain the sender's number), else of sender and text.
    """
    count = _int(env.get("SMS_MESSAGES"))
    numbers = [env.get(f"SMS_{n}_NUMBER", "") for n in range(1, count + 1)]
    decoded = [env.get(f"DECODED_{n}_TEXT") for n in range(1, _int(env.get("DECODED_PARTS")) + 1)]
    decoded_text = "".join(t for t in decoded if t)
    by_sender: dict[str, list[str]] = {}
    for n, number in enumerate(numbers, start=1):
        if number:
            by_sender.setdefault(number, []).append(env.get(f"SMS_{n}_TEXT", ""))
    if decoded_text and len(by_sender) <= 1 and numbers and numbers[0]:
        by_sender = {numbers[0]: [decoded_text]}
    now = datetime.now(UTC)
    messages = []
    for index, (number, texts) in enumerate(by_sender.items()):
        text = "".join(texts)
        seed = "\x00".join(ids) + f"\x00{index}" if ids else \
            f"{env.get('PHONE_ID', '')}\x00{number}\x00{text}"
        native = "gammu:" + hashlib.sha256(seed.encode()).hexdigest()[:32]
        messages.append(GenericSms.model_validate(
            {"id": native, "from": number, "to": to, "text": text, "received_at": now}))
    return messages


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or "0"))
    except ValueError:
        return 0


async def post_to_gateway(messages: Sequence[GenericSms], *, url: str, secret: str,
                          session: aiohttp.ClientSession | None = None,
                          max_delay: float = 90.0) -> None:
    """POST each message to the gateway's generic route (``url``, the full route URL) with
    the ``X-Lapor-Signature`` header; retried with the shared policy for at most
    ``max_delay`` seconds (Gammu SMSD waits two minutes for the script).

    Raises ``ChannelUnavailable`` (gateway down or 5xx/503 past the deadline) or
    ``ChannelRejected`` (403/400: wrong secret or body); the CLI should then exit non-zero.
    """
    own = session is None
    client = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        for message in messages:
            body = message.to_json()
            headers = {"Content-Type": "application/json",
                       SIGNATURE_HEADER: generic_signature(secret, body)}
            async for attempt in retry_policy(max_delay=max_delay, maximum=10.0):
                with attempt:
                    await _post_once(client, url, body, headers)
    finally:
        if own:
            await client.close()


async def run_gammu_receive(settings: SmsSettings, env: Mapping[str, str],
                            ids: Sequence[str]) -> int:
    """Everything ``lapor-gateway sms-receive`` does for one Gammu ``RunOnReceive`` run: read
    the messages from ``env`` (the process environment) and ``ids`` (the command-line
    arguments), post them to ``<gateway_url>/webhooks/sms/generic``; return how many.

    Raises ``ConfigError`` without ``generic_hmac_secret``, else as :func:`post_to_gateway`.
    """
    if settings.generic_hmac_secret is None:
        raise ConfigError("connectors.sms.generic_hmac_secret is required for sms-receive")
    messages = gammu_messages_from_env(env, ids, to=settings.account)
    await post_to_gateway(messages, url=settings.gateway_url.rstrip("/") + GENERIC_ROUTE,
                          secret=settings.generic_hmac_secret.get_secret_value())
    return len(messages)


async def _post_once(session: aiohttp.ClientSession, url: str, body: bytes,
                     headers: Mapping[str, str]) -> None:
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            _raise_for_status(response.status, response.headers, "gateway")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ChannelUnavailable(f"gateway unreachable: {type(exc).__name__}") from exc


def _raise_for_status(status: int, headers: Mapping[str, str], what: str) -> None:
    """Translate an HTTP status into the error hierarchy (2xx: nothing)."""
    if 200 <= status < 300:
        return
    if status == 429 or status >= 500:
        raise ChannelUnavailable(f"{what} answered {status}",
                                 retry_after=_retry_after(headers.get("Retry-After")))
    raise ChannelRejected(f"{what} answered {status}")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# --- the connector ----------------------------------------------------------------------------


class SmsConnector(BaseConnector):
    """SMS through one provider: inbound webhook, multipart joining, status keyword, replies."""

    name: ClassVar[str] = "sms"
    replies: bool = True

    def __init__(self, settings: SmsSettings, *, public_url: str | None,
                 session: aiohttp.ClientSession | None = None) -> None:
        """``public_url`` is ``gateway.public_url`` (the Twilio signature covers it);
        ``session`` is an optional client session for the send API (tests)."""
        super().__init__()
        self._settings = settings
        self._public_url = public_url.rstrip("/") if public_url else None
        self._session = session
        self._own_session = session is None
        self._parts_lock = asyncio.Lock()
        self._expiry: dict[str, asyncio.Task[None]] = {}
        self._sent: OrderedDict[tuple[str, int, str], str] = OrderedDict()

    # lifecycle ---------------------------------------------------------------------------------

    def routes(self) -> list[web.AbstractRouteDef]:
        if self._settings.provider == "twilio":
            return [web.post(TWILIO_ROUTE, self.receive_twilio)]
        return [web.post(GENERIC_ROUTE, self.receive_generic)]

    async def start(self, intake: Intake) -> None:
        """Remember the intake, re-arm the expiry of multipart messages still pending, and
        forget finished ones older than ``DONE_KEEP_S`` (their duplicates can no longer come)."""
        await super().start(intake)
        for key in await self._pending():
            self._arm_expiry(key, await self._load_parts(key))
        for key, value in (await intake.list_cursors(PARTS_PREFIX)).items():
            try:
                state = orjson.loads(value)
            except orjson.JSONDecodeError:
                state = {"done": [], "at": 0}
            if isinstance(state, dict) and "done" in state and \
                    time.time() - float(state.get("at", 0)) > DONE_KEEP_S:
                await intake.delete_cursor(key)

    async def stop(self) -> None:
        """Cancel expiry timers (their parts stay saved) and close our client session."""
        await super().stop()
        tasks = list(self._expiry.values())
        self._expiry.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # inbound -----------------------------------------------------------------------------------

    async def receive_twilio(self, request: web.Request) -> web.Response:
        """Twilio's inbound webhook: verify, submit, answer an empty TwiML response."""
        token = self._settings.auth_token
        if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
            return web.Response(status=413)
        body = await request.read()
        form = await request.post()
        params = [(k, v) for k, v in form.items() if isinstance(v, str)]
        url = (self._public_url + request.path_qs) if self._public_url else str(request.url)
        given = request.headers.get("X-Twilio-Signature", "")
        if token is None or not _same(given, twilio_signature(token.get_secret_value(), url,
                                                              params)):
            self.count("bad_signature")
            return web.Response(status=403, text="bad signature")
        if not self.accepting:
            return web.Response(status=503, headers={"Retry-After": "30"})
        sid, sender = str(form.get("MessageSid", "")), str(form.get("From", ""))
        if not sid or not sender:
            if (failure := await self._keep_unusable(
                    "MessageSid and From are required", body,
                    "application/x-www-form-urlencoded")) is not None:
                return failure
            return web.Response(status=400, text="MessageSid and From are required")
        sms = InboundSms(native_id=sid, sender=sender, to=str(form.get("To", "")) or None,
                         text=str(form.get("Body", "")), received_at=datetime.now(UTC),
                         payload=body, content_type="application/x-www-form-urlencoded")
        failure = await self._deliver(sms)
        if failure is not None:
            return failure
        return web.Response(text=TWIML_EMPTY, content_type="application/xml")

    async def replay(self, payload: bytes, content_type: str) -> IntakeResult | None:
        """A kept webhook body handled again (a Twilio form or a generic JSON body, by its
        content type). It was kept only after its signature was verified, so the signature
        is not checked again. A part of a concatenated SMS is saved like the webhook does;
        None until its message is complete."""
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(payload.decode("utf-8", "replace"), keep_blank_values=True))
            sid, sender = form.get("MessageSid", ""), form.get("From", "")
            if not sid or not sender:
                raise ValidationFailed("MessageSid and From are still missing")
            sms = InboundSms(native_id=sid, sender=sender, to=form.get("To") or None,
                             text=form.get("Body", ""), received_at=datetime.now(UTC),
                             payload=payload, content_type=content_type)
            return await self.captured(self.handle(sms))
        try:
            message = GenericSms.model_validate_json(payload)
        except ValidationError as exc:
            fields = sorted(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors())
            raise ValidationFailed(f"still an invalid generic SMS: {fields}") from exc
        received = message.received_at if message.received_at and message.received_at.tzinfo \
            else datetime.now(UTC)
        if message.parts is not None and message.parts.total > 1:
            return await self.captured(self._add_part(message, received))
        return await self.captured(self.handle(InboundSms(
            native_id=message.id, sender=message.from_, to=message.to, text=message.text,
            received_at=received, payload=payload, content_type="application/json")))

    async def _keep_unusable(self, reason: str, body: bytes,
                             content_type: str) -> web.Response | None:
        """Keep a signed but unusable request as a dead letter (raw bytes and reason); a
        503 when even that cannot be stored, so the provider retries."""
        self.count("dead_letters")
        try:
            await self.intake.dead_letter(channel="sms", account=self._settings.account,
                                          reason=reason, payload=body,
                                          content_type=content_type)
        except StoreUnavailable:
            return web.Response(status=503, headers={"Retry-After": "30"})
        return None

    async def receive_generic(self, request: web.Request) -> web.Response:
        """The generic JSON webhook: verify, join parts, submit, answer ``{"ok": true}``."""
        secret = self._settings.generic_hmac_secret
        if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
            return web.Response(status=413)
        body = await request.read()
        given = request.headers.get(SIGNATURE_HEADER, "")
        if secret is None or not _same(given, generic_signature(secret.get_secret_value(),
                                                                body)):
            self.count("bad_signature")
            return web.json_response({"error": "bad signature"}, status=403)
        if not self.accepting:
            return web.json_response({"error": "paused"}, status=503,
                                     headers={"Retry-After": "30"})
        try:
            message = GenericSms.model_validate_json(body)
        except ValidationError as exc:
            fields = {".".join(str(p) for p in e["loc"]) or "body": e["msg"]
                      for e in exc.errors()}
            if (failure := await self._keep_unusable(
                    f"invalid generic SMS: {sorted(fields)}", body,
                    "application/json")) is not None:
                return failure
            return web.json_response({"error": "validation_failed", "fields": fields},
                                     status=400)
        received = message.received_at if message.received_at and message.received_at.tzinfo \
            else datetime.now(UTC)
        if message.parts is not None and message.parts.total > 1:
            try:
                await self._add_part(message, received)
            except StoreUnavailable:
                return _unavailable_json()
            return web.json_response({"ok": True})
        sms = InboundSms(native_id=message.id, sender=message.from_, to=message.to,
                         text=message.text, received_at=received, payload=body,
                         content_type="application/json")
        failure = await self._deliver(sms)
        if failure is not None:
            return failure
        return web.json_response({"ok": True})

    async def _deliver(self, sms: InboundSms) -> web.Response | None:
        """Handle a complete SMS; an error response for the provider, or None when done."""
        try:
            await self.handle(sms)
        except StoreUnavailable:
            return _unavailable_json()
        except ValidationFailed as exc:
            # Not a complaint (e.g. empty text): retrying cannot help, so acknowledge.
            log.info("sms: message %s not accepted: %s", sms.native_id, exc)
        return None

    async def handle(self, sms: InboundSms) -> None:
        """A complete SMS: ``STATUS KODE`` and ``BATAL KODE`` are answered, anything else
        submitted (durably)."""
        command = parse_text_command(sms.text)
        if command is None:
            await self.submit(self._to_raw(sms))
        elif command[0] == "status":
            await self._answer_status(sms, command[1])
        else:
            raw = self._to_raw(sms)
            self.count("withdrawals")
            await self._answer(sms, await self.intake.withdraw(
                channel=raw.channel, account=raw.account, sender_key=sender_key(raw),
                typed_code=command[1] or None), ref=f"batal:{sms.native_id}")

    def _to_raw(self, sms: InboundSms) -> RawMessage:
        phone = normalize_phone(sms.sender)
        address = phone or sms.sender
        account = (normalize_phone(sms.to) or sms.to.strip()) if sms.to else None
        return RawMessage(
            channel="sms",
            account=account or self._settings.account,
            native_id=sms.native_id,
            received_at=sms.received_at,
            sent_at=None,
            sender=Sender(phone=phone, channel_user_id=address),
            text=sms.text,
            connector=self.name,
            raw_payload=sms.payload,
            raw_content_type=sms.content_type,
            reply_hints={"address": address, "provider": self._settings.provider},
        )

    async def _answer_status(self, sms: InboundSms, typed: str) -> None:
        """Reply with the public status of the typed code (never confidential content)."""
        self.count("status_queries")
        code = parse_tracking_code(typed) if typed else None
        status = await self.intake.public_status(code) if code else None
        await self._answer(sms, status_text(code or typed.strip(), status),
                           ref=f"status:{sms.native_id}")

    async def _answer(self, sms: InboundSms, text: str, *, ref: str) -> None:
        """Answer a command right away (best effort: the citizen can ask again; an answer is
        not worth holding the webhook)."""
        address = normalize_phone(sms.sender) or sms.sender
        try:
            await self._send_text(address, text, ref=ref)
        except LaporError as exc:
            self.record_error(f"command reply failed: {type(exc).__name__}")
            log.warning("sms: reply to command %s failed: %s", sms.native_id, exc)

    # multipart ---------------------------------------------------------------------------------

    def _parts_key(self, message: GenericSms) -> str:
        assert message.parts is not None
        who = hashlib.sha256(f"{message.to or ''}\x00{message.from_}".encode()).hexdigest()[:16]
        return f"{PARTS_PREFIX}{who}:{message.parts.ref}:{message.parts.total}"

    async def _add_part(self, message: GenericSms, received: datetime) -> None:
        """Save one part durably; when the last one arrived, submit the joined text."""
        assert message.parts is not None
        key = self._parts_key(message)
        async with self._parts_lock:
            state = await self._load_parts(key)
            done = state.get("done")
            if isinstance(done, list):
                if message.id in done and time.time() - float(state.get("at", 0)) < DONE_KEEP_S:
                    self.count("duplicate_parts")
                    return
                state = {}
            parts: dict[str, Any] = state.setdefault("parts", {})
            parts[str(message.parts.index)] = {
                "id": message.id, "text": message.text,
                "received_at": received.isoformat()}
            state.setdefault("first_at", time.time())
            state.update({"from": message.from_, "to": message.to,
                          "total": message.parts.total})
            if len(parts) >= message.parts.total:
                await self._submit_parts(key, state)
                return
            await self.intake.save_cursor(key, orjson.dumps(state).decode())
            pending = await self._pending()
            if key not in pending:
                await self.intake.save_cursor(PENDING_CURSOR,
                                              orjson.dumps([*pending, key]).decode())
        self._arm_expiry(key, state)

    async def _submit_parts(self, key: str, state: dict[str, Any]) -> None:
        """Submit the parts in ``state`` joined in order, then mark the message done.
        Called with the parts lock held."""
        parts: dict[str, Any] = state["parts"]
        total = int(state["total"])
        order = sorted(parts, key=int)
        pieces = [parts[str(i)]["text"] if str(i) in parts else GAP
                  for i in range(1, total + 1)]
        text = "".join(pieces).strip()
        if len(parts) < total:
            text = re.sub(r" {2,}", " ", text)
        first = parts[order[0]]
        sms = InboundSms(
            native_id=str(first["id"]), sender=str(state["from"]),
            to=state.get("to"), text=text,
            received_at=datetime.fromisoformat(str(parts[order[-1]]["received_at"])),
            payload=orjson.dumps(state), content_type="application/json")
        try:
            await self.handle(sms)
        except ValidationFailed as exc:
            log.info("sms: multipart message %s not accepted: %s", sms.native_id, exc)
        ids = [str(parts[i]["id"]) for i in order]
        await self.intake.save_cursor(key, orjson.dumps({"done": ids, "at": time.time()}).decode())
        pending = await self._pending()
        if key in pending:
            await self.intake.save_cursor(
                PENDING_CURSOR, orjson.dumps([k for k in pending if k != key]).decode())
        task = self._expiry.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _arm_expiry(self, key: str, state: Mapping[str, Any]) -> None:
        if key in self._expiry or "parts" not in state:
            return
        deadline = float(state.get("first_at", time.time())) + self._settings.multipart_window_s
        self._expiry[key] = asyncio.create_task(self._expire(key, deadline),
                                                name=f"sms-parts-expiry:{key}")

    async def _expire(self, key: str, deadline: float) -> None:
        """After the window, submit what arrived of an incomplete multipart message."""
        try:
            await asyncio.sleep(max(0.0, deadline - time.time()))
            attempt = 0
            while True:  # the parts were acknowledged: keep trying until stop()
                try:
                    async with self._parts_lock:
                        state = await self._load_parts(key)
                        if "parts" in state:
                            self.count("incomplete_multipart")
                            await self._submit_parts(key, state)
                    return
                except Exception as exc:  # noqa: BLE001 - logged; the parts stay saved
                    log.warning("sms: incomplete multipart message not submitted yet: %s",
                                type(exc).__name__)
                    await asyncio.sleep(min(60.0, 2.0 ** attempt))
                    attempt += 1
        finally:
            if self._expiry.get(key) is asyncio.current_task():
                self._expiry.pop(key, None)

    async def _load_parts(self, key: str) -> dict[str, Any]:
        value = await self.intake.load_cursor(key)
        if not value:
            return {}
        loaded = orjson.loads(value)
        return loaded if isinstance(loaded, dict) else {}

    async def _pending(self) -> list[str]:
        value = await self.intake.load_cursor(PENDING_CURSOR)
        loaded = orjson.loads(value) if value else []
        return [str(k) for k in loaded] if isinstance(loaded, list) else []

    # replies -----------------------------------------------------------------------------------

    async def send_reply(self, target: ReplyTarget, text: str) -> str | None:
        """Send ``text`` to the citizen's number through the provider's send API, split as
        :func:`sms_parts` says; parts already sent by an earlier attempt are not sent again.
        Returns the provider ids of the parts, comma-separated."""
        address = target.hints.get("address") or target.address
        if not address:
            raise ChannelRejected("no phone number to answer")
        return await self._send_text(address, text, ref=target.complaint_id)

    async def _send_text(self, address: str, text: str, *, ref: str) -> str:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        ids = []
        for index, part in enumerate(sms_parts(text, self._settings.max_reply_parts)):
            key = (ref, index, digest)
            sent = self._sent.get(key)
            if sent is None:
                sent = await self._send_one(address, part, ref=f"{ref}:{index}")
                self._sent[key] = sent
                while len(self._sent) > SENT_MEMORY:
                    self._sent.popitem(last=False)
            ids.append(sent)
        self.count("replies_sent")
        return ",".join(ids)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.request_timeout_s))
        return self._session

    async def _send_one(self, to: str, text: str, *, ref: str) -> str:
        """One SMS through the provider's send API; the provider's message id."""
        settings = self._settings
        sender = settings.from_number or settings.account
        try:
            if settings.provider == "twilio":
                if settings.account_sid is None or settings.auth_token is None:
                    raise ChannelRejected("twilio replies need account_sid and auth_token")
                base = (settings.send_api_base or TWILIO_API_BASE).rstrip("/")
                url = f"{base}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"
                auth = basic_auth(settings.account_sid, settings.auth_token.get_secret_value())
                async with self._client().post(
                        url, data={"To": to, "From": sender, "Body": text},
                        headers={"Authorization": auth}) as response:
                    payload = await response.read()
                    _raise_for_status(response.status, response.headers, "twilio")
                return str(orjson.loads(payload).get("sid", ""))
            if settings.send_api_base is None:
                raise ChannelRejected("no send_api_base configured for SMS replies")
            body = orjson.dumps({"to": to, "from": sender, "text": text, "ref": ref})
            headers = {"Content-Type": "application/json"}
            if settings.generic_hmac_secret is not None:
                headers[SIGNATURE_HEADER] = generic_signature(
                    settings.generic_hmac_secret.get_secret_value(), body)
            if settings.send_token is not None:
                headers["Authorization"] = f"Bearer {settings.send_token.get_secret_value()}"
            async with self._client().post(settings.send_api_base.rstrip("/") + "/send",
                                           data=body, headers=headers) as response:
                payload = await response.read()
                _raise_for_status(response.status, response.headers, "sms provider")
            return str(orjson.loads(payload).get("id", ""))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChannelUnavailable(f"sms send API unreachable: {type(exc).__name__}") from exc
        except orjson.JSONDecodeError as exc:
            raise ChannelUnavailable("sms send API answered no JSON") from exc


def _unavailable_json() -> web.Response:
    return web.json_response({"error": "unavailable", "detail": "not stored; retry"},
                             status=503, headers={"Retry-After": "5"})
