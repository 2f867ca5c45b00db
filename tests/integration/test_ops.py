"""The operators' API and ``lapor-gateway status`` against a running gateway."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.integration.support import GatewayProcess, PgDatabase

TOKEN = "ops-secret-token"
API_KEY = "ops-test-key"


async def test_ops_api_lists_pauses_and_resumes_connectors(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str]
) -> None:
    env = {**kafka_env, "LAPOR_STORE__URL": pg.url, "LAPOR_GATEWAY__OPS_TOKEN": TOKEN,
           "LAPOR_CONNECTORS__API__KEYS": json.dumps({"p": API_KEY})}
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/ops/api/connectors") as r:
                assert r.status == 401
            async with session.get(f"{gateway.url}/ops/api/connectors",
                                   headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            async with session.post(f"{gateway.url}/api/v1/complaints", json={
                    "external_id": "o-1", "body": "Trotoar rusak di depan pasar."},
                    headers={"X-API-Key": API_KEY}) as r:
                assert r.status == 202
            async with session.get(f"{gateway.url}/ops/api/connectors", headers=auth) as r:
                data = await r.json()
            states = {c["name"]: c for c in data["connectors"]}
            assert states["api"]["state"] == "running"
            assert states["api"]["counters"]["accepted"] == 1
            assert "pending" in data["forwarder"]["outbox"]

            async with session.post(f"{gateway.url}/ops/api/connectors/api/pause",
                                    headers=auth) as r:
                assert (await r.json())["state"] == "paused"
            async with session.post(f"{gateway.url}/api/v1/complaints", json={
                    "external_id": "o-2", "body": "Trotoar rusak lagi."},
                    headers={"X-API-Key": API_KEY}) as r:
                assert r.status == 503  # the partner retries later; nothing is lost
            async with session.post(f"{gateway.url}/ops/api/connectors/api/resume",
                                    headers=auth) as r:
                assert (await r.json())["state"] == "running"
            async with session.post(f"{gateway.url}/ops/api/connectors/nope/pause",
                                    headers=auth) as r:
                assert r.status == 404
            async with session.get(f"{gateway.url}/ops/api/dead-letters", headers=auth) as r:
                assert (await r.json()) == {"dead_letters": []}

        table = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "gateway.cli", "status", "--url", gateway.url],
            env=gateway.env, capture_output=True, text=True, timeout=60, check=False)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split()[:2] == ["CONNECTOR", "STATE"]
        assert any(line.split()[:2] == ["api", "running"] for line in lines)
        assert any(line.split()[:2] == ["webform", "running"] for line in lines)
        assert "alerts: 0 open" in lines
    finally:
        assert gateway.terminate() == 0, gateway.log()


async def test_ops_api_is_closed_without_a_token(
    tmp_path: Path, kafka_env: dict[str, str]
) -> None:
    gateway = GatewayProcess(tmp_path / "gw", kafka_env)
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"{gateway.url}/ops/api/connectors",
                headers={"Authorization": "Bearer anything"}) as r:
            assert r.status == 403
    finally:
        assert gateway.terminate() == 0, gateway.log()
