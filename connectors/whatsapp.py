"""WhatsApp Cloud API: complaints from a WhatsApp Business number, replies through the Graph API.

Routes: ``GET /webhooks/whatsapp`` (verification handshake) and ``POST /webhooks/whatsapp``
(messages and statuses, ``object: "whatsapp_business_account"``, docs/CHANNELS.md 1.2). The
shared webhook behaviour (signature: 403 when missing or wrong; 413; 400 for invalid JSON;
200 only once durable; 503 when the store is down; media downloads that never block the
answer) lives in :mod:`connectors.meta_webhook`.

Each ``entry[].changes[].value.messages[]`` element is one :class:`RawMessage`:

* channel ``"whatsapp"``, account = ``metadata.phone_number_id`` (our number), native id = the
  wamid; sender = ``contacts[].profile.name``, the phone in E.164 from ``wa_id`` and
  ``channel_user_id`` = ``from``; ``sent_at`` from ``timestamp``; raw payload = the bytes
  received; reply hints: ``address`` (wa_id), ``phone_number_id``, ``customer_msg_at``.
* text; image/video/audio/document (caption as text, else a placeholder such as
  ``[Foto tanpa keterangan]``); location (``Location`` with lat/lon and name/address);
  contacts (their names and numbers as text); interactive button/list replies and template
  quick-reply buttons (their title as text).
* ``STATUS KODE`` is answered with the complaint's public status, never stored;
* reactions, stickers and unsupported/unknown types are counted, never complaints;
  ``statuses[]`` update the delivery state of our replies.

Replies (:meth:`WhatsAppConnector.send_reply`): a free-form text while the citizen's last
message is younger than ``customer_window_s`` (Meta's 24 hours); outside it the configured
approved template (one body variable: the tracking code), else ``ChannelRejected``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from pydantic import ValidationError

from config.whatsapp import WhatsAppSettings
from connectors.base import ReplyTarget, Sender
from connectors.meta_graph import (
    WA_OUTSIDE_WINDOW,
    GraphClient,
    GraphRejected,
    check_sha256,
    normalize_sha256,
)
from connectors.meta_webhook import (
    GraphWebhookConnector,
    Inbound,
    MediaRef,
    Parsed,
    StatusUpdate,
    epoch,
    media_name,
)
from errors import AttachmentRejected, ChannelRejected
from normalizer.normalize import normalize_phone
from normalizer.schema import Location

log = logging.getLogger(__name__)

CHANNEL = "whatsapp"
OBJECT = "whatsapp_business_account"
MEDIA_TYPES = ("image", "video", "audio", "document")
PLACEHOLDERS = {"image": "[Foto tanpa keterangan]", "video": "[Video tanpa keterangan]",
                "audio": "[Pesan suara]", "document": "[Dokumen: {name}]"}
#: Types that join the sender's open complaint when they arrive within the window.
JOINING_TYPES = frozenset({"location", "contacts", *MEDIA_TYPES})
#: Types recorded (counted) without becoming complaints; anything else counts "unsupported".
RECORDED_TYPES = frozenset({"reaction", "sticker", "unsupported", "unknown", "system", "order",
                            "request_welcome", "ephemeral"})
TEXT_MAX = 4096  # WhatsApp text message body limit


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def parse_whatsapp(payload: dict[str, Any]) -> Parsed:
    """Every message and status in a ``whatsapp_business_account`` webhook body (pure)."""
    parsed = Parsed()
    if not isinstance(payload.get("entry"), list):
        parsed.malformed.append("entry is not a list")
        return parsed
    for entry in payload["entry"]:
        for change in _list(_dict(entry).get("changes")):
            change = _dict(change)
            if change.get("field") != "messages":
                parsed.ignored.append("other_field")
                continue
            value = _dict(change.get("value"))
            account = _str(_dict(value.get("metadata")).get("phone_number_id"))
            if account is None:
                parsed.malformed.append("change without metadata.phone_number_id")
                continue
            contacts = [_dict(c) for c in _list(value.get("contacts"))]
            for message in _list(value.get("messages")):
                _message(parsed, _dict(message), account, contacts)
            for status in _list(value.get("statuses")):
                _status(parsed, _dict(status), account)
            if value.get("errors"):
                parsed.ignored.append("errors")
    return parsed


def _status(parsed: Parsed, status: dict[str, Any], account: str) -> None:
    message_id, state = _str(status.get("id")), _str(status.get("status"))
    if message_id is None or state is None:
        parsed.malformed.append("status without id or status")
        return
    when = epoch(status.get("timestamp"))
    codes = tuple(e["code"] for e in _list(status.get("errors"))
                  if isinstance(e, dict) and isinstance(e.get("code"), int))
    parsed.statuses.append(StatusUpdate(CHANNEL, account, message_id, state,
                                        when.timestamp() if when else None, codes))


def _message(parsed: Parsed, msg: dict[str, Any], account: str,
             contacts: list[dict[str, Any]]) -> None:
    wamid, sender_id, kind = _str(msg.get("id")), _str(msg.get("from")), _str(msg.get("type"))
    if wamid is None or sender_id is None:
        parsed.malformed.append("message without id or from")
        return
    if kind in RECORDED_TYPES or kind is None:
        parsed.ignored.append(kind or "unsupported")
        return
    contact = next((c for c in contacts if c.get("wa_id") == sender_id), None)
    if contact is None and len(contacts) == 1:
        contact = contacts[0]
    wa_id = _str((contact or {}).get("wa_id")) or sender_id
    name = _str(_dict((contact or {}).get("profile")).get("name"))
    sent_at = epoch(msg.get("timestamp"))
    hints = {"address": wa_id, "phone_number_id": account}
    if sent_at is not None:
        hints["customer_msg_at"] = str(int(sent_at.timestamp()))
    inbound = Inbound(
        channel=CHANNEL, account=account, native_id=wamid, kind=kind,
        sender=Sender(name=name, phone=normalize_phone("+" + wa_id) if wa_id.isdigit() else None,
                      channel_user_id=sender_id),
        sender_key=sender_id, sent_at=sent_at, text="", joins_window=kind in JOINING_TYPES,
        reply_hints=hints,
    )
    body = _dict(msg.get(kind))
    if kind == "text":
        inbound.text = _str(body.get("body")) or ""
    elif kind in MEDIA_TYPES:
        media_id = _str(body.get("id"))
        if media_id is None:
            parsed.malformed.append(f"{kind} message without media id")
            return
        mime = _str(body.get("mime_type"))
        filename = _str(body.get("filename"))
        ref_name = media_name(kind, media_id, mime, filename)
        inbound.media = (MediaRef(kind=kind, name=ref_name, mime_type=mime,
                                  sha256=normalize_sha256(body.get("sha256")),
                                  media_id=media_id),)
        inbound.text = _str(body.get("caption")) or PLACEHOLDERS[kind].format(name=ref_name)
    elif kind == "location":
        try:
            location = Location(lat=body.get("latitude"), lon=body.get("longitude"),
                                text=", ".join(p for p in (_str(body.get("name")),
                                                           _str(body.get("address"))) if p)
                                or None)
        except ValidationError:
            parsed.malformed.append("location without valid latitude/longitude")
            return
        inbound.location = location
        inbound.text = "[Lokasi] " + (location.text or f"{location.lat}, {location.lon}")
    elif kind == "contacts":
        lines = []
        for card in _list(msg.get("contacts")):
            card = _dict(card)
            who = _str(_dict(card.get("name")).get("formatted_name")) or "?"
            phones = [str(p["phone"]) for p in _list(card.get("phones"))
                      if isinstance(p, dict) and _str(p.get("phone"))]
            lines.append(f"- {who}" + (f": {', '.join(phones)}" if phones else ""))
        inbound.text = "[Kontak dibagikan]\n" + "\n".join(lines)
    elif kind == "interactive":
        reply = _dict(body.get("button_reply")) or _dict(body.get("list_reply"))
        parts = [_str(reply.get("title")), _str(reply.get("description"))]
        inbound.text = " - ".join(p for p in parts if p)
    elif kind == "button":
        inbound.text = _str(body.get("text")) or _str(body.get("payload")) or ""
    else:
        parsed.ignored.append("unsupported")
        return
    if not inbound.text.strip():
        parsed.ignored.append(f"empty_{kind}")
        return
    parsed.messages.append(inbound)


class WhatsAppConnector(GraphWebhookConnector):
    """The WhatsApp Cloud API webhook and sender (see the module docstring)."""

    name: ClassVar[str] = "whatsapp"
    path: ClassVar[str] = "/webhooks/whatsapp"
    objects: ClassVar[frozenset[str]] = frozenset({OBJECT})
    replies: bool = True

    def __init__(self, settings: WhatsAppSettings, *, public_url: str | None) -> None:
        super().__init__(settings, GraphClient(settings.api_base, settings.access_token,
                                               timeout_s=settings.request_timeout_s),
                         public_url=public_url)
        self._wa = settings

    def parse(self, payload: dict[str, Any]) -> Parsed:
        return parse_whatsapp(payload)

    async def fetch_media(self, ref: MediaRef) -> bytes:
        """``GET /{media-id}`` then the short-lived url, both with the Bearer token."""
        if ref.media_id is None:
            raise ChannelRejected("no media id")
        info = await self._graph.media_info(ref.media_id)
        size = info.get("file_size")
        if isinstance(size, (int, str)) and str(size).isdigit() and \
                int(size) > self._settings.media_max_bytes:
            raise AttachmentRejected("media too large", {"lampiran": "too large"})
        data = await self._graph.fetch(info["url"], bearer=True,
                                       max_bytes=self._settings.media_max_bytes)
        check_sha256(data, normalize_sha256(info.get("sha256")))
        return data

    async def send_text(self, message: Inbound, text: str) -> str | None:
        """A free-form text to the sender of ``message`` (answering a status query)."""
        return await self._send(message.account, {
            "messaging_product": "whatsapp", "recipient_type": "individual",
            "to": message.reply_hints["address"], "type": "text",
            "context": {"message_id": message.native_id},
            "text": {"preview_url": False, "body": text[:TEXT_MAX]}})

    async def send_reply(self, target: ReplyTarget, text: str) -> str | None:
        """Send ``text`` to the citizen's WhatsApp; the wamid of our message.

        Follow-ups (hint ``thread_of``) are not answered separately: the citizen already has
        the code of the complaint they belong to. Inside the customer-service window a text
        is sent (quoting the citizen's message); outside it, or when Graph answers 131047,
        the configured template, else :class:`ChannelRejected`.
        """
        hints = target.hints
        if hints.get("thread_of"):
            return None
        to = hints.get("address") or target.address
        if not to:
            raise ChannelRejected("no WhatsApp recipient (wa_id) kept for this complaint")
        number = hints.get("phone_number_id") or target.account or self._wa.phone_number_id
        if not number:
            raise ChannelRejected("no phone_number_id to send from")
        last = self.last_inbound(CHANNEL, number, to, hints)
        if last is not None and time.time() - last < self._wa.customer_window_s:
            payload: dict[str, Any] = {
                "messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
                "type": "text", "text": {"preview_url": False, "body": text[:TEXT_MAX]},
            }
            if target.native_id.startswith("wamid."):
                payload["context"] = {"message_id": target.native_id}
            try:
                return await self._send(number, payload)
            except GraphRejected as exc:
                if exc.code != WA_OUTSIDE_WINDOW:
                    raise
        return await self._send_template(number, to, target.tracking_code)

    async def _send_template(self, number: str, to: str, tracking_code: str) -> str | None:
        if not self._wa.template_name:
            raise ChannelRejected(
                "outside WhatsApp's 24-hour customer service window and no template "
                "configured (connectors.whatsapp.template_name)")
        return await self._send(number, {
            "messaging_product": "whatsapp", "to": to, "type": "template",
            "template": {"name": self._wa.template_name,
                         "language": {"code": self._wa.template_language},
                         "components": [{"type": "body", "parameters": [
                             {"type": "text", "text": tracking_code}]}]},
        })

    async def _send(self, number: str, payload: dict[str, Any]) -> str | None:
        answer = await self._graph.post(f"{number}/messages", payload, "send message")
        self.count("replies_sent")
        messages = answer.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            message_id = messages[0].get("id")
            return message_id if isinstance(message_id, str) else None
        return None
