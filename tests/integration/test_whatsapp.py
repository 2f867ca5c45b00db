"""The WhatsApp connector over real HTTP: its routes on 127.0.0.1, the Graph emulator on loopback,
payloads built to the documented shapes and signed over the exact bytes sent."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config.whatsapp import WhatsAppSettings
from connectors import meta_webhook
from connectors.base import ReplyTarget
from connectors.testing import FakeIntake
from connectors.whatsapp import WhatsAppConnector
from errors import ChannelRejected, ChannelUnavailable
from normalizer.ids import complaint_id, tracking_code
from normalizer.raw import RawMessage
from normalizer.schema import AttachmentState
from tests.emulators.graph import (
    TOKEN,
    EmulatedGraph,
    WebhookClient,
    encode,
    serve,
    signature,
    wa_change,
    wa_message,
    wa_payload,
    wa_status,
)
from tests.integration.support import PNG, wait_for

SECRET = "app-secret"
VERIFY = "verify-token-123"
PNID = "106540352242922"
CITIZEN = "6281234567890"
OTHER = "6281298765432"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200


@dataclass
class Env:
    connector: WhatsAppConnector
    intake: FakeIntake
    client: TestClient[Any, Any]
    hook: WebhookClient
    graph: EmulatedGraph

    def stored(self, wamid: str, account: str = PNID) -> RawMessage | None:
        return self.intake.messages.get(complaint_id("whatsapp", account, wamid))


@pytest.fixture
async def graph() -> AsyncIterator[EmulatedGraph]:
    async with EmulatedGraph() as emulator:
        yield emulator


@asynccontextmanager
async def whatsapp(graph: EmulatedGraph, intake: FakeIntake | None = None,
                   **overrides: Any) -> AsyncIterator[Env]:
    settings = WhatsAppSettings(
        enabled=True, verify_token=VERIFY, app_secret=SECRET, access_token=TOKEN,
        phone_number_id=PNID, api_base=graph.api_base, **overrides)
    connector = WhatsAppConnector(settings, public_url=None)
    intake = intake if intake is not None else FakeIntake()
    async with serve(connector, intake) as client:
        yield Env(connector, intake, client, WebhookClient(client, "/webhooks/whatsapp", SECRET),
                  graph)


@pytest.fixture
async def env(graph: EmulatedGraph) -> AsyncIterator[Env]:
    async with whatsapp(graph) as e:
        yield e


def text(wamid: str, body: str, sender: str = CITIZEN, **kw: Any) -> dict[str, Any]:
    return wa_message(wamid, sender, "text", text={"body": body}, **kw)


def one(*messages: dict[str, Any], sender: str = CITIZEN, name: str = "Siti Aminah",
        statuses: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return wa_payload([wa_change(PNID, messages=messages, contacts=[(sender, name)] if messages
                                 else (), statuses=statuses)])


# -- verification handshake ------------------------------------------------------------------


async def test_handshake_answers_the_raw_challenge(env: Env) -> None:
    response = await env.client.get("/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"})
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert await response.text() == "1158201444"


@pytest.mark.parametrize("params", [
    {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "x"},
    {"hub.mode": "subscribe", "hub.challenge": "x"},
    {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "x"},
])
async def test_handshake_with_a_wrong_token_is_403(env: Env, params: dict[str, str]) -> None:
    response = await env.client.get("/webhooks/whatsapp", params=params)
    assert response.status == 403
    assert "x" != await response.text()


# -- signatures, size, JSON --------------------------------------------------------------------


async def test_text_message_becomes_one_complaint_with_the_exact_bytes(env: Env) -> None:
    ts = int(time.time()) - 30
    payload = one(text("wamid.T1", "Jalan rusak di depan SDN 003 — tolong segera 🙏", ts=ts))
    body = encode(payload)
    assert b"\\u2014" in body and b"\\ud83d" in body  # Meta's escaped-unicode form
    response = await env.hook.post(body)
    assert response.status == 200
    raw = env.stored("wamid.T1")
    assert raw is not None
    assert raw.channel == "whatsapp" and raw.account == PNID and raw.native_id == "wamid.T1"
    assert raw.text == "Jalan rusak di depan SDN 003 — tolong segera 🙏"
    assert raw.sender.name == "Siti Aminah"
    assert raw.sender.phone == "+6281234567890"
    assert raw.sender.channel_user_id == CITIZEN
    assert raw.sent_at is not None and int(raw.sent_at.timestamp()) == ts
    assert raw.raw_payload == body and raw.raw_content_type == "application/json"
    assert raw.connector == "whatsapp"
    assert raw.reply_hints == {"address": CITIZEN, "phone_number_id": PNID,
                               "customer_msg_at": str(ts)}
    assert env.connector.health().counters["accepted"] == 1


@pytest.mark.parametrize("headers", [
    {"X-Hub-Signature-256": "sha256=" + "0" * 64},
    {"X-Hub-Signature-256": ""},
    {"X-Hub-Signature-256": "sha1=abc"},
])
async def test_wrong_or_missing_signature_is_403_and_nothing_stored(
        env: Env, headers: dict[str, str]) -> None:
    response = await env.hook.post(one(text("wamid.S1", "Lampu padam")), headers=headers)
    assert response.status == 403
    assert env.intake.messages == {}
    assert env.connector.health().counters["bad_signature"] == 1


async def test_signature_with_another_secret_is_403(env: Env) -> None:
    response = await env.hook.post(one(text("wamid.S2", "Lampu padam")), sign_with="other")
    assert response.status == 403
    assert env.intake.messages == {}


async def test_signature_over_re_serialised_json_is_refused(env: Env) -> None:
    payload = one(text("wamid.S3", "Sampah menumpuk di pasar — bau sekali"))
    sent = encode(payload)
    reserialised = json.dumps(payload, ensure_ascii=False).encode()
    response = await env.client.post("/webhooks/whatsapp", data=sent, headers={
        "Content-Type": "application/json",
        "X-Hub-Signature-256": signature(SECRET, reserialised)})
    assert response.status == 403
    assert env.intake.messages == {}


async def test_invalid_json_with_a_valid_signature_is_dead_lettered_and_acknowledged(
        env: Env) -> None:
    response = await env.hook.post(b'{"object": "whatsapp_business_account", "entry": [')
    assert response.status == 200  # kept: redelivering the same bytes cannot help
    assert (await response.json())["dead_letter"] is True
    assert env.intake.messages == {}
    [(channel, _, reason, raw)] = env.intake.dead_letters
    assert channel == "whatsapp" and "JSON" in reason and raw.startswith(b'{"object"')


async def test_body_over_the_limit_is_413(graph: EmulatedGraph) -> None:
    async with whatsapp(graph, max_body_bytes=2000) as env:
        payload = one(text("wamid.B1", "x" * 3000))
        response = await env.hook.post(payload)
        assert response.status == 413
        assert env.intake.messages == {}


async def test_other_objects_are_acknowledged_without_complaints(env: Env) -> None:
    response = await env.hook.post({"object": "page", "entry": []})
    assert response.status == 200
    assert env.intake.messages == {}


# -- batches, statuses, duplicates --------------------------------------------------------------


async def test_every_entry_change_and_message_is_accepted(env: Env) -> None:
    second_number = "200000000000001"
    payload = wa_payload(
        [wa_change(PNID, messages=[text("wamid.A1", "Jalan berlubang"),
                                   text("wamid.A2", "Drainase tersumbat")],
                   contacts=[(CITIZEN, "Siti")]),
         wa_change(PNID, messages=[text("wamid.A3", "Pungli di kelurahan", sender=OTHER)],
                   contacts=[(OTHER, "Budi")])],
        [wa_change(second_number, messages=[text("wamid.A4", "Air PDAM mati")],
                   contacts=[(CITIZEN, "Siti")]),
         wa_change(PNID, statuses=[wa_status("wamid.OUT1", "delivered", CITIZEN)])],
    )
    response = await env.hook.post(payload)
    assert response.status == 200
    assert await response.json() == {"received": 4, "statuses": 1}
    assert len(env.intake.messages) == 4
    assert env.stored("wamid.A4", account=second_number) is not None
    budi = env.stored("wamid.A3")
    assert budi is not None and budi.sender.name == "Budi"
    assert budi.sender.phone == "+6281298765432"


async def test_statuses_update_delivery_state_out_of_order_and_never_make_complaints(
        env: Env) -> None:
    now = time.time()
    for state, ts in [("read", now), ("sent", now - 10), ("delivered", now - 5)]:
        response = await env.hook.post(one(statuses=(wa_status("wamid.OUT9", state, CITIZEN,
                                                               ts=ts),)))
        assert response.status == 200
    assert env.intake.messages == {}
    final = env.connector.deliveries.get("wamid.OUT9")
    assert final is not None and final.status == "read"
    # Later-arriving older states are ignored, in memory and in what the intake records.
    assert env.intake.deliveries == {("whatsapp", "wamid.OUT9"): "read"}
    await env.hook.post(one(statuses=(wa_status("wamid.OUT8", "failed", CITIZEN,
                                                error_code=131026),)))
    failed = env.connector.deliveries.get("wamid.OUT8")
    assert failed is not None and failed.error_codes == (131026,)
    assert env.intake.deliveries[("whatsapp", "wamid.OUT8")] == "failed"
    assert env.connector.health().counters["statuses"] == 4


async def test_duplicates_and_out_of_order_redelivery_are_absorbed(env: Env) -> None:
    first = one(text("wamid.D1", "Jembatan retak", ts=time.time() - 60))
    second = one(text("wamid.D2", "Tolong diperbaiki", ts=time.time() - 30))
    for payload in (second, first, second, first, first):
        response = await env.hook.post(payload)
        assert response.status == 200
    assert set(env.intake.messages) == {complaint_id("whatsapp", PNID, "wamid.D1"),
                                        complaint_id("whatsapp", PNID, "wamid.D2")}
    counters = env.connector.health().counters
    assert counters["accepted"] == 2 and counters["duplicates"] == 3


async def test_store_unavailable_is_503_and_the_redelivery_is_stored(env: Env) -> None:
    payload = one(text("wamid.U1", "Banjir di RT 04"), text("wamid.U2", "Sudah tiga hari"))
    env.intake.fail_next = 1
    response = await env.hook.post(payload)
    assert response.status == 503
    assert response.headers["Retry-After"]
    response = await env.hook.post(payload)
    assert response.status == 200
    assert len(env.intake.messages) == 2


# -- message types -----------------------------------------------------------------------------


async def test_image_with_caption_is_downloaded_and_stored(env: Env) -> None:
    sha = env.graph.add_media("MEDIA1", PNG, "image/png")
    response = await env.hook.post(one(wa_message(
        "wamid.I1", CITIZEN, "image",
        image={"caption": "Foto jalan rusak", "mime_type": "image/png", "sha256": sha,
               "id": "MEDIA1"})))
    assert response.status == 200
    raw = env.stored("wamid.I1")
    assert raw is not None and raw.text == "Foto jalan rusak"
    [attachment] = raw.attachments
    assert attachment.state is AttachmentState.STORED
    assert attachment.sha256 == sha and attachment.content_type == "image/png"
    assert env.intake.attachments[sha] == PNG
    assert env.graph.bad_auth == 0


async def test_document_sha256_in_base64_form_is_accepted(env: Env) -> None:
    pdf = b"%PDF-1.4\n" + b"0" * 100
    env.graph.add_media("DOC1", pdf, "application/pdf")
    b64 = base64.b64encode(hashlib.sha256(pdf).digest()).decode()
    await env.hook.post(one(wa_message(
        "wamid.F1", CITIZEN, "document",
        document={"filename": "surat.pdf", "mime_type": "application/pdf", "sha256": b64,
                  "id": "DOC1"})))
    raw = env.stored("wamid.F1")
    assert raw is not None and raw.text == "[Dokumen: surat.pdf]"
    [attachment] = raw.attachments
    assert attachment.state is AttachmentState.STORED and attachment.name == "surat.pdf"


async def test_media_with_a_wrong_sha256_is_recorded_as_rejected(graph: EmulatedGraph) -> None:
    async with whatsapp(graph, media_retry_for_s=0.5) as env:
        env.graph.add_media("BAD1", JPEG, "image/jpeg")
        await env.hook.post(one(wa_message(
            "wamid.H1", CITIZEN, "image",
            image={"mime_type": "image/jpeg", "sha256": "a" * 64, "id": "BAD1"})))
        raw = env.stored("wamid.H1")
        assert raw is not None and raw.text == "[Foto tanpa keterangan]"
        assert raw.attachments[0].state is AttachmentState.REJECTED
        assert env.intake.attachments == {}


async def test_media_server_failing_twice_then_succeeding(env: Env) -> None:
    sha = env.graph.add_media("MEDIA2", JPEG, "image/jpeg")
    env.graph.fail("media_download", 503, times=2)
    response = await env.hook.post(one(wa_message(
        "wamid.M2", CITIZEN, "image",
        image={"mime_type": "image/jpeg", "sha256": sha, "id": "MEDIA2"})))
    assert response.status == 200
    raw = env.stored("wamid.M2")
    assert raw is not None
    assert raw.attachments[0].state is AttachmentState.STORED
    assert env.graph.calls["media_download"] == 3
    assert env.graph.calls["media_info"] == 3  # a fresh short-lived url for every attempt


async def test_slow_media_is_pending_then_arrives_as_a_follow_up(graph: EmulatedGraph) -> None:
    async with whatsapp(graph, media_inline_budget_s=0.0) as env:
        sha = env.graph.add_media("MEDIA3", JPEG, "image/jpeg")
        env.graph.fail("media_info", 500, times=1)
        env.graph.fail("media_download", 429, times=1, retry_after=0.3)
        started = time.monotonic()
        response = await env.hook.post(one(wa_message(
            "wamid.M3", CITIZEN, "audio",
            audio={"mime_type": "audio/ogg; codecs=opus", "sha256": sha, "id": "MEDIA3"})))
        assert response.status == 200
        assert time.monotonic() - started < 2.0
        parent = env.stored("wamid.M3")
        assert parent is not None and parent.text == "[Pesan suara]"
        [pending] = parent.attachments
        assert pending.state is AttachmentState.PENDING and pending.size == 0
        assert pending.storage_ref == "graph-media:MEDIA3" and pending.sha256 == sha

        async def follow_up() -> RawMessage | None:
            return env.stored("wamid.M3#media")

        raw = await wait_for(follow_up, within=20, what="the media follow-up")
        assert raw is not None
        parent_id = complaint_id("whatsapp", PNID, "wamid.M3")
        assert raw.thread_of == parent_id
        assert raw.reply_hints["thread_of"] == parent_id
        [stored] = raw.attachments
        assert stored.state is AttachmentState.STORED and stored.sha256 == sha
        assert tracking_code(parent_id) in raw.text
        # A redelivery of the original is a duplicate and starts no second follow-up.
        await env.hook.post(one(wa_message(
            "wamid.M3", CITIZEN, "audio",
            audio={"mime_type": "audio/ogg", "sha256": sha, "id": "MEDIA3"})))
        assert env.connector.health().counters["media_followups"] == 1


async def test_location_contacts_and_replies_become_text(env: Env) -> None:
    payload = one(
        wa_message("wamid.L1", CITIZEN, "location",
                   location={"latitude": -0.4948, "longitude": 117.1436,
                             "name": "SDN 003", "address": "Jl. Juanda, Samarinda"}),
        wa_message("wamid.C1", CITIZEN, "contacts", contacts=[{
            "name": {"formatted_name": "Pak RT", "first_name": "RT"},
            "phones": [{"phone": "+62 812-1111-2222", "type": "CELL"}]}]),
        wa_message("wamid.R1", CITIZEN, "interactive", interactive={
            "type": "button_reply", "button_reply": {"id": "yes", "title": "Ya, lanjutkan"}}),
        wa_message("wamid.R2", CITIZEN, "interactive", interactive={
            "type": "list_reply", "list_reply": {"id": "pupr", "title": "Dinas PUPR",
                                                 "description": "Jalan dan jembatan"}}),
        wa_message("wamid.R3", CITIZEN, "button", button={"payload": "P", "text": "Setuju"}),
    )
    async with whatsapp(env.graph, conversation_window_s=0) as separate:
        assert (await separate.hook.post(payload)).status == 200
        location = separate.stored("wamid.L1")
        assert location is not None and location.location is not None
        assert location.location.lat == -0.4948 and location.location.lon == 117.1436
        assert location.location.text == "SDN 003, Jl. Juanda, Samarinda"
        contacts = separate.stored("wamid.C1")
        assert contacts is not None and "Pak RT: +62 812-1111-2222" in contacts.text
        texts = [m.text for m in (separate.stored("wamid.R1"), separate.stored("wamid.R2"),
                                  separate.stored("wamid.R3")) if m is not None]
        assert texts == ["Ya, lanjutkan", "Dinas PUPR - Jalan dan jembatan", "Setuju"]


async def test_reactions_stickers_and_unsupported_types_are_recorded_only(env: Env) -> None:
    payload = one(
        wa_message("wamid.X1", CITIZEN, "reaction",
                   reaction={"message_id": "wamid.T1", "emoji": "👍"}),
        wa_message("wamid.X2", CITIZEN, "sticker",
                   sticker={"id": "S1", "mime_type": "image/webp", "sha256": "0" * 64}),
        wa_message("wamid.X3", CITIZEN, "unsupported",
                   errors=[{"code": 131051, "title": "Message type unknown"}]),
        wa_message("wamid.X4", CITIZEN, "poll_vote", poll_vote={}),
    )
    response = await env.hook.post(payload)
    assert response.status == 200
    assert env.intake.messages == {}
    counters = env.connector.health().counters
    assert counters["ignored_reaction"] == 1 and counters["ignored_sticker"] == 1
    assert counters["ignored_unsupported"] == 2


# -- the conversation window --------------------------------------------------------------------


async def test_location_and_photo_after_a_text_join_that_complaint(env: Env) -> None:
    sha = env.graph.add_media("MEDIA4", JPEG, "image/jpeg")
    await env.hook.post(one(text("wamid.W1", "Pohon tumbang menutup jalan")))
    await env.hook.post(one(wa_message("wamid.W2", CITIZEN, "location",
                                       location={"latitude": -6.2, "longitude": 106.8})))
    await env.hook.post(one(wa_message("wamid.W3", CITIZEN, "image",
                                       image={"mime_type": "image/jpeg", "sha256": sha,
                                              "id": "MEDIA4"})))
    await env.hook.post(one(wa_message("wamid.W4", OTHER, "location",
                                       location={"latitude": -6.3, "longitude": 106.9}),
                            sender=OTHER))
    parent = complaint_id("whatsapp", PNID, "wamid.W1")
    location, photo, other = (env.stored("wamid.W2"), env.stored("wamid.W3"),
                              env.stored("wamid.W4"))
    assert location is not None and location.thread_of == parent
    assert location.reply_hints["thread_of"] == parent
    assert photo is not None and photo.thread_of is not None  # the newest open complaint
    assert other is not None and other.thread_of is None
    # A second text is a new complaint, never joined.
    await env.hook.post(one(text("wamid.W5", "Satu lagi: lampu jalan mati")))
    second = env.stored("wamid.W5")
    assert second is not None and second.thread_of is None


# -- replies ------------------------------------------------------------------------------------


def target_of(raw: RawMessage) -> ReplyTarget:
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    return ReplyTarget(complaint_id=cid, tracking_code=tracking_code(cid), channel=raw.channel,
                       account=raw.account, native_id=raw.native_id,
                       address=raw.reply_hints.get("address"), hints=raw.reply_hints)


async def _accepted(env: Env, wamid: str, ts: float | None = None) -> RawMessage:
    await env.hook.post(one(text(wamid, "Jalan rusak parah", ts=ts)))
    raw = env.stored(wamid)
    assert raw is not None
    return raw


async def test_reply_inside_the_window_is_a_text_quoting_the_citizen(env: Env) -> None:
    raw = await _accepted(env, "wamid.P1")
    message_id = await env.connector.send_reply(target_of(raw), "Kode pelacakan: ABCDE-12345")
    assert message_id == "wamid.OUT1"
    [(node, body)] = env.graph.sent
    assert node == PNID
    assert body["messaging_product"] == "whatsapp" and body["to"] == CITIZEN
    assert body["type"] == "text" and body["text"]["body"] == "Kode pelacakan: ABCDE-12345"
    assert body["context"] == {"message_id": "wamid.P1"}


async def test_reply_after_429_then_success(env: Env) -> None:
    raw = await _accepted(env, "wamid.P2")
    env.graph.fail("send", 429, retry_after=7)
    with pytest.raises(ChannelUnavailable) as caught:
        await env.connector.send_reply(target_of(raw), "Terima kasih")
    assert caught.value.retry_after == 7.0
    assert await env.connector.send_reply(target_of(raw), "Terima kasih") == "wamid.OUT1"


async def test_reply_errors_are_typed(env: Env) -> None:
    raw = await _accepted(env, "wamid.P3")
    env.graph.fail("send", 503)
    with pytest.raises(ChannelUnavailable):
        await env.connector.send_reply(target_of(raw), "x")
    env.graph.fail("send", 400, code=131026)
    with pytest.raises(ChannelRejected):
        await env.connector.send_reply(target_of(raw), "x")
    env.graph.fail("send", 400, code=131056)  # pair rate limit: retriable
    with pytest.raises(ChannelUnavailable):
        await env.connector.send_reply(target_of(raw), "x")


async def test_reply_outside_the_window_needs_a_template(graph: EmulatedGraph) -> None:
    old = time.time() - 30 * 3600
    async with whatsapp(graph) as env:
        await env.hook.post(one(text("wamid.O1", "Jalan rusak", ts=old)))
        raw = env.stored("wamid.O1")
        assert raw is not None
        # This process saw the message just now, but the citizen wrote 30 hours ago.
        with pytest.raises(ChannelRejected, match="24-hour"):
            await env.connector.send_reply(target_of(raw), "Kode")
        assert env.graph.sent == []
    async with whatsapp(graph, template_name="lapor_kode", template_language="id") as env:
        await env.hook.post(one(text("wamid.O1", "Jalan rusak", ts=old)))
        raw = env.stored("wamid.O1")
        assert raw is not None
        await env.connector.send_reply(target_of(raw), "Kode")
        [(_, body)] = env.graph.sent
        assert body["type"] == "template"
        assert body["template"]["name"] == "lapor_kode"
        assert body["template"]["language"] == {"code": "id"}
        code = tracking_code(complaint_id("whatsapp", PNID, "wamid.O1"))
        assert body["template"]["components"][0]["parameters"] == [{"type": "text",
                                                                    "text": code}]


async def test_senders_remembered_are_bounded_and_the_complaint_keeps_its_time(
        graph: EmulatedGraph, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process remembers only the newest senders (a peak day brings millions); one pushed
    out is judged by the time kept with the complaint, here 30 hours ago: a template."""
    monkeypatch.setattr(meta_webhook, "LAST_INBOUND_KEPT", 2)
    old = time.time() - 30 * 3600
    async with whatsapp(graph, template_name="lapor_kode") as env:
        await env.hook.post(one(text("wamid.K1", "Jalan rusak", ts=old)))
        first = env.stored("wamid.K1")
        assert first is not None
        # The citizen wrote again just now: the window is open for the old complaint too.
        await env.hook.post(one(text("wamid.K2", "Masih rusak")))
        await env.connector.send_reply(target_of(first), "Kode")
        for n, sender in enumerate(("6281111111111", "6282222222222")):
            await env.hook.post(one(text(f"wamid.K{3 + n}", "Lampu mati", sender=sender),
                                    sender=sender))
        await env.connector.send_reply(target_of(first), "Kode")
        assert [body["type"] for _, body in env.graph.sent] == ["text", "template"]


async def test_graph_131047_falls_back_to_the_template(graph: EmulatedGraph) -> None:
    async with whatsapp(graph, template_name="lapor_kode") as env:
        raw = await _accepted(env, "wamid.O2")
        env.graph.outside_window.add(CITIZEN)
        assert await env.connector.send_reply(target_of(raw), "Kode") == "wamid.OUT1"
        assert [body["type"] for _, body in env.graph.sent] == ["template"]


async def test_follow_ups_are_not_acknowledged_separately(env: Env) -> None:
    await _accepted(env, "wamid.F0")
    await env.hook.post(one(wa_message("wamid.F2", CITIZEN, "location",
                                       location={"latitude": -6.2, "longitude": 106.8})))
    raw = env.stored("wamid.F2")
    assert raw is not None and raw.thread_of is not None
    assert await env.connector.send_reply(target_of(raw), "Kode") is None
    assert env.graph.sent == []


# -- STATUS KODE --------------------------------------------------------------------------------


async def test_status_query_is_answered_not_stored(env: Env) -> None:
    raw = await _accepted(env, "wamid.Q0")
    code = tracking_code(complaint_id("whatsapp", PNID, raw.native_id))
    query = one(text("wamid.Q1", f"status {code.lower()}"))
    assert (await env.hook.post(query)).status == 200

    async def answered() -> bool:
        return len(env.graph.sent) == 1

    await wait_for(answered, within=10, what="the status answer")
    [(node, body)] = env.graph.sent
    assert node == PNID and body["to"] == CITIZEN
    assert body["text"]["body"].startswith(f"Laporan {code}: Diterima")
    assert body["context"] == {"message_id": "wamid.Q1"}
    assert len(env.intake.messages) == 1  # the query is no complaint
    assert (await env.hook.post(query)).status == 200  # a redelivery is not answered twice
    await env.hook.post(one(text("wamid.Q2", "STATUS ZZZZZ-ZZZZZ")))
    await wait_for(lambda: _sent_count(env, 2), within=10, what="the unknown-code answer")
    assert "tidak ditemukan" in env.graph.sent[1][1]["text"]["body"]
    assert env.connector.health().counters["status_queries"] == 3


async def _sent_count(env: Env, n: int) -> bool:
    return len(env.graph.sent) >= n


async def test_stop_cancels_a_download_that_keeps_failing(graph: EmulatedGraph) -> None:
    async with whatsapp(graph, media_inline_budget_s=0.2) as env:
        env.graph.add_media("MEDIA9", JPEG, "image/jpeg")
        env.graph.fail("media_info", 503, times=1000)
        response = await env.hook.post(one(wa_message(
            "wamid.Z1", CITIZEN, "image", image={"mime_type": "image/jpeg", "id": "MEDIA9"})))
        assert response.status == 200
        raw = env.stored("wamid.Z1")
        assert raw is not None and raw.attachments[0].state is AttachmentState.PENDING
        started = time.monotonic()
    assert time.monotonic() - started < 5  # stop() did not wait for the retries
    assert env.stored("wamid.Z1#media") is None


async def test_pending_media_survives_a_restart(graph: EmulatedGraph) -> None:
    """The download that kept failing when the connector stopped (a restart, a crash) is
    recorded durably and resumed by the next start: the attachment arrives as a follow-up."""
    intake = FakeIntake()
    async with whatsapp(graph, intake, media_inline_budget_s=0.2) as env:
        env.graph.add_media("MEDIA7", JPEG, "image/jpeg")
        env.graph.fail("media_info", 503, times=1000)
        response = await env.hook.post(one(wa_message(
            "wamid.R7", CITIZEN, "image", image={"mime_type": "image/jpeg", "id": "MEDIA7"})))
        assert response.status == 200
        assert list(intake.cursors) == [f"media:whatsapp:whatsapp:{PNID}:wamid.R7#0"]
    assert env.stored("wamid.R7#media") is None  # stopped before the download succeeded
    env.graph.failures.clear()
    async with whatsapp(graph, intake) as again:
        async def follow_up() -> RawMessage | None:
            return again.stored("wamid.R7#media")

        raw = await wait_for(follow_up, within=20, what="the resumed media follow-up")
        assert raw.attachments[0].state is AttachmentState.STORED
        assert raw.thread_of == complaint_id("whatsapp", PNID, "wamid.R7")
        assert again.connector.health().counters["media_resumed"] == 1

        async def forgotten() -> bool:
            return not intake.cursors

        await wait_for(forgotten, within=10, what="the pending record deleted")
