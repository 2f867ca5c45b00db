"""Messenger and Instagram: complaints sent to our Facebook Page or Instagram account.

Routes: ``GET /webhooks/meta`` (verification handshake) and ``POST /webhooks/meta``, for
``object: "page"`` (Messenger) and ``object: "instagram"`` (docs/CHANNELS.md 1.1). Same
verify token and ``X-Hub-Signature-256`` scheme as WhatsApp; the shared behaviour lives in
:mod:`connectors.meta_webhook`.

Each ``entry[].messaging[]`` event with a ``message`` (not an echo of ours) or a ``postback``
is one :class:`RawMessage`: channel ``"messenger"`` or ``"instagram"`` (two channels, one
connector ``"meta"``), account = ``entry.id`` (the page or Instagram account id), native id
= ``message.mid``, sender ``channel_user_id`` = the PSID/IGSID (Meta gives no name or phone
without a profile call), ``sent_at`` from ``timestamp`` (milliseconds); reply hints
``address`` (the PSID/IGSID), ``customer_msg_at``. Attachments of type image/video/audio/file
are downloaded from their payload URL; a ``location`` attachment becomes the location.
``STATUS KODE`` is answered with the public status, never stored. Reactions, reads,
echoes, deleted and unsupported messages and feed ``changes`` are counted, never complaints;
``delivery`` (and Instagram ``read.mid``) update our replies' states.

Replies: ``POST /me/messages`` with the page access token (one token: one page and the
Instagram account linked to it), ``messaging_type: RESPONSE`` inside the 24-hour window;
outside it ``MESSAGE_TAG``/``HUMAN_AGENT`` when enabled (7 days),
else ``ChannelRejected``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from pydantic import ValidationError

from config.whatsapp import DAY_S, MetaSettings
from connectors.base import ReplyTarget, Sender
from connectors.meta_graph import MESSENGER_OUTSIDE_WINDOW_SUBCODES, GraphClient, GraphRejected
from connectors.meta_webhook import (
    GraphWebhookConnector,
    Inbound,
    MediaRef,
    Parsed,
    StatusUpdate,
    epoch,
)
from errors import ChannelRejected
from normalizer.schema import Location

log = logging.getLogger(__name__)

CHANNELS = {"page": "messenger", "instagram": "instagram"}
MEDIA_KINDS = ("image", "video", "audio", "file")
PLACEHOLDERS = {"image": "[Foto tanpa keterangan]", "video": "[Video tanpa keterangan]",
                "audio": "[Pesan suara]", "file": "[Berkas]", "location": "[Lokasi]"}
HUMAN_AGENT_WINDOW_S = 7 * DAY_S
TEXT_MAX = 2000  # Messenger text limit (Instagram: 1000 bytes; Graph truncates nothing)


def _str(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def parse_meta(payload: dict[str, Any], *, messenger: bool = True,
               instagram: bool = True) -> Parsed:
    """Every message and delivery in a ``page`` / ``instagram`` webhook body (pure)."""
    parsed = Parsed()
    channel = CHANNELS.get(str(payload.get("object")))
    if channel is None:
        parsed.ignored.append("other_object")
        return parsed
    if (channel == "messenger" and not messenger) or (channel == "instagram" and not instagram):
        parsed.ignored.append(f"disabled_{channel}")
        return parsed
    if not isinstance(payload.get("entry"), list):
        parsed.malformed.append("entry is not a list")
        return parsed
    for entry in payload["entry"]:
        entry = _dict(entry)
        account = _str(entry.get("id"))
        if entry.get("changes"):
            parsed.ignored.append("changes")
        if entry.get("standby"):
            parsed.ignored.append("standby")
        for event in _list(entry.get("messaging")):
            event = _dict(event)
            acct = account or _str(_dict(event.get("recipient")).get("id"))
            if acct is None:
                parsed.malformed.append("messaging event without entry.id or recipient.id")
                continue
            _event(parsed, event, channel, acct)
    return parsed


def _event(parsed: Parsed, event: dict[str, Any], channel: str, account: str) -> None:
    sender_id = _str(_dict(event.get("sender")).get("id"))
    when = epoch(event.get("timestamp"), millis=True)
    if "delivery" in event:
        for mid in _list(_dict(event["delivery"]).get("mids")):
            if _str(mid):
                parsed.statuses.append(StatusUpdate(channel, account, mid, "delivered",
                                                    when.timestamp() if when else None))
        return
    if "read" in event:
        mid = _str(_dict(event["read"]).get("mid"))
        if mid is None:
            parsed.ignored.append("read")
        else:
            parsed.statuses.append(StatusUpdate(channel, account, mid, "read",
                                                when.timestamp() if when else None))
        return
    if "reaction" in event:
        parsed.ignored.append("reaction")
        return
    message = _dict(event.get("message"))
    postback = _dict(event.get("postback"))
    if not message and not postback:
        parsed.ignored.append("other_event")
        return
    if message.get("is_echo") or sender_id == account:
        parsed.ignored.append("echo")
        return
    if message.get("is_deleted"):
        parsed.ignored.append("deleted")
        return
    if message.get("is_unsupported"):
        parsed.ignored.append("unsupported")
        return
    if sender_id is None:
        parsed.malformed.append("messaging event without sender.id")
        return
    if message:
        mid = _str(message.get("mid"))
        text = _str(message.get("text")) or ""
        kind = "text"
    else:
        mid = _str(postback.get("mid")) or (f"postback:{sender_id}:{event.get('timestamp')}"
                                             if event.get("timestamp") else None)
        text = _str(postback.get("title")) or ""
        kind = "postback"
    if mid is None:
        parsed.malformed.append("message without mid")
        return
    hints = {"address": sender_id, "platform": channel}
    if when is not None:
        hints["customer_msg_at"] = str(int(when.timestamp()))
    inbound = Inbound(channel=channel, account=account, native_id=mid, kind=kind,
                      sender=Sender(channel_user_id=sender_id), sender_key=sender_id,
                      sent_at=when, text=text, reply_hints=hints)
    media: list[MediaRef] = []
    for index, attachment in enumerate(_list(message.get("attachments"))):
        attachment = _dict(attachment)
        att_kind = _str(attachment.get("type")) or "unknown"
        body = _dict(attachment.get("payload"))
        if att_kind in MEDIA_KINDS and not body.get("sticker_id"):
            url = _str(body.get("url"))
            if url is None:
                parsed.malformed.append(f"{att_kind} attachment without url")
                continue
            media.append(MediaRef(kind=att_kind, name=f"{att_kind}-{index + 1}", mime_type=None,
                                  sha256=None, url=url))
        elif att_kind == "location":
            coordinates = _dict(body.get("coordinates"))
            try:
                inbound.location = Location(lat=coordinates.get("lat"),
                                            lon=coordinates.get("long"),
                                            text=_str(attachment.get("title")))
            except ValidationError:
                parsed.malformed.append("location attachment without valid coordinates")
        else:
            parsed.ignored.append("sticker" if body.get("sticker_id") else "other_attachment")
    inbound.media = tuple(media)
    if not text:
        first = media[0].kind if media else ("location" if inbound.location else None)
        if first is None:
            parsed.ignored.append("empty")
            return
        inbound.text = PLACEHOLDERS[first]
        inbound.joins_window = True
    parsed.messages.append(inbound)


class MetaConnector(GraphWebhookConnector):
    """The Messenger and Instagram webhook and sender (see the module docstring)."""

    name: ClassVar[str] = "meta"
    path: ClassVar[str] = "/webhooks/meta"
    objects: ClassVar[frozenset[str]] = frozenset(CHANNELS)
    replies: bool = True

    def __init__(self, settings: MetaSettings, *, public_url: str | None) -> None:
        super().__init__(settings, GraphClient(settings.api_base, settings.page_access_token,
                                               timeout_s=settings.request_timeout_s),
                         public_url=public_url)
        self._meta = settings

    @property
    def channels(self) -> tuple[str, ...]:
        """``messenger`` and ``instagram``: the reply loop routes both here."""
        return tuple(CHANNELS.values())

    def parse(self, payload: dict[str, Any]) -> Parsed:
        return parse_meta(payload, messenger=self._meta.messenger,
                          instagram=self._meta.instagram)

    async def fetch_media(self, ref: MediaRef) -> bytes:
        """The attachment's CDN url, as given in the signed payload (no token needed)."""
        if ref.url is None:
            raise ChannelRejected("attachment without url")
        return await self._graph.fetch(ref.url, bearer=False,
                                       max_bytes=self._settings.media_max_bytes)

    async def send_text(self, message: Inbound, text: str) -> str | None:
        """A RESPONSE to the sender of ``message`` (answering a status query)."""
        answer = await self._graph.post("me/messages", {
            "recipient": {"id": message.reply_hints["address"]}, "messaging_type": "RESPONSE",
            "message": {"text": text[:TEXT_MAX]}}, "send message")
        self.count("replies_sent")
        message_id = answer.get("message_id")
        return message_id if isinstance(message_id, str) else None

    async def send_reply(self, target: ReplyTarget, text: str) -> str | None:
        """Send ``text`` to the PSID/IGSID via ``POST /me/messages``; Meta's message id.

        Follow-ups (hint ``thread_of``) are not answered separately. Outside the 24-hour
        window only with the HUMAN_AGENT tag (when enabled, up to 7 days), else
        :class:`ChannelRejected`.
        """
        hints = target.hints
        if hints.get("thread_of"):
            return None
        to = hints.get("address") or target.address
        if not to:
            raise ChannelRejected(f"no {target.channel} recipient kept for this complaint")
        last = self.last_inbound(target.channel, target.account, to, hints)
        age = time.time() - last if last is not None else float("inf")
        payload: dict[str, Any] = {"recipient": {"id": to}, "message": {"text": text[:TEXT_MAX]}}
        if age < self._meta.customer_window_s:
            payload["messaging_type"] = "RESPONSE"
        elif self._meta.human_agent_tag and age < HUMAN_AGENT_WINDOW_S:
            payload["messaging_type"] = "MESSAGE_TAG"
            payload["tag"] = "HUMAN_AGENT"
        else:
            raise ChannelRejected(f"outside {target.channel}'s 24-hour messaging window "
                                  "(connectors.meta.human_agent_tag allows 7 days)")
        try:
            answer = await self._graph.post("me/messages", payload, "send message")
        except GraphRejected as exc:
            if exc.subcode in MESSENGER_OUTSIDE_WINDOW_SUBCODES:
                raise ChannelRejected(f"{target.channel} refused: outside the messaging "
                                      f"window ({exc})") from exc
            raise
        self.count("replies_sent")
        message_id = answer.get("message_id")
        return message_id if isinstance(message_id, str) else None
