"""The SMS connector over real HTTP: webhooks, signatures, multipart, status, replies, Gammu."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from config.sms import SmsSettings
from connectors.base import ReplyTarget
from connectors.sms import (
    PENDING_CURSOR,
    SmsConnector,
    gammu_messages_from_env,
    post_to_gateway,
    run_gammu_receive,
)
from connectors.testing import FakeIntake
from errors import ChannelRejected, ChannelUnavailable, retry_policy
from gateway.replies import ack_text
from normalizer.ids import complaint_id, tracking_code
from tests.emulators.sms import EmulatedSmsProvider, generic_sign, twilio_sign
from tests.integration.support import wait_for

TOKEN = "twilio-auth-token-0123"
SECRET = "generic-secret-4567"
CITIZEN_LOCAL = "0812-3456-7890"
CITIZEN = "+6281234567890"
PUBLIC = "https://lapor.example.go.id"


@pytest.fixture
async def provider() -> AsyncIterator[EmulatedSmsProvider]:
    emulator = EmulatedSmsProvider(auth_token=TOKEN, generic_secret=SECRET)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def twilio_settings(provider: EmulatedSmsProvider, **extra: Any) -> SmsSettings:
    return SmsSettings(enabled=True, provider="twilio", auth_token=SecretStr(TOKEN),
                       account_sid=provider.account_sid, from_number="1708",
                       send_api_base=provider.url, **extra)


def generic_settings(provider: EmulatedSmsProvider, **extra: Any) -> SmsSettings:
    return SmsSettings(enabled=True, provider="generic", generic_hmac_secret=SecretStr(SECRET),
                       send_api_base=provider.url, **extra)


@asynccontextmanager
async def running(connector: SmsConnector, intake: FakeIntake) -> AsyncIterator[str]:
    """The connector's routes on a real loopback server; yields the base URL."""
    app = web.Application()
    app.router.add_routes(connector.routes())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    await connector.start(intake)
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await connector.stop()
        await server.close()


def twilio_form(sid: str = "SM0001", body: str = "Lampu jalan padam di Jl. Juanda",
                sender: str = CITIZEN_LOCAL) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC0123", "From": sender,
            "To": "1708", "Body": body, "NumMedia": "0", "SmsStatus": "received"}


# --- Twilio -----------------------------------------------------------------------------------


async def test_twilio_message_is_submitted_then_answered_with_empty_twiml(
        provider: EmulatedSmsProvider, http: aiohttp.ClientSession) -> None:
    intake = FakeIntake()
    connector = SmsConnector(twilio_settings(provider), public_url=PUBLIC)
    async with running(connector, intake) as base:
        url = f"{base}/webhooks/sms/twilio"
        response = await EmulatedSmsProvider.twilio_inbound(
            http, url, TOKEN, twilio_form(), signed_url=f"{PUBLIC}/webhooks/sms/twilio")
        assert response.status == 200
        assert "<Response/>" in await response.text()
    [raw] = intake.messages.values()
    assert raw.channel == "sms" and raw.native_id == "SM0001" and raw.account == "1708"
    assert raw.sender.phone == CITIZEN
    assert raw.text == "Lampu jalan padam di Jl. Juanda"
    assert raw.reply_hints["address"] == CITIZEN


@pytest.mark.parametrize("signature", ["", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "local-url"])
async def test_twilio_bad_or_missing_signature_is_403(
        provider: EmulatedSmsProvider, http: aiohttp.ClientSession, signature: str) -> None:
    intake = FakeIntake()
    connector = SmsConnector(twilio_settings(provider), public_url=PUBLIC)
    async with running(connector, intake) as base:
        url = f"{base}/webhooks/sms/twilio"
        # "local-url": signed over the URL the proxy forwarded to, not the public one.
        response = await EmulatedSmsProvider.twilio_inbound(
            http, url, TOKEN, twilio_form(),
            signature=None if signature == "local-url" else signature)
        assert response.status == 403
        # A tampered body under a once-valid signature is refused too.
        form = twilio_form()
        good = twilio_sign(TOKEN, f"{PUBLIC}/webhooks/sms/twilio", form)
        form["Body"] = "diubah"
        async with http.post(url, data=form, headers={"X-Twilio-Signature": good}) as tampered:
            assert tampered.status == 403
    assert intake.messages == {}
    assert connector.health().counters["bad_signature"] == 2


async def test_twilio_store_unavailable_is_503_and_the_retry_is_stored_once(
        provider: EmulatedSmsProvider, http: aiohttp.ClientSession) -> None:
    intake = FakeIntake()
    intake.fail_next = 1
    connector = SmsConnector(twilio_settings(provider), public_url=PUBLIC)
    async with running(connector, intake) as base:
        url, signed = f"{base}/webhooks/sms/twilio", f"{PUBLIC}/webhooks/sms/twilio"
        first = await EmulatedSmsProvider.twilio_inbound(http, url, TOKEN, twilio_form(),
                                                         signed_url=signed)
        assert first.status == 503
        assert intake.messages == {}
        for _ in range(2):  # Twilio's retry, then a duplicate delivery
            again = await EmulatedSmsProvider.twilio_inbound(http, url, TOKEN, twilio_form(),
                                                             signed_url=signed)
            assert again.status == 200
    assert len(intake.messages) == 1
    assert connector.health().counters["duplicates"] == 1


# --- generic ----------------------------------------------------------------------------------


def generic_message(id_: str, text: str, parts: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"id": id_, "from": CITIZEN_LOCAL, "to": "1708", "text": text,
                               "received_at": "2026-11-29T11:00:00+08:00"}
    if parts is not None:
        message["parts"] = parts
    return message


async def test_generic_message_signature_and_shape(
        provider: EmulatedSmsProvider, http: aiohttp.ClientSession) -> None:
    intake = FakeIntake()
    connector = SmsConnector(generic_settings(provider), public_url=None)
    async with running(connector, intake) as base:
        url = f"{base}/webhooks/sms/generic"
        good = await EmulatedSmsProvider.generic_inbound(
            http, url, SECRET, generic_message("g-1", "Sampah menumpuk di pasar"))
        assert good.status == 200
        for signature in ("", "sha256=00", generic_sign("wrong", b"{}")):
            bad = await EmulatedSmsProvider.generic_inbound(
                http, url, SECRET, generic_message("g-2", "x"), signature=signature)
            assert bad.status == 403
        body = b'{"id": "g-3"}'
        async with http.post(url, data=body, headers={
                "X-Lapor-Signature": generic_sign(SECRET, body)}) as malformed:
            assert malformed.status == 400
            assert "from" in (await malformed.json())["fields"]
    # The signed but unusable request is kept with its bytes, not lost.
    assert [(letter[0], letter[3]) for letter in intake.dead_letters] == [("sms", body)]
    [raw] = intake.messages.values()
    assert raw.native_id == "g-1" and raw.sender.phone == CITIZEN
    assert raw.received_at.isoformat() == "2026-11-29T11:00:00+08:00"


async def test_multipart_sms_is_joined_across_a_restart_without_loss_or_duplicates(
        provider: EmulatedSmsProvider, http: aiohttp.ClientSession) -> None:
    intake = FakeIntake()  # its cursors play the durable store, which outlives the connector
    texts = ["Jalan di depan SDN 003 berlubang besar ", "dan sudah dua motor jatuh minggu ",
             "ini. Mohon segera diperbaiki."]
    parts = [generic_message(f"p-{i}", texts[i - 1], {"ref": "9f", "index": i, "total": 3})
             for i in (1, 2, 3)]
    first = SmsConnector(generic_settings(provider), public_url=None)
    async with running(first, intake) as base:
        url = f"{base}/webhooks/sms/generic"
        for part in (parts[2], parts[0]):  # out of order
            response = await EmulatedSmsProvider.generic_inbound(http, url, SECRET, part)
            assert response.status == 200
        assert intake.messages == {}
    assert PENDING_CURSOR in intake.cursors
    second = SmsConnector(generic_settings(provider), public_url=None)  # the gateway restarted
    async with running(second, intake) as base:
        url = f"{base}/webhooks/sms/generic"
        response = await EmulatedSmsProvider.generic_inbound(http, url, SECRET, parts[1])
        assert response.status == 200
        # The provider redelivers a part after the message was complete: nothing new.
        response = await EmulatedSmsProvider.generic_inbound(http, url, SECRET, parts[0])
        assert response.status == 200
    [raw] = intake.messages.values()
    assert raw.text == "".join(texts).strip()
    assert raw.native_id == "p-1"
    assert intake.cursors[PENDING_CURSOR] == "[]"


async def test_incomplete_multipart_is_submitted_after_the_window(
        provider: EmulatedSmsProvider, http: aiohttp.ClientSession) -> None:
    intake = FakeIntake()
    connector = SmsConnector(generic_settings(provider, multipart_window_s=0.5), public_url=None)
    async with running(connector, intake) as base:
        url = f"{base}/webhooks/sms/generic"
        for i, text in ((1, "Air PDAM mati "), (3, "tiga hari.")):
            part = generic_message(f"q-{i}", text, {"ref": "1", "index": i, "total": 3})
            assert (await EmulatedSmsProvider.generic_inbound(http, url, SECRET, part)).status \
                == 200

        async def submitted() -> bool:
            return len(intake.messages) == 1

        await wait_for(submitted, within=10, what="the incomplete message submitted")
    [raw] = intake.messages.values()
    assert raw.text == "Air PDAM mati [...] tiga hari."


async def test_store_unavailable_for_a_part_is_503(
        provider: EmulatedSmsProvider, http: aiohttp.ClientSession) -> None:
    intake = FakeIntake()
    connector = SmsConnector(generic_settings(provider), public_url=None)
    async with running(connector, intake) as base:
        url = f"{base}/webhooks/sms/generic"
        one = generic_message("r-1", "a", {"ref": "2", "index": 1, "total": 2})
        two = generic_message("r-2", "b", {"ref": "2", "index": 2, "total": 2})
        assert (await EmulatedSmsProvider.generic_inbound(http, url, SECRET, one)).status == 200
        intake.fail_next = 1
        assert (await EmulatedSmsProvider.generic_inbound(http, url, SECRET, two)).status == 503
        assert (await EmulatedSmsProvider.generic_inbound(http, url, SECRET, two)).status == 200
    [raw] = intake.messages.values()
    assert raw.text == "ab"


# --- STATUS keyword ---------------------------------------------------------------------------


async def test_status_keyword_answers_through_the_send_api(
        provider: EmulatedSmsProvider, http: aiohttp.ClientSession) -> None:
    intake = FakeIntake()
    connector = SmsConnector(twilio_settings(provider), public_url=PUBLIC)
    async with running(connector, intake) as base:
        url, signed = f"{base}/webhooks/sms/twilio", f"{PUBLIC}/webhooks/sms/twilio"
        await EmulatedSmsProvider.twilio_inbound(http, url, TOKEN, twilio_form(), signed_url=signed)
        [cid] = intake.messages
        code = tracking_code(cid)
        typed = code.replace("-", "").lower()
        response = await EmulatedSmsProvider.twilio_inbound(
            http, url, TOKEN, twilio_form("SM0002", f"status {typed}"), signed_url=signed)
        assert response.status == 200
        unknown = await EmulatedSmsProvider.twilio_inbound(
            http, url, TOKEN, twilio_form("SM0003", "STATUS ZZZZZ-ZZZZZ"), signed_url=signed)
        assert unknown.status == 200
    assert len(intake.messages) == 1  # status queries are not complaints
    first, second = provider.sent
    assert first.to == CITIZEN and first.sender == "1708" and first.api == "twilio"
    assert first.text.startswith(f"Laporan {code}: Diterima")
    assert "Lampu" not in first.text
    assert "tidak ditemukan" in second.text


# --- replies ----------------------------------------------------------------------------------


def target(cid: str = "c" * 32) -> ReplyTarget:
    return ReplyTarget(complaint_id=cid, tracking_code="ABCDE-12345", channel="sms",
                       account="1708", native_id="SM0001", address=CITIZEN,
                       hints={"address": CITIZEN})


@pytest.mark.parametrize("kind", ["twilio", "generic"])
async def test_reply_is_split_and_survives_429_then_succeeds(
        provider: EmulatedSmsProvider, kind: str) -> None:
    settings = twilio_settings(provider) if kind == "twilio" else generic_settings(provider)
    connector = SmsConnector(settings, public_url=PUBLIC)
    await connector.start(FakeIntake())
    text = ack_text("ABCDE-12345", PUBLIC)
    provider.fail_next = [429]
    try:
        with pytest.raises(ChannelUnavailable) as info:
            await connector.send_reply(target(), text)
        assert info.value.retry_after == 1.0
        provider.fail_next = [503]  # then a 5xx: retried with backoff
        async for attempt in retry_policy(max_delay=30):
            with attempt:
                ids = await connector.send_reply(target(), text)
    finally:
        await connector.stop()
    assert ids is not None and len(ids.split(",")) == 2
    assert [s.api for s in provider.sent] == [kind, kind]
    assert " ".join(s.text for s in provider.sent) == text
    assert all(s.to == CITIZEN for s in provider.sent)


async def test_reply_parts_already_sent_are_not_sent_again(
        provider: EmulatedSmsProvider) -> None:
    connector = SmsConnector(generic_settings(provider), public_url=PUBLIC)
    await connector.start(FakeIntake())
    text = ack_text("ABCDE-12345", PUBLIC)
    try:
        # The second part fails: the retry must send only the second part.
        original = provider._failure

        calls = {"n": 0}

        def fail_second() -> web.Response | None:
            calls["n"] += 1
            if calls["n"] == 2:
                return web.json_response({"error": "down"}, status=502)
            return original()

        provider._failure = fail_second  # type: ignore[method-assign]
        with pytest.raises(ChannelUnavailable):
            await connector.send_reply(target(), text)
        await connector.send_reply(target(), text)
    finally:
        await connector.stop()
    assert len(provider.sent) == 2


async def test_reply_rejected_by_the_provider_is_permanent(
        provider: EmulatedSmsProvider) -> None:
    connector = SmsConnector(generic_settings(provider), public_url=PUBLIC)
    await connector.start(FakeIntake())
    provider.fail_next = [400]
    try:
        with pytest.raises(ChannelRejected):
            await connector.send_reply(target(), "Terima kasih")
    finally:
        await connector.stop()


# --- Gammu RunOnReceive -----------------------------------------------------------------------


async def test_gammu_run_on_receive_posts_to_the_generic_route(
        provider: EmulatedSmsProvider) -> None:
    intake = FakeIntake()
    connector = SmsConnector(
        SmsSettings(enabled=True, provider="gammu", generic_hmac_secret=SecretStr(SECRET)),
        public_url=None)
    env = {"SMS_MESSAGES": "2", "SMS_1_NUMBER": CITIZEN_LOCAL, "SMS_1_TEXT": "Banjir setinggi ",
           "SMS_2_NUMBER": CITIZEN_LOCAL, "SMS_2_TEXT": "lutut di Jl. Pemuda",
           "DECODED_PARTS": "1", "DECODED_1_TEXT": "Banjir setinggi lutut di Jl. Pemuda",
           "PHONE_ID": "modem1"}
    messages = gammu_messages_from_env(env, ["41", "42"], to="1708")
    async with running(connector, intake) as base:
        await post_to_gateway(messages, url=f"{base}/webhooks/sms/generic", secret=SECRET)
        # SMSD runs the script again (e.g. after a timeout): still one complaint.
        await post_to_gateway(messages, url=f"{base}/webhooks/sms/generic", secret=SECRET)
        with pytest.raises(ChannelRejected):
            await post_to_gateway(messages, url=f"{base}/webhooks/sms/generic", secret="salah")
    [raw] = intake.messages.values()
    assert raw.text == "Banjir setinggi lutut di Jl. Pemuda"
    assert raw.sender.phone == CITIZEN
    assert list(intake.messages) == [complaint_id("sms", "1708", messages[0].id)]


async def test_gammu_post_retries_until_the_gateway_is_up() -> None:
    intake = FakeIntake()
    intake.fail_next = 2  # the store is briefly unavailable: 503, 503, then stored
    connector = SmsConnector(
        SmsSettings(enabled=True, provider="gammu", generic_hmac_secret=SecretStr(SECRET)),
        public_url=None)
    env = {"SMS_MESSAGES": "1", "SMS_1_NUMBER": CITIZEN_LOCAL, "SMS_1_TEXT": "Jembatan retak"}
    async with running(connector, intake) as base:
        cli_settings = SmsSettings(provider="gammu", generic_hmac_secret=SecretStr(SECRET),
                                   gateway_url=base + "/", account="+6281100001708")
        assert await run_gammu_receive(cli_settings, env, ["7"]) == 1
    [raw] = intake.messages.values()
    assert raw.text == "Jembatan retak"
    assert raw.account == "+6281100001708"


async def test_finished_multipart_records_are_forgotten_after_a_day() -> None:
    import time

    import orjson

    from config.sms import SmsSettings
    from connectors.sms import DONE_KEEP_S, PARTS_PREFIX, SmsConnector
    from connectors.testing import FakeIntake

    intake = FakeIntake()
    intake.cursors[f"{PARTS_PREFIX}old"] = orjson.dumps(
        {"done": ["a"], "at": time.time() - DONE_KEEP_S - 60}).decode()
    intake.cursors[f"{PARTS_PREFIX}fresh"] = orjson.dumps(
        {"done": ["b"], "at": time.time()}).decode()
    connector = SmsConnector(SmsSettings(enabled=True, provider="generic",
                                         generic_hmac_secret="s"), public_url=None)
    await connector.start(intake)
    await connector.stop()
    assert set(intake.cursors) == {f"{PARTS_PREFIX}fresh"}
