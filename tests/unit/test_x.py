"""X connector pieces without the network: mention stripping, tweet mapping, error mapping."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr, ValidationError
from tweepy.errors import (  # type: ignore[import-untyped]
    BadRequest,
    Forbidden,
    TooManyRequests,
    TwitterServerError,
)

from config.x import XSettings
from connectors.x import (
    Includes,
    XConnector,
    replied_to,
    strip_our_mentions,
    translate,
    tweet_to_raw,
)
from errors import ChannelRejected, ChannelUnavailable

OURS = "1708000001"


@pytest.mark.parametrize(("text", "expected"), [
    ("@LAPOR1708 Jalan rusak", "Jalan rusak"),
    ("@lapor1708   @LAPOR1708 Jalan rusak", "Jalan rusak"),
    ("@warga @LAPOR1708 sudah seminggu", "@warga sudah seminggu"),
    ("Jalan rusak, tolong @LAPOR1708", "Jalan rusak, tolong @LAPOR1708"),
    ("@LAPOR1708", ""),
])
def test_strip_our_leading_mentions(text: str, expected: str) -> None:
    assert strip_our_mentions(text, {"lapor1708"}) == expected


def tweet(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "1800000000000000123", "text": "@LAPOR1708 Lampu jalan padam",
        "author_id": "555", "created_at": "2026-11-29T01:02:03.000Z",
        "conversation_id": "1800000000000000123", "lang": "in",
        "entities": {"mentions": [{"start": 0, "end": 10, "username": "LAPOR1708", "id": OURS}]},
    }
    base.update(extra)
    return base


def test_tweet_to_raw_maps_the_fields() -> None:
    includes = Includes()
    includes.add({"users": [{"id": "555", "username": "warga", "name": "Warga"}],
                  "media": [{"media_key": "3_9", "type": "photo", "url": "https://p/9.jpg"}],
                  "places": [{"id": "pl", "full_name": "Balikpapan",
                              "geo": {"bbox": [116.8, -1.3, 117.0, -1.1]}}]})
    raw = tweet_to_raw(tweet(attachments={"media_keys": ["3_9"]}, geo={"place_id": "pl"}),
                       includes, account=OURS, username=None)
    assert (raw.channel, raw.account, raw.native_id) == ("x", OURS, "1800000000000000123")
    assert raw.text == "Lampu jalan padam"
    assert raw.sender.handle == "@warga" and raw.sender.channel_user_id == "555"
    assert raw.sender.name == "Warga"
    assert raw.sent_at is not None and raw.sent_at.isoformat() == "2026-11-29T01:02:03+00:00"
    assert raw.reply_hints == {"tweet_id": "1800000000000000123", "author_id": "555"}
    assert raw.location is not None and raw.location.text == "Balikpapan"
    assert raw.attachments[0].storage_ref == "https://p/9.jpg"
    assert raw.attachments[0].state == "pending"


def test_tweet_without_entities_uses_the_configured_username() -> None:
    raw = tweet_to_raw(tweet(entities={}), Includes(), account=OURS, username="@LAPOR1708")
    assert raw.text == "Lampu jalan padam"


def test_exact_coordinates_win_over_the_place_box() -> None:
    raw = tweet_to_raw(tweet(geo={"coordinates": {"type": "Point",
                                                  "coordinates": [117.15, -0.5]}}),
                       Includes(), account=OURS, username=None)
    assert raw.location is not None
    assert (raw.location.lat, raw.location.lon) == (-0.5, 117.15)


def test_replied_to() -> None:
    assert replied_to(tweet()) is None
    assert replied_to(tweet(referenced_tweets=[{"type": "quoted", "id": "1"},
                                               {"type": "replied_to", "id": "2"}])) == "2"


def _response(status: int) -> Any:
    return SimpleNamespace(status=status, reason="x", headers={})


def test_translate_errors() -> None:
    reset = int(time.time()) + 30
    limited = translate(TooManyRequests(_response(429), response_json={}, reset_time=reset), "t")
    assert isinstance(limited, ChannelUnavailable)
    assert limited.retry_after is not None and 25 <= limited.retry_after <= 31
    assert isinstance(translate(TwitterServerError(_response(503), response_json={}), "t"),
                      ChannelUnavailable)
    assert isinstance(translate(Forbidden(_response(403), response_json={
        "detail": "duplicate content"}), "t"), ChannelRejected)
    assert isinstance(translate(BadRequest(_response(400), response_json={}), "t"),
                      ChannelRejected)
    assert isinstance(translate(aiohttp.ClientConnectionError(), "t"), ChannelUnavailable)
    assert isinstance(translate(TimeoutError(), "t"), ChannelUnavailable)


def test_settings_require_credentials_when_enabled() -> None:
    assert XSettings().enabled is False
    with pytest.raises(ValidationError, match="bearer_token"):
        XSettings(enabled=True)
    with pytest.raises(ValidationError, match="consumer_key"):
        XSettings(enabled=True, bearer_token=SecretStr("b"), user_id=OURS)
    ok = XSettings(enabled=True, bearer_token=SecretStr("bearer-rahasia"), user_id=OURS,
                   reply_mode="none")
    assert "bearer-rahasia" not in repr(ok)
    for name, info in XSettings.model_fields.items():
        assert info.description, name


def test_hashtag_adds_a_search_stream_with_its_own_cursor() -> None:
    x = XConnector(XSettings(user_id=OURS, hashtag="#lapor"), public_url=None)
    assert x.account == OURS
    assert [s.cursor for s in x._streams][0] == f"x:{OURS}:mentions:since_id"
    assert x._streams[1].query == "#lapor -is:retweet"
