"""WhatsApp through the whole gateway: signed webhook → outbox → Kafka → central store →
receipt → the tracking code sent back to the citizen through the (emulated) Graph API, and
the delivery status Meta reports recorded against that reply."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.emulators.graph import (
    EmulatedGraph,
    encode,
    signature,
    wa_change,
    wa_message,
    wa_payload,
    wa_status,
)
from tests.integration.support import GatewayProcess, PgDatabase, wait_for

SECRET = "app-secret-e2e"
VERIFY = "verify-e2e"
PNID = "106540352242922"
CITIZEN = "6281234567890"


@pytest.fixture
async def graph() -> AsyncIterator[EmulatedGraph]:
    async with EmulatedGraph() as emulator:
        yield emulator


async def _post(session: aiohttp.ClientSession, url: str, payload: dict[str, object]) -> int:
    body = encode(payload)
    async with session.post(f"{url}/webhooks/whatsapp", data=body, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature(SECRET, body),
    }) as response:
        return response.status


async def test_whatsapp_message_is_stored_and_answered_with_its_code(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str], graph: EmulatedGraph
) -> None:
    env = {**kafka_env, "LAPOR_STORE__URL": pg.url,
           "LAPOR_CONNECTORS__WHATSAPP__ENABLED": "true",
           "LAPOR_CONNECTORS__WHATSAPP__VERIFY_TOKEN": VERIFY,
           "LAPOR_CONNECTORS__WHATSAPP__APP_SECRET": SECRET,
           "LAPOR_CONNECTORS__WHATSAPP__ACCESS_TOKEN": graph.token,
           "LAPOR_CONNECTORS__WHATSAPP__PHONE_NUMBER_ID": PNID,
           "LAPOR_CONNECTORS__WHATSAPP__API_BASE": graph.api_base}
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    message = wa_message("wamid.E2E1", CITIZEN, text={
        "body": "Lampu jalan di Jl. Juanda padam sejak tiga hari, gelap dan rawan."})
    payload = wa_payload([wa_change(PNID, messages=[message],
                                    contacts=[(CITIZEN, "Sheena")])])
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/webhooks/whatsapp", params={
                "hub.mode": "subscribe", "hub.verify_token": VERIFY,
                "hub.challenge": "1158201444"}) as r:
                assert (r.status, await r.text()) == (200, "1158201444")
            assert await _post(session, gateway.url, payload) == 200
            assert await _post(session, gateway.url, payload) == 200  # Meta redelivers

            async def stored() -> list[object]:
                return list(await pg.fetch("SELECT tracking_code, payload FROM complaints"))

            rows = await wait_for(stored, within=30, what="the WhatsApp complaint stored")
            assert len(rows) == 1
            code, data = rows[0][0], json.loads(str(rows[0][1]))  # type: ignore[index]
            assert data["channel"] == "whatsapp" and data["native_id"] == "wamid.E2E1"
            assert data["reporter"]["phone"] == "+" + CITIZEN

            async def answered() -> list[tuple[str, dict[str, object]]]:
                return list(graph.sent)

            [(_, sent)] = await wait_for(answered, within=30, what="the acknowledgement sent")
            assert sent["to"] == CITIZEN and code in str(sent["text"])

            # Meta reports the delivery of our answer; the reply's state records it.
            reply_id = "wamid.OUT1"
            assert await _post(session, gateway.url, wa_payload([wa_change(
                PNID, statuses=[wa_status(reply_id, "delivered", CITIZEN)])])) == 200

            async def delivered() -> bool:
                rows = await pg.fetch("SELECT state, delivery_state FROM replies")
                return [tuple(r) for r in rows] == [("sent", "delivered")]

            await wait_for(delivered, within=20, what="the delivery state recorded")
        assert (await pg.fetch("SELECT count(*) FROM complaints"))[0][0] == 1
    finally:
        assert gateway.terminate() == 0, gateway.log()
