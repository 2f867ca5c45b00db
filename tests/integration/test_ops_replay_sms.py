"""Replaying an SMS dead letter through the ops API of a running gateway: a signed but invalid
generic-gateway body is kept and its replay still fails with the reason; a kept body that is
valid now (a bug fixed since) is accepted once, a second replay is a duplicate, and the
complaint reaches the central store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from connectors.sms import GENERIC_ROUTE, SIGNATURE_HEADER, generic_signature
from tests.integration.support import GatewayProcess, PgDatabase, wait_for
from tests.integration.test_ops_api import TOKEN, api, insert_dead_letter

SECRET = "sms-replay-secret"


async def test_sms_dead_letters_replay_through_the_ops_api(
        tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str]) -> None:
    env = {**kafka_env, "LAPOR_STORE__URL": pg.url, "LAPOR_GATEWAY__OPS_TOKEN": TOKEN,
           "LAPOR_CONNECTORS__SMS__ENABLED": "true",
           "LAPOR_CONNECTORS__SMS__PROVIDER": "generic",
           "LAPOR_CONNECTORS__SMS__ACCOUNT": "1708",
           "LAPOR_CONNECTORS__SMS__GENERIC_HMAC_SECRET": SECRET}
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            broken = b'{"id": "sms-bad-1", "text": "nomor pengirim hilang"}'
            async with session.post(f"{gateway.url}{GENERIC_ROUTE}", data=broken, headers={
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: generic_signature(SECRET, broken)}) as r:
                assert r.status == 400
            listed = await api(session, "GET", f"{gateway.url}/ops/api/dead-letters")
            [letter] = listed["dead_letters"]
            assert (letter["channel"], letter["content_type"]) == ("sms", "application/json")
            failed = await api(session, "POST",
                               f"{gateway.url}/ops/api/dead-letters/{letter['id']}/replay")
            assert failed["replay_result"].startswith("failed: still an invalid generic SMS")

            valid = json.dumps({"id": "sms-kept-1", "from": "081234567890", "to": "1708",
                                "text": "Pohon tumbang menutup Jl. Gatot Subroto."}).encode()
            await insert_dead_letter(pg, "sms-dead-1", "sms", valid, "a bug fixed since")
            first = await api(session, "POST",
                              f"{gateway.url}/ops/api/dead-letters/sms-dead-1/replay")
            assert first["replay_result"].startswith("accepted "), first
            code = first["replay_result"].split()[1]
            again = await api(session, "POST",
                              f"{gateway.url}/ops/api/dead-letters/sms-dead-1/replay")
            assert again["replay_result"] == f"duplicate {code}" and again["replay_count"] == 2

            async def stored() -> list[Any]:
                return list(await pg.fetch(
                    "SELECT channel FROM complaints WHERE tracking_code = $1", code))

            [row] = await wait_for(stored, within=30, what="the replayed SMS complaint stored")
            assert row[0] == "sms"
            rows = await pg.fetch("SELECT COUNT(*) FROM complaints WHERE channel = 'sms'")
            assert rows[0][0] == 1
    finally:
        gateway.terminate()
