"""Status changes reach the citizen through the whole system, exactly once.

One gateway (``run``: gateway and sink roles) on PostgreSQL and the real broker, with the
Telegram, WhatsApp and SMS emulators. A complaint on each channel; status events published on
``complaints.status.v1`` (one redelivered, one invalid); the agency API; a send failing while
the gateway is killed with SIGKILL and restarted with the event redelivered; ``/batal``. Each
citizen hears of each change once, on their channel, and nothing confidential leaks.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.emulators.graph import EmulatedGraph, wa_change, wa_message, wa_payload
from tests.emulators.sms import EmulatedSmsProvider
from tests.emulators.telegram import TelegramEmulator
from tests.integration.support import GatewayProcess, PgDatabase, wait_for
from tests.integration.test_sms_end_to_end import SECRET as SMS_SECRET
from tests.integration.test_sms_end_to_end import _gammu_run
from tests.integration.test_whatsapp_end_to_end import PNID, VERIFY, _post
from tests.integration.test_whatsapp_end_to_end import SECRET as WA_SECRET

WA_CITIZEN = "6281299990000"
AGENCY = "Dinas PU Kota Samarinda"
AGENCY_KEY = "agency-key-" + uuid.uuid4().hex
OTHER_KEY = "other-agency-key-" + uuid.uuid4().hex


@pytest.fixture
async def graph() -> AsyncIterator[EmulatedGraph]:
    async with EmulatedGraph() as emulator:
        yield emulator


@pytest.fixture
async def sms() -> AsyncIterator[EmulatedSmsProvider]:
    emulator = EmulatedSmsProvider(generic_secret=SMS_SECRET)
    await emulator.start()
    yield emulator
    await emulator.stop()


def _event(event_id: str, complaint_id: str, status: str, **extra: Any) -> bytes:
    return json.dumps({"event_id": event_id, "complaint_id": complaint_id, "status": status,
                       "at": datetime.now(UTC).isoformat(), "actor": "admin:sari",
                       **extra}).encode()


class Channels:
    """What each emulator delivered to its citizen, as plain texts."""

    def __init__(self, bot_api: TelegramEmulator, graph: EmulatedGraph,
                 sms: EmulatedSmsProvider) -> None:
        self._bot_api, self._graph, self._sms = bot_api, graph, sms

    def texts(self, channel: str) -> list[str]:
        if channel == "telegram":
            return [str(m["text"]) for m in self._bot_api.sent]
        if channel == "whatsapp":
            return [str(body.get("text", {}).get("body", body.get("template")))
                    for _, body in self._graph.sent]
        return [m.text for m in self._sms.sent]

    def count(self, channel: str, words: str) -> int:
        return sum(words in text for text in self.texts(channel))


async def test_status_events_reach_every_channel_exactly_once_across_a_kill9(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str], bot_api: TelegramEmulator,
    graph: EmulatedGraph, sms: EmulatedSmsProvider,
) -> None:
    prefix = kafka_env["LAPOR_KAFKA__TOPIC_PREFIX"]
    env = {**kafka_env, "LAPOR_STORE__URL": pg.url,
           "LAPOR_CONNECTORS__TELEGRAM__ENABLED": "true",
           "LAPOR_CONNECTORS__TELEGRAM__MODE": "polling",
           "LAPOR_CONNECTORS__TELEGRAM__TOKEN": bot_api.token,
           "LAPOR_CONNECTORS__TELEGRAM__API_BASE": bot_api.url,
           "LAPOR_CONNECTORS__TELEGRAM__POLL_TIMEOUT_S": "1",
           "LAPOR_CONNECTORS__WHATSAPP__ENABLED": "true",
           "LAPOR_CONNECTORS__WHATSAPP__VERIFY_TOKEN": VERIFY,
           "LAPOR_CONNECTORS__WHATSAPP__APP_SECRET": WA_SECRET,
           "LAPOR_CONNECTORS__WHATSAPP__ACCESS_TOKEN": graph.token,
           "LAPOR_CONNECTORS__WHATSAPP__PHONE_NUMBER_ID": PNID,
           "LAPOR_CONNECTORS__WHATSAPP__API_BASE": graph.api_base,
           "LAPOR_CONNECTORS__SMS__ENABLED": "true",
           "LAPOR_CONNECTORS__SMS__PROVIDER": "gammu",
           "LAPOR_CONNECTORS__SMS__ACCOUNT": "1708",
           "LAPOR_CONNECTORS__SMS__GENERIC_HMAC_SECRET": SMS_SECRET,
           "LAPOR_CONNECTORS__SMS__SEND_API_BASE": sms.url,
           "LAPOR_CONNECTORS__API__AGENCY_KEYS": json.dumps(
               {AGENCY: AGENCY_KEY, "Dinas Kesehatan": OTHER_KEY})}
    gateway = GatewayProcess(tmp_path / "gw", env)
    gateway.env["LAPOR_CONNECTORS__SMS__GATEWAY_URL"] = gateway.url
    await gateway.start()
    seen = Channels(bot_api, graph, sms)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_env["LAPOR_KAFKA__BOOTSTRAP_SERVERS"])
    await producer.start()

    async def publish(key: str, value: bytes) -> None:
        await producer.send_and_wait(f"{prefix}complaints.status.v1", value, key=key.encode())

    try:
        # ---- one complaint on each channel, each acknowledged with its code
        bot_api.push_message("Lampu lalu lintas simpang Air Hitam mati sejak kemarin sore.")
        async with aiohttp.ClientSession() as session:
            assert await _post(session, gateway.url, wa_payload([wa_change(PNID, messages=[
                wa_message("wamid.LIFE1", WA_CITIZEN, text={
                    "body": "Saluran air di Jl. Pemuda tersumbat, banjir setiap hujan."})],
                contacts=[(WA_CITIZEN, "Rina")])])) == 200
        run = await asyncio.to_thread(_gammu_run, gateway.env,
                                      "Jembatan kayu di Loa Janan rapuh, berbahaya bagi anak.")
        assert run.returncode == 0, run.stderr

        async def stored() -> dict[str, tuple[str, str]]:
            rows = await pg.fetch("SELECT channel, id, tracking_code FROM complaints")
            found = {r[0]: (r[1], r[2]) for r in rows}
            return found if len(found) == 3 else {}

        complaints = await wait_for(stored, within=60, what="three complaints stored")

        async def acknowledged() -> bool:
            return all(seen.count(ch, code) == 1 for ch, (_, code) in complaints.items())

        await wait_for(acknowledged, within=60, what="three acknowledgements")

        # ---- verified + forwarded for each; one event delivered twice; one invalid event
        await publish("x", b'{"event_id": "broken", "status": "verified"}')
        for channel, (cid, _) in complaints.items():
            await publish(cid, _event(f"v-{channel}", cid, "verified"))
            await publish(cid, _event(f"f-{channel}", cid, "forwarded", agency=AGENCY))
            await publish(cid, _event(f"v-{channel}", cid, "verified"))  # redelivered

        async def forwarded() -> bool:
            return all(seen.count(ch, "diteruskan ke " + AGENCY) == 1
                       and seen.count(ch, "telah diverifikasi") == 1 for ch in complaints)

        await wait_for(forwarded, within=60, what="verified and forwarded notices")

        # ---- the agency API: 401 / 403 / 202, then the answer reaches WhatsApp once
        wa_id, wa_code = complaints["whatsapp"]
        url = f"{gateway.url}/api/v1/complaints/{wa_code}/status"
        body = {"status": "answered", "event_id": "ans-1",
                "answer": "Saluran sudah dibersihkan oleh tim UPTD pada Senin pagi."}
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=body) as r:
                assert r.status == 401
            async with session.post(url, json=body,
                                    headers={"Authorization": f"Bearer {OTHER_KEY}"}) as r:
                assert r.status == 403
            for _ in range(2):  # a retried POST with the same event_id is one change
                async with session.post(url, json=body,
                                        headers={"Authorization": f"Bearer {AGENCY_KEY}"}) as r:
                    assert r.status == 202, await r.text()

        async def answered_on_whatsapp() -> bool:
            return seen.count("whatsapp", "Saluran sudah dibersihkan") == 1

        await wait_for(answered_on_whatsapp, within=60, what="the agency's answer on WhatsApp")

        # ---- a Telegram send fails, the gateway is killed, restarted, the event redelivered
        tg_id, tg_code = complaints["telegram"]
        bot_api.fail("sendMessage", 502, times=2)
        answer = _event("ans-tg", tg_id, "answered", agency=AGENCY,
                        answer="Petugas Dishub memperbaiki lampu hari ini.")
        await publish(tg_id, answer)

        async def tried_once() -> bool:
            rows = await pg.fetch("SELECT state, attempts, last_error FROM replies"
                                  " WHERE kind = 'status:ans-tg'")
            return bool(rows) and rows[0][0] == "queued" and rows[0][2] is not None

        await wait_for(tried_once, within=60, what="the first failed attempt recorded")
        gateway.kill9()
        restarted = GatewayProcess(tmp_path / "gw", gateway.env)
        restarted.port, restarted.url = gateway.port, gateway.url
        gateway = restarted
        await gateway.start()
        await publish(tg_id, answer)  # the central system sends it again

        async def answered_on_telegram() -> bool:
            rows = await pg.fetch("SELECT state FROM replies WHERE kind = 'status:ans-tg'")
            return [r[0] for r in rows] == ["sent"]

        await wait_for(answered_on_telegram, within=60, what="the answer sent after restart")

        # ---- /batal from the reporter withdraws; the public status shows it, nothing leaks
        bot_api.push_message(f"/batal {tg_code}")

        async def withdrawn() -> bool:
            rows = await pg.fetch("SELECT status FROM complaints WHERE id = $1", tg_id)
            return rows[0][0] == "withdrawn"

        await wait_for(withdrawn, within=60, what="the Telegram complaint withdrawn")
        assert seen.count("telegram", "telah ditarik atas permintaan Anda") == 1
        async with aiohttp.ClientSession() as session, \
                session.get(f"{gateway.url}/api/v1/complaints/{tg_code}") as r:
            public = await r.json()
        assert public["status"] == "withdrawn" and public["status_label"] == "Ditarik oleh pelapor"
        assert "5550001" not in json.dumps(public) and "Siti" not in json.dumps(public)

        # ---- BATAL by SMS (no code: the sender's newest complaint); by WhatsApp from another
        # number: refused without revealing anything; STATUS by WhatsApp shows the answer state
        sms_id, sms_code = complaints["sms"]
        run = await asyncio.to_thread(_gammu_run, gateway.env, "batal")
        assert run.returncode == 0, run.stderr
        async with aiohttp.ClientSession() as session:
            assert await _post(session, gateway.url, wa_payload([wa_change(PNID, messages=[
                wa_message("wamid.LIFE2", "6281300001111", text={"body": f"BATAL {wa_code}"})],
                contacts=[("6281300001111", "Orang lain")])])) == 200
            assert await _post(session, gateway.url, wa_payload([wa_change(PNID, messages=[
                wa_message("wamid.LIFE3", WA_CITIZEN, text={"body": f"status {wa_code}"})],
                contacts=[(WA_CITIZEN, "Rina")])])) == 200

        async def commands_answered() -> bool:
            return (seen.count("sms", f"Laporan {sms_code} telah ditarik") == 1
                    and seen.count("whatsapp", "pelapornya sendiri") == 1
                    and seen.count("whatsapp", f"Laporan {wa_code}: Dijawab") == 1)

        await wait_for(commands_answered, within=60, what="BATAL and STATUS answered")
        statuses = {r[0]: r[1] for r in await pg.fetch("SELECT id, status FROM complaints")}
        assert statuses[sms_id] == "withdrawn" and statuses[wa_id] == "answered"
        async with aiohttp.ClientSession() as session, session.post(
                f"{gateway.url}/api/v1/complaints/{sms_code}/status",
                json={"status": "in_follow_up"}, headers={"X-API-Key": AGENCY_KEY}) as r:
            assert r.status == 409  # withdrawn is final

        # ---- everything settled: each notice exactly once, per channel
        async def settled() -> bool:
            rows = await pg.fetch("SELECT count(*) FROM replies WHERE state <> 'sent'")
            return rows[0][0] == 0

        await wait_for(settled, within=30, what="no reply left queued")
        async with aiohttp.ClientSession() as session, \
                session.get(f"{gateway.url}/metrics") as r:
            metrics = await r.text()
        assert 'lapor_sla_overdue{stage="verification"} 0.0' in metrics  # all fresh
        assert seen.count("telegram", "Petugas Dishub memperbaiki lampu") == 1
        for channel in complaints:
            assert seen.count(channel, "telah diverifikasi") == 1, seen.texts(channel)
            assert seen.count(channel, "diteruskan ke " + AGENCY) == 1, seen.texts(channel)
        assert seen.count("whatsapp", "Saluran sudah dibersihkan") == 1
        kinds = {r[0] for r in await pg.fetch("SELECT kind FROM replies")}
        assert {"status:v-sms", "status:f-whatsapp", "status:ans-tg"} <= kinds
        history = await pg.fetch("SELECT count(*) FROM status_history WHERE complaint_id = $1",
                                 wa_id)
        assert history[0][0] == 3  # verified, forwarded, answered: redeliveries not repeated
    finally:
        await producer.stop()
        assert gateway.terminate() == 0, gateway.log()

    # The invalid event is on the dead-letter topic with its reason and raw bytes.
    consumer = AIOKafkaConsumer(f"{prefix}complaints.dlq.v1",
                                bootstrap_servers=kafka_env["LAPOR_KAFKA__BOOTSTRAP_SERVERS"],
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
        dead = [r for batch in batches.values() for r in batch]
    finally:
        await consumer.stop()
    [letter] = [r for r in dead if r.value == b'{"event_id": "broken", "status": "verified"}']
    reason = dict(letter.headers)["ce_reason"].decode()
    assert "status event schema violation" in reason
