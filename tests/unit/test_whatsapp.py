"""WhatsApp payload parsing, signatures, digests, Graph errors, settings (no network)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from config.whatsapp import GRAPH_API_BASE, WhatsAppSettings
from connectors.meta_graph import GraphRejected, check_sha256, graph_error, normalize_sha256
from connectors.meta_webhook import DeliveryTracker, StatusUpdate, sign, verify_signature
from connectors.whatsapp import parse_whatsapp
from errors import ChannelUnavailable
from tests.emulators.graph import encode, signature, wa_change, wa_message, wa_payload, wa_status

PNID = "106540352242922"


def body(*messages: dict[str, Any], contacts: Any = (("6281234567890", "Siti"),),
         statuses: Any = ()) -> dict[str, Any]:
    return wa_payload([wa_change(PNID, messages=messages, contacts=contacts, statuses=statuses)])


def test_signature_is_hmac_sha256_of_the_exact_bytes() -> None:
    raw = encode({"text": "é — 🙏"})
    assert b"\\u00e9" in raw
    header = signature("s3cret", raw)
    assert header == sign(b"s3cret", raw)
    assert verify_signature(b"s3cret", raw, header)
    assert verify_signature(b"s3cret", raw, header.upper().replace("SHA256=", "sha256="))
    assert not verify_signature(b"s3cret", raw + b" ", header)
    assert not verify_signature(b"other", raw, header)
    assert not verify_signature(b"s3cret", raw, None)
    assert not verify_signature(b"s3cret", raw, header.replace("sha256=", "sha1="))
    assert not verify_signature(b"s3cret", raw, "sha256=ñ")


def test_sha256_hex_and_base64_forms() -> None:
    digest = hashlib.sha256(b"data")
    assert normalize_sha256(digest.hexdigest().upper()) == digest.hexdigest()
    assert normalize_sha256(base64.b64encode(digest.digest()).decode()) == digest.hexdigest()
    assert normalize_sha256(base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")) \
        == digest.hexdigest()
    assert normalize_sha256("not a digest") is None
    assert normalize_sha256(None) is None
    check_sha256(b"data", digest.hexdigest(), None)
    with pytest.raises(ChannelUnavailable):
        check_sha256(b"dat", digest.hexdigest())


def test_text_message_fields() -> None:
    parsed = parse_whatsapp(body(wa_message("wamid.1", "6281234567890", "text",
                                            text={"body": "Jalan rusak"}, ts=1739321024)))
    [msg] = parsed.messages
    assert (msg.channel, msg.account, msg.native_id) == ("whatsapp", PNID, "wamid.1")
    assert msg.sender.name == "Siti" and msg.sender.phone == "+6281234567890"
    assert msg.sender_key == "6281234567890"
    assert msg.sent_at is not None and msg.sent_at.timestamp() == 1739321024
    assert msg.reply_hints == {"address": "6281234567890", "phone_number_id": PNID,
                               "customer_msg_at": "1739321024"}
    assert not msg.joins_window


def test_contact_is_matched_by_wa_id_and_from_may_differ() -> None:
    parsed = parse_whatsapp(body(
        wa_message("wamid.2", "551199998888", "text", text={"body": "Oi"}),
        contacts=[("6281234567890", "Siti"), ("5511999988888", "Ana")]))
    [msg] = parsed.messages
    assert msg.sender.name is None  # two contacts, none matches: nothing guessed
    parsed = parse_whatsapp(body(wa_message("wamid.3", "551199998888", "text",
                                            text={"body": "Oi"}),
                                 contacts=[("5511999988888", "Ana")]))
    [msg] = parsed.messages
    assert msg.sender.name == "Ana" and msg.reply_hints["address"] == "5511999988888"
    assert msg.sender.channel_user_id == "551199998888"


@pytest.mark.parametrize(("kind", "content", "text"), [
    ("image", {"caption": "Foto", "mime_type": "image/jpeg", "sha256": "a" * 64, "id": "M"},
     "Foto"),
    ("image", {"mime_type": "image/jpeg", "sha256": "a" * 64, "id": "M"},
     "[Foto tanpa keterangan]"),
    ("video", {"mime_type": "video/mp4", "id": "M"}, "[Video tanpa keterangan]"),
    ("audio", {"mime_type": "audio/ogg; codecs=opus", "id": "M"}, "[Pesan suara]"),
    ("document", {"filename": "laporan.pdf", "mime_type": "application/pdf", "id": "M"},
     "[Dokumen: laporan.pdf]"),
])
def test_media_messages(kind: str, content: dict[str, Any], text: str) -> None:
    # mypy cannot see that the key is never "ts"
    parsed = parse_whatsapp(body(wa_message("wamid.m", "6281234567890", kind,
                                            **{kind: content})))  # type: ignore[arg-type]
    [msg] = parsed.messages
    assert msg.text == text and msg.joins_window
    [ref] = msg.media
    assert ref.media_id == "M" and ref.kind == kind
    if kind == "document":
        assert ref.name == "laporan.pdf"
    assert ref.sha256 == content.get("sha256")


def test_location_and_bad_location() -> None:
    parsed = parse_whatsapp(body(
        wa_message("wamid.l", "6281234567890", "location",
                   location={"latitude": -0.5, "longitude": 117.1}),
        wa_message("wamid.x", "6281234567890", "location",
                   location={"latitude": 500, "longitude": 117.1})))
    [msg] = parsed.messages
    assert msg.location is not None and (msg.location.lat, msg.location.lon) == (-0.5, 117.1)
    assert msg.text == "[Lokasi] -0.5, 117.1"
    assert parsed.malformed == ["location without valid latitude/longitude"]


def test_statuses_reactions_unknown_and_malformed() -> None:
    parsed = parse_whatsapp(body(
        wa_message("wamid.r", "6281234567890", "reaction", reaction={"emoji": "👍"}),
        wa_message("wamid.u", "6281234567890", "order", order={}),
        wa_message("wamid.n", "6281234567890", "newfangled", newfangled={}),
        {"type": "text", "text": {"body": "no id"}},
        wa_message("wamid.e", "6281234567890", "text", text={"body": "   "}),
        statuses=[wa_status("wamid.OUT", "delivered", "6281234567890", ts=100),
                  {"status": "sent"}]))
    assert parsed.messages == []
    assert sorted(parsed.ignored) == ["empty_text", "order", "reaction", "unsupported"]
    assert parsed.malformed == ["message without id or from", "status without id or status"]
    assert parsed.statuses == [StatusUpdate("whatsapp", PNID, "wamid.OUT", "delivered", 100.0)]


def test_payload_structure_errors() -> None:
    assert parse_whatsapp({"object": "whatsapp_business_account"}).malformed == [
        "entry is not a list"]
    parsed = parse_whatsapp({"object": "whatsapp_business_account", "entry": [
        {"changes": [{"field": "account_update", "value": {}},
                     {"field": "messages", "value": {"messages": []}}]}, "junk"]})
    assert parsed.ignored == ["other_field"]
    assert parsed.malformed == ["change without metadata.phone_number_id"]


def test_delivery_tracker_keeps_the_furthest_state() -> None:
    tracker = DeliveryTracker(limit=2)

    def status(mid: str, state: str) -> StatusUpdate:
        return StatusUpdate("whatsapp", PNID, mid, state, None)

    assert tracker.update(status("a", "delivered"))
    assert not tracker.update(status("a", "sent"))
    assert tracker.update(status("a", "read"))
    assert not tracker.update(status("a", "delivered"))
    tracker.update(status("b", "sent"))
    tracker.update(status("c", "sent"))
    assert tracker.get("a") is None  # bounded: the oldest is forgotten
    assert tracker.get("c") is not None


@pytest.mark.parametrize(("status", "body", "retriable", "retry_after"), [
    (429, b"{}", True, 30.0),
    (503, b"", True, None),
    (400, b'{"error": {"code": 131056, "message": "pair rate limit"}}', True, None),
    (400, b'{"error": {"code": 131026, "message": "undeliverable"}}', False, None),
    (401, b'{"error": {"code": 190}}', False, None),
])
def test_graph_errors_are_typed(status: int, body: bytes, retriable: bool,
                                retry_after: float | None) -> None:
    error = graph_error(status, body, {}, "send")
    assert isinstance(error, ChannelUnavailable) is retriable
    assert getattr(error, "retry_after", None) == retry_after
    if not retriable:
        assert isinstance(error, GraphRejected) and error.status == status
    assert graph_error(429, b"", {"Retry-After": "12"}, "send").retry_after == 12.0  # type: ignore[attr-defined]


def test_settings() -> None:
    default = WhatsAppSettings()
    assert default.api_base == GRAPH_API_BASE and not default.enabled
    with pytest.raises(ValidationError, match="app_secret"):
        WhatsAppSettings(enabled=True, verify_token="v", access_token="t")
    with pytest.raises(ValidationError):
        WhatsAppSettings(unknown_key=1)  # type: ignore[call-arg]
    enabled = WhatsAppSettings(enabled=True, verify_token="v-tok", app_secret="s3cr3t-app",
                               access_token="t0ken-xyz")
    assert not {"v-tok", "s3cr3t-app", "t0ken-xyz"} & set(repr(enabled).split("'"))
    for name, field in WhatsAppSettings.model_fields.items():
        assert field.description, name
