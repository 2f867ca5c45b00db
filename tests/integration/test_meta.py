"""The Messenger/Instagram connector over real HTTP against the Graph emulator on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config.whatsapp import MetaSettings
from connectors.base import ReplyTarget
from connectors.meta import MetaConnector
from connectors.testing import FakeIntake
from errors import ChannelRejected, ChannelUnavailable
from normalizer.ids import complaint_id, tracking_code
from normalizer.raw import RawMessage
from normalizer.schema import AttachmentState
from tests.emulators.graph import (
    TOKEN,
    EmulatedGraph,
    WebhookClient,
    messaging,
    meta_payload,
    serve,
)
from tests.integration.support import PNG, wait_for

SECRET = "meta-app-secret"
VERIFY = "meta-verify"
PAGE = "112233445566"
IG = "17841400000000000"
PSID = "6543210987654321"
IGSID = "998877665544"


@dataclass
class Env:
    connector: MetaConnector
    intake: FakeIntake
    client: TestClient[Any, Any]
    hook: WebhookClient
    graph: EmulatedGraph

    def stored(self, channel: str, account: str, mid: str) -> RawMessage | None:
        return self.intake.messages.get(complaint_id(channel, account, mid))


@pytest.fixture
async def graph() -> AsyncIterator[EmulatedGraph]:
    async with EmulatedGraph() as emulator:
        yield emulator


@asynccontextmanager
async def meta(graph: EmulatedGraph, **overrides: Any) -> AsyncIterator[Env]:
    settings = MetaSettings(enabled=True, verify_token=VERIFY, app_secret=SECRET,
                            page_access_token=TOKEN, api_base=graph.api_base, **overrides)
    connector = MetaConnector(settings, public_url=None)
    intake = FakeIntake()
    async with serve(connector, intake) as client:
        yield Env(connector, intake, client, WebhookClient(client, "/webhooks/meta", SECRET),
                  graph)


@pytest.fixture
async def env(graph: EmulatedGraph) -> AsyncIterator[Env]:
    async with meta(graph) as e:
        yield e


def page(*events: dict[str, Any]) -> dict[str, Any]:
    return meta_payload("page", (PAGE, list(events)))


def message(mid: str, text: str | None = None, *, sender: str = PSID, recipient: str = PAGE,
            ts_ms: int | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"mid": mid, **extra}
    if text is not None:
        body["text"] = text
    return messaging(sender, recipient, ts_ms=ts_ms, message=body)


async def test_handshake(env: Env) -> None:
    ok = await env.client.get("/webhooks/meta", params={
        "hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "CHALLENGE_ACCEPTED"})
    assert ok.status == 200 and await ok.text() == "CHALLENGE_ACCEPTED"
    bad = await env.client.get("/webhooks/meta", params={
        "hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "x"})
    assert bad.status == 403


async def test_messenger_text(env: Env) -> None:
    ts_ms = int(time.time() * 1000) - 5000
    payload = page(message("m_AAA", "Lampu jalan di Jl. Merdeka padam — mohon dicek", ts_ms=ts_ms))
    response = await env.hook.post(payload)
    assert response.status == 200
    raw = env.stored("messenger", PAGE, "m_AAA")
    assert raw is not None
    assert raw.text == "Lampu jalan di Jl. Merdeka padam — mohon dicek"
    assert raw.sender.channel_user_id == PSID and raw.sender.phone is None
    assert raw.sent_at is not None and int(raw.sent_at.timestamp()) == ts_ms // 1000
    assert raw.connector == "meta"
    assert raw.reply_hints["address"] == PSID and raw.reply_hints["platform"] == "messenger"


async def test_instagram_text_and_batched_entries(env: Env) -> None:
    payload = meta_payload("instagram",
                           (IG, [message("ig_m1", "Trotoar rusak", sender=IGSID, recipient=IG),
                                 message("ig_m2", "Di depan pasar", sender=IGSID, recipient=IG)]),
                           (IG, [message("ig_m3", "Tolong", sender="555", recipient=IG)]))
    response = await env.hook.post(payload)
    assert response.status == 200
    assert {raw.native_id for raw in env.intake.messages.values()} == {"ig_m1", "ig_m2", "ig_m3"}
    assert all(raw.channel == "instagram" and raw.account == IG
               for raw in env.intake.messages.values())


async def test_bad_signature_is_403(env: Env) -> None:
    response = await env.hook.post(page(message("m_S", "x")), sign_with="wrong")
    assert response.status == 403
    assert env.intake.messages == {}


async def test_echoes_reactions_reads_and_deliveries_are_not_complaints(env: Env) -> None:
    payload = page(
        messaging(PAGE, PSID, message={"mid": "m_echo", "text": "balasan kami",
                                       "is_echo": True}),
        messaging(PSID, PAGE, reaction={"mid": "m_AAA", "action": "react", "emoji": "❤"}),
        messaging(PSID, PAGE, read={"watermark": 1458668856253}),
        messaging(PSID, PAGE, delivery={"mids": ["m_out1"], "watermark": 1458668856253}),
        messaging(PSID, PAGE, message={"mid": "m_del", "is_deleted": True}),
    )
    response = await env.hook.post(payload)
    assert response.status == 200
    assert env.intake.messages == {}
    state = env.connector.deliveries.get("m_out1")
    assert state is not None and state.status == "delivered"
    counters = env.connector.health().counters
    assert counters["ignored_echo"] == 1 and counters["ignored_reaction"] == 1


async def test_duplicate_mid_is_one_complaint(env: Env) -> None:
    payload = page(message("m_DUP", "Sampah belum diangkut"))
    for _ in range(3):
        assert (await env.hook.post(payload)).status == 200
    assert len(env.intake.messages) == 1


async def test_image_attachment_and_location_join_the_text(env: Env) -> None:
    url = env.graph.add_cdn("photo1", PNG)
    env.graph.fail("cdn", 502, times=2)
    await env.hook.post(page(message("m_T", "Jalan amblas")))
    await env.hook.post(page(message("m_I", attachments=[
        {"type": "image", "payload": {"url": url}}])))
    await env.hook.post(page(message("m_L", attachments=[
        {"type": "location", "title": "Pasar Baru",
         "payload": {"coordinates": {"lat": -6.17, "long": 106.83}}}])))
    parent = complaint_id("messenger", PAGE, "m_T")
    image = env.stored("messenger", PAGE, "m_I")
    assert image is not None and image.text == "[Foto tanpa keterangan]"
    assert image.thread_of == parent
    [attachment] = image.attachments
    assert attachment.state is AttachmentState.STORED and attachment.content_type == "image/png"
    location = env.stored("messenger", PAGE, "m_L")
    assert location is not None and location.location is not None
    assert location.location.lat == -6.17 and location.location.text == "Pasar Baru"
    assert location.thread_of is not None


async def test_slow_attachment_becomes_a_follow_up(graph: EmulatedGraph) -> None:
    async with meta(graph, media_inline_budget_s=0.0) as env:
        url = env.graph.add_cdn("photo2", PNG)
        env.graph.fail("cdn", 500, times=2)
        await env.hook.post(page(message("m_P", "Lihat foto", attachments=[
            {"type": "image", "payload": {"url": url}}])))
        parent = env.stored("messenger", PAGE, "m_P")
        assert parent is not None and parent.attachments[0].state is AttachmentState.PENDING

        async def follow_up() -> RawMessage | None:
            return env.stored("messenger", PAGE, "m_P#media")

        raw = await wait_for(follow_up, within=20, what="the attachment follow-up")
        assert raw is not None
        assert raw.thread_of == complaint_id("messenger", PAGE, "m_P")
        assert raw.attachments[0].state is AttachmentState.STORED


def target_of(raw: RawMessage) -> ReplyTarget:
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    return ReplyTarget(complaint_id=cid, tracking_code=tracking_code(cid), channel=raw.channel,
                       account=raw.account, native_id=raw.native_id,
                       address=raw.reply_hints.get("address"), hints=raw.reply_hints)


async def test_reply_with_429_then_success(env: Env) -> None:
    await env.hook.post(page(message("m_R", "Halo")))
    raw = env.stored("messenger", PAGE, "m_R")
    assert raw is not None
    env.graph.fail("send", 429, retry_after=3)
    with pytest.raises(ChannelUnavailable) as caught:
        await env.connector.send_reply(target_of(raw), "Kode pelacakan: X")
    assert caught.value.retry_after == 3.0
    assert await env.connector.send_reply(target_of(raw), "Kode pelacakan: X") == "m_out1"
    [(node, body)] = env.graph.sent
    assert node == "me"
    assert body == {"recipient": {"id": PSID}, "message": {"text": "Kode pelacakan: X"},
                    "messaging_type": "RESPONSE"}


async def test_instagram_reply_goes_through_me_messages(env: Env) -> None:
    await env.hook.post(meta_payload("instagram", (IG, [message("ig_r", "Halo", sender=IGSID,
                                                                recipient=IG)])))
    raw = env.stored("instagram", IG, "ig_r")
    assert raw is not None
    assert await env.connector.send_reply(target_of(raw), "Kode") == "m_out1"
    assert env.graph.sent[0][1]["recipient"] == {"id": IGSID}


async def test_reply_outside_the_window(graph: EmulatedGraph) -> None:
    old_ms = int((time.time() - 30 * 3600) * 1000)
    async with meta(graph) as env:
        await env.hook.post(page(message("m_O", "Halo", ts_ms=old_ms)))
        raw = env.stored("messenger", PAGE, "m_O")
        assert raw is not None
        with pytest.raises(ChannelRejected, match="24-hour"):
            await env.connector.send_reply(target_of(raw), "Kode")
    async with meta(graph, human_agent_tag=True) as env:
        await env.hook.post(page(message("m_O", "Halo", ts_ms=old_ms)))
        raw = env.stored("messenger", PAGE, "m_O")
        assert raw is not None
        await env.connector.send_reply(target_of(raw), "Kode")
        body = env.graph.sent[-1][1]
        assert body["messaging_type"] == "MESSAGE_TAG" and body["tag"] == "HUMAN_AGENT"
    async with meta(graph) as env:
        await env.hook.post(page(message("m_W", "Halo")))
        raw = env.stored("messenger", PAGE, "m_W")
        assert raw is not None
        env.graph.outside_window.add(PSID)
        with pytest.raises(ChannelRejected, match="window"):
            await env.connector.send_reply(target_of(raw), "Kode")


async def test_status_query_on_messenger(env: Env) -> None:
    await env.hook.post(page(message("m_Q0", "Jalan rusak")))
    code = tracking_code(complaint_id("messenger", PAGE, "m_Q0"))
    await env.hook.post(page(message("m_Q1", f"STATUS {code}")))

    async def answered() -> bool:
        return len(env.graph.sent) == 1

    await wait_for(answered, within=10, what="the status answer")
    body = env.graph.sent[0][1]
    assert body["recipient"] == {"id": PSID} and body["messaging_type"] == "RESPONSE"
    assert body["message"]["text"].startswith(f"Laporan {code}:")
    assert len(env.intake.messages) == 1
