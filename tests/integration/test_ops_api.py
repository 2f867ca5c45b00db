"""The ops API against a running gateway: connector detail and restart, a pause that survives
a restart, dead letters (a connector's and the sink's) replayed idempotently, ``dlq`` on the
command line, ``/metrics``, and alerts delivered to Kafka and a webhook."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.emulators.loopback import serve_loopback
from tests.emulators.telegram import TelegramEmulator
from tests.integration.support import BrokerProcess, GatewayProcess, PgDatabase, wait_for

TOKEN = "ops-secret-token"
API_KEY = "ops-test-key"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def ops_env(kafka_env: dict[str, str], pg: PgDatabase, bot_api: TelegramEmulator,
            **extra: str) -> dict[str, str]:
    return {**kafka_env, "LAPOR_STORE__URL": pg.url, "LAPOR_GATEWAY__OPS_TOKEN": TOKEN,
            "LAPOR_CONNECTORS__API__KEYS": json.dumps({"p": API_KEY}),
            "LAPOR_CONNECTORS__TELEGRAM__ENABLED": "true",
            "LAPOR_CONNECTORS__TELEGRAM__MODE": "polling",
            "LAPOR_CONNECTORS__TELEGRAM__TOKEN": bot_api.token,
            "LAPOR_CONNECTORS__TELEGRAM__API_BASE": bot_api.url,
            "LAPOR_CONNECTORS__TELEGRAM__POLL_TIMEOUT_S": "1",
            "LAPOR_OPS__ALERT_INTERVAL_S": "0.5", "LAPOR_OPS__SAMPLE_INTERVAL_S": "1",
            **extra}


async def api(session: aiohttp.ClientSession, method: str, url: str) -> Any:
    async with session.request(method, url, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def insert_dead_letter(pg: PgDatabase, letter_id: str, channel: str, payload: bytes,
                             reason: str) -> None:
    rows = await pg.fetch(
        "INSERT INTO dead_letters (id, channel, account, reason, payload, content_type,"
        " created_us) VALUES ($1, $2, 'lapor_bot', $3, $4, 'application/json', $5)"
        " RETURNING id", letter_id, channel, reason, payload, int(time.time() * 1e6))
    assert rows


def cli(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--url", gateway.url],
                          env=gateway.env, capture_output=True, text=True, timeout=60,
                          check=False)


async def test_detail_pause_across_restart_replay_dlq_and_metrics(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str], broker: BrokerProcess,
    bot_api: TelegramEmulator,
) -> None:
    env = ops_env(kafka_env, pg, bot_api)
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{gateway.url}/api/v1/complaints", json={
                    "external_id": "m-1", "body": "Lampu jalan mati di Jl. Juanda."},
                    headers={"X-API-Key": API_KEY}) as r:
                assert r.status == 202
            detail = await api(session, "GET", f"{gateway.url}/ops/api/connectors/api")
            assert detail["state"] == "running" and detail["tasks"][0]["state"] == "running"
            assert detail["counters"]["accepted"] == 1 and detail["error_count"] == 0
            assert {"last_success", "last_error_at", "throughput_per_min", "backlog"} <= set(
                detail)

            # A Telegram update kept as a dead letter (say a bug fixed since) is replayed
            # through the Telegram connector; replaying it again changes nothing.
            update = {"update_id": 777, "message": bot_api.message(
                "Sampah menumpuk di pasar Segiri sejak seminggu.")}
            await insert_dead_letter(pg, "tg-dead-1", "telegram",
                                     json.dumps(update).encode(), "crashed on <b>emoji</b>")
            first = await api(session, "POST",
                              f"{gateway.url}/ops/api/dead-letters/tg-dead-1/replay")
            assert first["replay_result"].startswith("accepted "), first
            code = first["replay_result"].split()[1]
            again = await api(session, "POST",
                              f"{gateway.url}/ops/api/dead-letters/tg-dead-1/replay")
            assert again["replay_result"] == f"duplicate {code}" and again["replay_count"] == 2

            async def stored() -> list[Any]:
                return list(await pg.fetch(
                    "SELECT channel FROM complaints WHERE tracking_code = $1", code))

            [row] = await wait_for(stored, within=30, what="the replayed complaint stored")
            assert row[0] == "telegram"
            raw = await api(session, "GET", f"{gateway.url}/ops/api/dead-letters/tg-dead-1")
            assert json.loads(raw["payload"])["update_id"] == 777

            # A record the sink refuses goes to the DLQ topic and from there to the store.
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait(
                    kafka_env["LAPOR_KAFKA__TOPIC_PREFIX"] + "complaints.v1",
                    b'{"channel": "whatsapp", "body": "no schema"}', key=b"broken-1")
            finally:
                await producer.stop()

            async def sink_letter() -> list[dict[str, Any]]:
                data = await api(session, "GET", f"{gateway.url}/ops/api/dead-letters")
                return [d for d in data["dead_letters"] if d["source"] == "sink"]

            [letter] = await wait_for(sink_letter, within=30, what="the sink's dead letter")
            assert letter["channel"] == "whatsapp"
            assert letter["reason"].startswith("schema violation")

            async with session.get(f"{gateway.url}/metrics") as r:
                metrics = await r.text()
            assert 'lapor_connector_messages_total{connector="api",outcome="accepted"} 1.0' \
                in metrics
            assert 'lapor_connector_state{connector="api",state="running"} 1.0' in metrics
            assert "lapor_kafka_produce_seconds_bucket" in metrics
            assert "lapor_dead_letters 1.0" in metrics  # the sink's; the replayed one is done
            assert 'lapor_sla_overdue{stage="verification"} 0.0' in metrics

            sink_group = kafka_env["LAPOR_KAFKA__SINK_GROUP"]

            async def lag_measured() -> bool:
                async with session.get(f"{gateway.url}/metrics") as r:
                    # Everything produced so far was consumed: the sink's lag is measured as 0.
                    return f'lapor_consumer_lag{{group="{sink_group}"}} 0.0' in await r.text()

            await wait_for(lag_measured, within=30, what="the sink's consumer lag measured")

        listing = await asyncio.to_thread(cli, gateway, "dlq", "list")
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.splitlines()[0].split()[:3] == ["ID", "CREATED", "CHANNEL"]
        assert any(line.startswith(letter["id"]) for line in listing.stdout.splitlines())
        replayed = await asyncio.to_thread(cli, gateway, "dlq", "replay", letter["id"])
        assert replayed.returncode == 1  # still not a valid complaint: said so, kept
        assert "failed: still not a valid complaint" in replayed.stdout

        # An operator's pause survives a restart of the gateway.
        async with aiohttp.ClientSession() as session:
            paused = await api(session, "POST", f"{gateway.url}/ops/api/connectors/telegram/pause")
            assert paused["state"] == "paused"
        assert gateway.terminate() == 0, gateway.log()
        gateway = GatewayProcess(tmp_path / "gw", env)
        await gateway.start()
        async with aiohttp.ClientSession() as session:
            after = await api(session, "GET", f"{gateway.url}/ops/api/connectors/telegram")
            assert after["state"] == "paused"
            await api(session, "POST", f"{gateway.url}/ops/api/connectors/telegram/resume")
            restarted = await api(session, "POST",
                                  f"{gateway.url}/ops/api/connectors/telegram/restart")
            assert restarted["state"] in ("running", "degraded")

            async def running() -> bool:
                data = await api(session, "GET", f"{gateway.url}/ops/api/connectors/telegram")
                return bool(data["state"] == "running")

            await wait_for(running, within=30, what="telegram running after the restart")
    finally:
        assert gateway.terminate() == 0, gateway.log()


async def test_a_degraded_connector_raises_and_resolves_one_alert(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str], broker: BrokerProcess,
    bot_api: TelegramEmulator,
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner, port = await serve_loopback(app)
    url = f"http://127.0.0.1:{port}"
    env = ops_env(kafka_env, pg, bot_api, LAPOR_OPS__ALERT_WEBHOOK_URL=f"{url}/hook")
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            async def telegram_running() -> bool:
                data = await api(session, "GET", f"{gateway.url}/ops/api/connectors/telegram")
                return bool(data["state"] == "running")

            await wait_for(telegram_running, within=30, what="telegram running")
            bot_api.fail("getUpdates", 502, times=5)

            async def alert_states() -> list[str]:
                return [e["state"] for e in received if e["key"] == "connector_degraded:telegram"]

            await wait_for(lambda: _equal(alert_states, ["raised", "resolved"]), within=60,
                           what="the degraded alert raised, then resolved")
            data = await api(session, "GET", f"{gateway.url}/ops/api/alerts")
            [alert] = [a for a in data["alerts"] if a["kind"] == "connector_degraded"]
            assert alert["subject"] == "telegram" and alert["resolved_us"] is not None

        consumer = AIOKafkaConsumer(
            kafka_env["LAPOR_KAFKA__TOPIC_PREFIX"] + "complaints.alerts.v1",
            bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
            group_id=None)
        await consumer.start()
        try:
            events: list[dict[str, Any]] = []

            async def on_topic() -> bool:
                batches = await consumer.getmany(timeout_ms=500)
                events.extend(json.loads(r.value) for b in batches.values() for r in b)
                return [e["state"] for e in events
                        if e["key"] == "connector_degraded:telegram"] == ["raised", "resolved"]

            await wait_for(on_topic, within=30, what="both alert events on the alert topic")
        finally:
            await consumer.stop()
    finally:
        assert gateway.terminate() == 0, gateway.log()
        await runner.cleanup()
    # Every line the process logged is one JSON object; the alert's lines name the connector.
    logged = [json.loads(line) for line in gateway.log_path.read_text().splitlines()]
    assert any(entry.get("alert") == "connector_degraded:telegram"
               and entry.get("connector") == "telegram" for entry in logged)


async def _equal(check: Any, expected: list[str]) -> bool:
    return bool(await check() == expected)
