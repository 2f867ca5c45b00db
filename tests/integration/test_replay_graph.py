"""Dead-letter replay of the WhatsApp and Messenger webhooks (Graph emulator on loopback), and
media that never downloads ending as a replayable dead letter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.meta_webhook import MEDIA_REF, GraphWebhookConnector, Parsed
from connectors.testing import FakeIntake
from errors import ValidationFailed
from forwarder.db import open_database
from forwarder.outbox import Outbox
from gateway.ops import OpsService
from gateway.ops_store import OpsStore, Throughput
from normalizer.ids import complaint_id
from normalizer.raw import RawMessage
from normalizer.schema import AttachmentState
from tests.emulators.graph import EmulatedGraph, WebhookClient, wa_message
from tests.integration.support import wait_for
from tests.integration.test_meta import PAGE, meta, page
from tests.integration.test_meta import message as page_message
from tests.integration.test_whatsapp import CITIZEN, JPEG, PNID, one, text, whatsapp


@pytest.fixture
async def graph() -> Any:
    async with EmulatedGraph() as emulator:
        yield emulator


async def dead_letter_of_a_parser_bug(connector: GraphWebhookConnector, hook: WebhookClient,
                                      intake: FakeIntake, payload: dict[str, Any]) -> bytes:
    """Post ``payload`` while the connector's parser has a bug (everything malformed); the
    signed body it kept as a dead letter. The "fix" is the original parser, restored."""
    original = connector.parse

    def parse(payload: dict[str, Any]) -> Parsed:
        return Parsed(malformed=["a parser bug"])

    connector.parse = parse  # type: ignore[method-assign]
    try:
        response = await hook.post(payload)
    finally:
        connector.parse = original  # type: ignore[method-assign]
    assert response.status == 200
    assert intake.messages == {}
    [(_, _, reason, kept)] = intake.dead_letters
    assert reason == "a parser bug"
    return kept


async def test_whatsapp_replay_after_a_fix_accepts_once(graph: EmulatedGraph) -> None:
    async with whatsapp(graph) as env:
        kept = await dead_letter_of_a_parser_bug(
            env.connector, env.hook, env.intake, one(text("wamid.R1", "Lampu jalan mati")))
        first = await env.connector.replay(kept, "application/json")
        assert first is not None and not first.duplicate
        assert first.complaint_id == complaint_id("whatsapp", PNID, "wamid.R1")
        raw = env.stored("wamid.R1")
        assert raw is not None and raw.text == "Lampu jalan mati" and raw.raw_payload == kept
        second = await env.connector.replay(kept, "application/json")
        assert second is not None and second.duplicate
        assert second.tracking_code == first.tracking_code
        assert len(env.intake.messages) == 1


async def test_whatsapp_replay_of_what_is_still_broken_fails_with_the_reason(
        graph: EmulatedGraph) -> None:
    async with whatsapp(graph) as env:
        with pytest.raises(ValidationFailed, match="not valid JSON"):
            await env.connector.replay(b'{"object": "whatsapp_business_account", "entry": [',
                                       "application/json")
        with pytest.raises(ValidationFailed, match="not a whatsapp webhook object"):
            await env.connector.replay(b'{"object": "page", "entry": []}', "application/json")
        # One good message beside a malformed one: the good one is (again) accepted, the
        # replay still fails for the malformed one and says why.
        body = one(text("wamid.R2", "Sampah menumpuk"), {"type": "text", "from": CITIZEN})
        response = await env.hook.post(body)
        assert response.status == 200
        [(_, _, reason, kept)] = env.intake.dead_letters
        assert "without id" in reason
        with pytest.raises(ValidationFailed, match="message without id or from"):
            await env.connector.replay(kept, "application/json")
        assert list(env.intake.messages) == [complaint_id("whatsapp", PNID, "wamid.R2")]


async def test_messenger_replay_after_a_fix_accepts_once(graph: EmulatedGraph) -> None:
    async with meta(graph) as env:
        kept = await dead_letter_of_a_parser_bug(
            env.connector, env.hook, env.intake, page(page_message("m_R1", "Jembatan retak")))
        first = await env.connector.replay(kept, "application/json")
        assert first is not None and not first.duplicate
        assert env.stored("messenger", PAGE, "m_R1") is not None
        second = await env.connector.replay(kept, "application/json")
        assert second is not None and second.duplicate
        assert len(env.intake.messages) == 1


async def test_media_that_never_downloads_is_a_dead_letter_that_replays_once(
        graph: EmulatedGraph) -> None:
    async with whatsapp(graph, media_inline_budget_s=0.0, media_retry_for_s=0.5) as env:
        sha = env.graph.add_media("NEVER1", JPEG, "image/jpeg")
        env.graph.fail("media_info", 503, times=1000)
        response = await env.hook.post(one(wa_message(
            "wamid.N1", CITIZEN, "image",
            image={"mime_type": "image/jpeg", "sha256": sha, "id": "NEVER1"})))
        assert response.status == 200

        async def kept() -> list[tuple[str, str, str, bytes]]:
            return env.intake.dead_letters

        [(channel, account, reason, reference)] = await wait_for(
            kept, within=20, what="the media dead letter")
        assert (channel, account) == ("whatsapp", PNID)
        assert reason.startswith("media never downloaded: ChannelUnavailable")
        assert b"NEVER1" in reference and b"wamid.N1" in reference
        failed = env.stored("wamid.N1#media")
        assert failed is not None and failed.attachments[0].state is AttachmentState.REJECTED
        # Still failing: the replay says so and changes nothing.
        with pytest.raises(ValidationFailed, match="still not downloadable"):
            await env.connector.replay(reference, MEDIA_REF)
        env.graph.failures.clear()
        first = await env.connector.replay(reference, MEDIA_REF)
        assert first is not None and not first.duplicate
        replayed: RawMessage | None = env.stored("wamid.N1#media-replay")
        assert replayed is not None
        assert replayed.thread_of == complaint_id("whatsapp", PNID, "wamid.N1")
        [attachment] = replayed.attachments
        assert attachment.state is AttachmentState.STORED and attachment.sha256 == sha
        second = await env.connector.replay(reference, MEDIA_REF)
        assert second is not None and second.duplicate
        assert len(env.intake.messages) == 3  # the complaint, the failed and the replayed media


async def test_media_refused_at_once_is_a_dead_letter_too_and_redelivery_keeps_one(
        graph: EmulatedGraph) -> None:
    async with whatsapp(graph) as env:
        sha = env.graph.add_media("GONE1", JPEG, "image/jpeg")
        env.graph.fail("media_info", 400, times=1000)  # e.g. an expired media id: no retry
        body = one(wa_message("wamid.G1", CITIZEN, "image",
                              image={"mime_type": "image/jpeg", "sha256": sha, "id": "GONE1"}))
        assert (await env.hook.post(body)).status == 200
        parent = env.stored("wamid.G1")
        assert parent is not None and parent.attachments[0].state is AttachmentState.REJECTED
        assert (await env.hook.post(body)).status == 200  # Meta redelivers
        letters = env.intake.dead_letters
        assert len(letters) == 2 and letters[0] == letters[1]  # same bytes: one dead letter
        [(_, _, reason, reference)] = set(letters)
        assert reason.startswith("media never downloaded: GraphRejected")
        env.graph.failures.clear()
        result = await env.connector.replay(reference, MEDIA_REF)
        assert result is not None and not result.duplicate
        replayed = env.stored("wamid.G1#media-replay")
        assert replayed is not None and replayed.attachments[0].sha256 == sha
        assert replayed.thread_of == complaint_id("whatsapp", PNID, "wamid.G1")


async def test_a_meta_dead_letter_kept_under_the_connector_name_replays_through_ops(
        graph: EmulatedGraph, tmp_path: Path) -> None:
    """An unparseable Messenger body is kept on channel "meta" (no channel known yet): the
    ops replay finds the connector by that name, records the outcome, and replays once."""
    db = await open_database(f"sqlite:///{tmp_path / 'ops.db'}", pool_size=2)
    try:
        async with Outbox(db) as outbox, meta(graph) as env:

            async def nothing(*_: Any) -> Any:
                return {}

            ops = OpsService(connectors=[env.connector], outbox=outbox, store=OpsStore(db),
                             throughput=Throughput(), forwarder_state=nothing,
                             republish=nothing)
            kept = await dead_letter_of_a_parser_bug(
                env.connector, env.hook, env.intake, page(page_message("m_O1", "Got mampet")))
            letter = await outbox.dead_letter("meta", "", "a parser bug", kept,
                                              "application/json")
            first = await ops.replay(letter)
            assert first is not None and first["replay_result"].startswith("accepted "), first
            again = await ops.replay(letter)
            assert again is not None and again["replay_result"].startswith("duplicate ")
            assert again["replay_count"] == 2 and len(env.intake.messages) == 1
    finally:
        await db.close()
