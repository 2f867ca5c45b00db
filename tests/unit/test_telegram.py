"""Unit tests of the Telegram connector's pure parts: settings, error translation, commands,
status answers, and update handling that needs no network (no sends, no downloads)."""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import orjson
import pytest
from aiohttp import web
from telegram import Bot, Update, User
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from config.telegram import TelegramSettings
from connectors.base import ConnectorState, ReplyTarget
from connectors.telegram import FloodLimited, RateLimiter, TelegramConnector, translate_error
from connectors.telegram_texts import parse_command, status_text
from connectors.testing import FakeIntake
from errors import ChannelRejected, ChannelUnavailable

TOKEN = "123456789:AAE-unit_TOKEN_0123456789abcdefghij"
BOT_ID = 123456789


# --------------------------------------------------------------------------- settings


def test_settings_defaults_are_disabled_and_valid() -> None:
    settings = TelegramSettings()
    assert not settings.enabled and settings.mode == "webhook"
    assert settings.api_base == "https://api.telegram.org"
    assert settings.max_download_bytes == 20_000_000


def test_enabled_settings_need_a_token_and_a_webhook_secret() -> None:
    with pytest.raises(ValueError, match="token is required"):
        TelegramSettings(enabled=True, secret_token="abc")
    with pytest.raises(ValueError, match="secret_token is required"):
        TelegramSettings(enabled=True, token=TOKEN)
    polling = TelegramSettings(enabled=True, token=TOKEN, mode="polling")
    assert polling.secret_token is None


@pytest.mark.parametrize("secret", ["", "has space", "ü", "x" * 257])
def test_webhook_secret_shape_is_checked(secret: str) -> None:
    with pytest.raises(ValueError, match="secret_token"):
        TelegramSettings(secret_token=secret)


def test_settings_refuse_unknown_keys_and_bad_urls() -> None:
    with pytest.raises(ValueError, match="tokn"):
        TelegramSettings(tokn="x")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="api_base"):
        TelegramSettings(api_base="ftp://example")
    assert TelegramSettings(api_base="http://127.0.0.1:1/").api_base == "http://127.0.0.1:1"
    with pytest.raises(ValueError):
        TelegramSettings(max_download_bytes=30_000_000)


def test_settings_do_not_show_secrets() -> None:
    settings = TelegramSettings(enabled=True, token=TOKEN, secret_token="s3cret")
    assert TOKEN not in repr(settings) and "s3cret" not in repr(settings)


# --------------------------------------------------------------------------- errors


def test_flood_limits_carry_retry_after() -> None:
    error = translate_error(FloodLimited(3))
    assert isinstance(error, ChannelUnavailable) and error.retry_after == 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PTB's own constructor warns (22.2+)
        original = RetryAfter(7)
    error = translate_error(original)  # reading retry_after must not warn (warnings are errors)
    assert isinstance(error, ChannelUnavailable) and error.retry_after == 7.0


@pytest.mark.parametrize(("exc", "kind"), [
    (NetworkError("Bad Gateway"), ChannelUnavailable),
    (TimedOut(), ChannelUnavailable),
    (Conflict("terminated by other getUpdates request"), ChannelUnavailable),
    (BadRequest("chat not found"), ChannelRejected),
    (Forbidden("bot was blocked by the user"), ChannelRejected),
    (ChatMigrated(-100123), ChannelRejected),
    (InvalidToken(f"The token `{TOKEN}` was rejected by the server."), ChannelRejected),
])
def test_ptb_errors_are_translated(exc: Exception, kind: type[Exception]) -> None:
    error = translate_error(exc)  # type: ignore[arg-type]
    assert type(error) is kind
    assert TOKEN not in str(error)
    assert error.retriable is (kind is ChannelUnavailable)


# --------------------------------------------------------------------------- texts


@pytest.mark.parametrize(("text", "expected"), [
    ("/start", ("start", "")),
    ("/status ABCDE-12345", ("status", "ABCDE-12345")),
    ("/STATUS@lapor_prov_bot  abcde12345 ", ("status", "abcde12345")),
    ("/bantuan@LAPOR_PROV_BOT", ("bantuan", "")),
    ("/start@other_bot", None),
    ("jalan rusak /status", None),
    ("/", None),
    ("/ spasi", None),
    ("/123-abc", None),
])
def test_commands_are_parsed(text: str, expected: tuple[str, str] | None) -> None:
    assert parse_command(text, "lapor_prov_bot") == expected


def test_status_text_hides_confidential_titles() -> None:
    public = {"tracking_code": "ABCDE-12345", "status": "received",
              "status_label": "Diterima", "received_at": "2026-11-20T10:00:00+00:00",
              "title": "Jalan rusak", "agency": "Dinas PUPR", "confidential": False}
    text = status_text("abcde12345", public)
    assert "ABCDE-12345" in text and "Diterima" in text and "Jalan rusak" in text
    assert "2026-11-20" in text and "Dinas PUPR" in text
    secret = {**public, "title": "Pungli di kelurahan", "confidential": True}
    assert "Pungli" not in status_text("abcde12345", secret)
    assert "tidak ditemukan" in status_text("XXXXX", None)


# --------------------------------------------------------------------------- limiter


async def test_rate_limiter_holds_senders_during_a_pause() -> None:
    limiter = RateLimiter(0.0, 0.0)
    limiter.pause(0.05)
    started = time.monotonic()
    await limiter.acquire("1")
    assert time.monotonic() - started >= 0.05


async def test_rate_limiter_spaces_messages_to_one_chat() -> None:
    limiter = RateLimiter(0.0, 0.05)
    started = time.monotonic()
    await limiter.acquire("1")
    await limiter.acquire("2")  # another chat: no wait
    assert time.monotonic() - started < 0.05
    await limiter.acquire("1")
    assert time.monotonic() - started >= 0.05


# --------------------------------------------------------------------------- handling


def connector(mode: str = "polling") -> TelegramConnector:
    settings = TelegramSettings(enabled=True, token=TOKEN, mode=mode,
                                secret_token="s3cret", api_base="http://127.0.0.1:9")
    built = TelegramConnector(settings, public_url=None)
    built._me = User(BOT_ID, "LAPOR", True, username="lapor_prov_bot")  # as getMe answered
    return built


def offline_start(tg: TelegramConnector, intake: FakeIntake) -> None:
    """Start without the background task (no getMe: unit tests are offline)."""
    tg._intake = intake
    tg._health.state = ConnectorState.RUNNING


def update(kind: str = "message", **message: Any) -> tuple[Update, bytes]:
    body: dict[str, Any] = {
        "message_id": 42, "date": 1764390000,
        "from": {"id": 5550001, "is_bot": False, "first_name": "Siti", "username": "siti"},
        "chat": {"id": 5550001, "type": "private", "first_name": "Siti"},
    }
    body.update(message)
    data = {"update_id": 777, kind: body}
    raw = orjson.dumps(data)
    return Update.de_json(data, Bot(TOKEN)), raw


async def test_private_text_becomes_a_raw_message() -> None:
    intake = FakeIntake()
    tg = connector()
    offline_start(tg, intake)
    upd, raw = update(text="Jalan berlubang di Jl. Juanda, mohon segera diperbaiki.",
                      location={"latitude": -0.5, "longitude": 117.1})
    await tg.handle_update(upd, raw)
    [message] = intake.messages.values()
    assert message.native_id == "5550001:42" and message.account == "lapor_prov_bot"
    assert message.raw_payload == raw and message.sender.handle == "@siti"
    assert message.location is not None and message.location.lon == 117.1
    assert message.sent_at is not None and message.sent_at.tzinfo is not None
    await tg.stop()


async def test_edit_names_the_message_it_edits() -> None:
    intake = FakeIntake()
    tg = connector()
    offline_start(tg, intake)
    upd, raw = update("edited_message", text="Isi yang diperbaiki.", edit_date=1764390060)
    await tg.handle_update(upd, raw)
    [message] = intake.messages.values()
    assert message.native_id == "5550001:42:edit:1764390060"
    assert message.edit_of == "5550001:42" and message.thread_of is None
    assert "follow_up" not in message.reply_hints  # an edit of an unknown message is new
    live, raw = update("edited_message", location={"latitude": 1, "longitude": 2},
                       edit_date=1764390070)
    await tg.handle_update(live, raw)  # a live location moving is not a follow-up
    assert len(intake.messages) == 1
    await tg.stop()


async def test_unaddressed_group_messages_and_channel_posts_are_ignored() -> None:
    intake = FakeIntake()
    tg = connector()
    offline_start(tg, intake)
    group = {"id": -100200300, "type": "supergroup", "title": "Warga"}
    upd, raw = update(text="Jalan di depan rusak parah sekali.", chat=group)
    await tg.handle_update(upd, raw)
    post = Update.de_json({"update_id": 1, "channel_post": {
        "message_id": 1, "date": 1764390000, "chat": {"id": -1009, "type": "channel"},
        "text": "Pengumuman"}}, Bot(TOKEN))
    await tg.handle_update(post, b"{}")
    assert intake.messages == {} and tg.health().counters["ignored"] == 2
    await tg.stop()


async def test_webhook_mode_has_the_route_and_polling_mode_none() -> None:
    [route] = connector("webhook").routes()
    assert isinstance(route, web.RouteDef) and route.path == "/webhooks/telegram"
    assert route.method == "POST"
    assert connector("polling").routes() == []


def test_the_token_is_redacted_from_url_logs(caplog: pytest.LogCaptureFixture) -> None:
    connector()
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info('HTTP Request: POST %s "HTTP/1.1 200 OK"',
                                        f"https://api.telegram.org/bot{TOKEN}/getMe")
    assert TOKEN not in caplog.text and "/bot<token>/getMe" in caplog.text


async def test_a_cursor_older_than_six_days_is_not_trusted() -> None:
    intake = FakeIntake()
    tg = connector()
    offline_start(tg, intake)
    name = f"telegram:{BOT_ID}:offset"
    intake.cursors[name] = orjson.dumps({"offset": 501, "saved_at": time.time()}).decode()
    await tg._load_offset()
    assert tg._offset == 501
    stale = connector()
    offline_start(stale, intake)
    intake.cursors[name] = orjson.dumps({"offset": 501, "saved_at": time.time() - 7 * 86400}
                                        ).decode()
    await stale._load_offset()  # update_id may have restarted: Telegram's confirmation rules
    assert stale._offset is None


async def test_follow_ups_are_not_acknowledged_separately() -> None:
    tg = connector()
    target = ReplyTarget(complaint_id="0" * 32, tracking_code="ABCDE-12345",
                         channel="telegram", account="lapor_prov_bot", native_id="1:2",
                         address="1", hints={"chat_id": "1", "message_id": "2",
                                             "follow_up": "1"})
    assert await tg.send_reply(target, "Kode pelacakan") is None
