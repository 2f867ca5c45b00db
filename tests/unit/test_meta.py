"""Messenger/Instagram payload parsing and settings (no network)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.whatsapp import MetaSettings
from connectors.meta import parse_meta
from tests.emulators.graph import messaging, meta_payload

PAGE = "112233"
PSID = "445566"


def test_messenger_text_and_postback() -> None:
    parsed = parse_meta(meta_payload("page", (PAGE, [
        messaging(PSID, PAGE, ts_ms=1_700_000_000_123,
                  message={"mid": "m_1", "text": "Jalan rusak"}),
        messaging(PSID, PAGE, ts_ms=1_700_000_000_456,
                  postback={"mid": "m_2", "title": "Lapor", "payload": "LAPOR"}),
    ])))
    first, second = parsed.messages
    assert (first.channel, first.account, first.native_id) == ("messenger", PAGE, "m_1")
    assert first.sender.channel_user_id == PSID and first.text == "Jalan rusak"
    assert first.sent_at is not None and first.sent_at.timestamp() == 1_700_000_000.123
    assert first.reply_hints == {"address": PSID, "platform": "messenger",
                                 "customer_msg_at": "1700000000"}
    assert second.kind == "postback" and second.text == "Lapor" and second.native_id == "m_2"


def test_instagram_attachments() -> None:
    parsed = parse_meta(meta_payload("instagram", ("IG1", [
        messaging("igsid", "IG1", message={"mid": "ig_1", "attachments": [
            {"type": "image", "payload": {"url": "https://cdn.example/a.jpg"}},
            {"type": "video", "payload": {"url": "https://cdn.example/b.mp4"}},
            {"type": "share", "payload": {"url": "https://instagram.com/p/x"}},
            {"type": "image", "payload": {"url": "https://cdn.example/s", "sticker_id": 1}},
        ]}),
    ])))
    [msg] = parsed.messages
    assert msg.channel == "instagram" and msg.text == "[Foto tanpa keterangan]"
    assert msg.joins_window
    assert [(m.kind, m.url) for m in msg.media] == [("image", "https://cdn.example/a.jpg"),
                                                     ("video", "https://cdn.example/b.mp4")]
    assert sorted(parsed.ignored) == ["other_attachment", "sticker"]


def test_non_messages() -> None:
    parsed = parse_meta(meta_payload("page", (PAGE, [
        messaging(PAGE, PSID, message={"mid": "m_e", "text": "ours", "is_echo": True}),
        messaging(PSID, PAGE, reaction={"mid": "m_1", "action": "react"}),
        messaging(PSID, PAGE, read={"watermark": 1}),
        messaging(PSID, PAGE, delivery={"mids": ["m_out"], "watermark": 1}),
        messaging(PSID, PAGE, optin={"ref": "x"}),
        messaging(PSID, PAGE, message={"mid": "m_u", "is_unsupported": True}),
        messaging(PSID, PAGE, message={"text": "no mid"}),
    ])))
    assert parsed.messages == []
    assert sorted(parsed.ignored) == ["echo", "other_event", "reaction", "read", "unsupported"]
    assert [s.message_id for s in parsed.statuses] == ["m_out"]
    assert parsed.malformed == ["message without mid"]
    ig = parse_meta(meta_payload("instagram", ("IG1", [
        messaging("igsid", "IG1", read={"mid": "m_out2"})])))
    assert [(s.message_id, s.status) for s in ig.statuses] == [("m_out2", "read")]


def test_disabled_channels_and_other_objects() -> None:
    payload = meta_payload("instagram", ("IG1", [
        messaging("igsid", "IG1", message={"mid": "ig_1", "text": "x"})]))
    assert parse_meta(payload, instagram=False).ignored == ["disabled_instagram"]
    assert parse_meta({"object": "user", "entry": []}).ignored == ["other_object"]
    assert parse_meta({"object": "page"}).malformed == ["entry is not a list"]


def test_settings() -> None:
    with pytest.raises(ValidationError, match="page_access_token"):
        MetaSettings(enabled=True, verify_token="v", app_secret="s")
    settings = MetaSettings(enabled=True, verify_token="v", app_secret="s",
                            page_access_token="t")
    assert settings.messenger and settings.instagram and not settings.human_agent_tag
    for name, field in MetaSettings.model_fields.items():
        assert field.description, name
