"""Faults injected for real: kill -9 the gateway, kill the broker and lose its whole log."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from pathlib import Path

import aiohttp

from tests.integration.support import GatewayProcess, PgDatabase, readyz, wait_for

API_KEY = "durability-key"
HEADERS = {"X-API-Key": API_KEY}


async def _submit(session: aiohttp.ClientSession, url: str, external_id: str) -> dict[str, str]:
    async with session.post(f"{url}/api/v1/complaints", headers=HEADERS, json={
        "external_id": external_id,
        "body": f"Laporan uji ketahanan nomor {external_id}: drainase tersumbat.",
    }) as response:
        assert response.status == 202, await response.text()
        result: dict[str, str] = await response.json()
        return result


async def _store_counts(pg: PgDatabase) -> tuple[int, int]:
    row = (await pg.fetch("SELECT count(*), count(DISTINCT native_id) FROM complaints"))[0]
    return int(row[0]), int(row[1])


async def _all_stored(pg: PgDatabase, accepted: dict[str, str]) -> bool:
    rows = await pg.fetch("SELECT native_id, tracking_code FROM complaints")
    return {r["native_id"]: r["tracking_code"] for r in rows} == accepted


async def test_kill9_right_after_202_loses_nothing(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str]
) -> None:
    env = {**kafka_env, "LAPOR_STORE__URL": pg.url,
           "LAPOR_CONNECTORS__API__KEYS": json.dumps({"partner": API_KEY})}
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    count = 60
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(_submit(session, gateway.url, f"k9-{i}") for i in range(count)))
    gateway.kill9()  # at once: most entries are not yet published, let alone stored
    accepted = {f"k9-{i}": r["tracking_code"] for i, r in enumerate(results)}
    stored_before = (await _store_counts(pg))[0]

    restarted = GatewayProcess(tmp_path / "gw", env)
    await restarted.start()
    try:
        await wait_for(lambda: _all_stored(pg, accepted), within=60,
                       what="every accepted complaint in the store")
        assert await _store_counts(pg) == (count, count)
        # Redelivery after the crash (the channel never saw some answers): same ids, no rows.
        async with aiohttp.ClientSession() as session:
            again = await _submit(session, restarted.url, "k9-0")
        assert again["tracking_code"] == accepted["k9-0"] and again["duplicate"] is True
        assert await _store_counts(pg) == (count, count)
    finally:
        restarted.terminate()
    assert stored_before < count, "the kill came too late to test anything"


async def test_broker_loss_loses_nothing(tmp_path: Path, pg: PgDatabase) -> None:
    """The embedded broker is killed (its log, topics and offsets are gone) mid-stream."""
    env = {"LAPOR_STORE__URL": pg.url, "LAPOR_KAFKA__RECEIPT_TIMEOUT_S": "3",
           "LAPOR_CONNECTORS__API__KEYS": json.dumps({"partner": API_KEY})}
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    accepted: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(20):  # batch A: stored before the fault
                accepted[f"a-{i}"] = (await _submit(session, gateway.url, f"a-{i}"))[
                    "tracking_code"]
            await wait_for(lambda: _all_stored(pg, accepted), within=30, what="batch A")

            broker_pid = (await readyz(gateway.url))["embedded_broker"]["pid"]
            batch_b = await asyncio.gather(
                *(_submit(session, gateway.url, f"b-{i}") for i in range(30)))
            os.kill(broker_pid, signal.SIGKILL)  # batch B is in flight
            accepted.update({f"b-{i}": r["tracking_code"] for i, r in enumerate(batch_b)})
            for i in range(30):  # batch C arrives while the broker is down or empty
                accepted[f"c-{i}"] = (await _submit(session, gateway.url, f"c-{i}"))[
                    "tracking_code"]

            await wait_for(lambda: _all_stored(pg, accepted), within=90,
                           what="every accepted complaint in the store after broker loss")
            assert await _store_counts(pg) == (len(accepted), len(accepted))
            state = await readyz(gateway.url)
            assert state["embedded_broker"]["restarts"] >= 1
            assert state["embedded_broker"]["pid"] != broker_pid

            async def drained() -> bool:
                return (await readyz(gateway.url))["outbox"]["pending"] == 0

            await wait_for(drained, within=60, what="every outbox entry receipted")
    finally:
        assert gateway.terminate() == 0, gateway.log()
    assert await _store_counts(pg) == (len(accepted), len(accepted))


async def test_broker_down_at_start_then_up(tmp_path: Path, pg: PgDatabase,
                                            kafka_env: dict[str, str]) -> None:
    """Kafka unreachable when the gateway and the sink start: complaints are accepted into
    the outbox and flow as soon as a broker answers (the sink starts its producer late); one
    of them carries NUL characters, which PostgreSQL would refuse, and blocks nothing."""
    from tests.integration.support import BrokerProcess

    late = BrokerProcess()  # port reserved, nothing listening yet
    env = {**kafka_env, "LAPOR_KAFKA__BOOTSTRAP_SERVERS": late.bootstrap,
           "LAPOR_STORE__URL": pg.url,
           "LAPOR_CONNECTORS__API__KEYS": json.dumps({"partner": API_KEY})}
    gateway = GatewayProcess(tmp_path / "gw", env, command="gateway")
    sink = GatewayProcess(tmp_path / "sink", env, command="sink")
    await gateway.start()
    await sink.start()
    try:
        async with aiohttp.ClientSession() as session:
            accepted = {f"late-{i}": (await _submit(session, gateway.url, f"late-{i}"))[
                "tracking_code"] for i in range(10)}
            async with session.post(f"{gateway.url}/api/v1/complaints", headers=HEADERS, json={
                "external_id": "late-nul", "body": "Jalan\u0000 rusak.",
                "category": "jalan\u0000", "reporter": {"handle": "@x\u0000y"},
            }) as response:
                assert response.status == 202
                accepted["late-nul"] = (await response.json())["tracking_code"]
        assert (await readyz(gateway.url))["outbox"]["pending"] == 11
        assert await _store_counts(pg) == (0, 0)
        late.start()
        await wait_for(lambda: _all_stored(pg, accepted), within=90,
                       what="complaints accepted while Kafka was down reach the store")

        async def receipted() -> bool:
            return (await readyz(gateway.url))["outbox"]["pending"] == 0

        await wait_for(receipted, within=60, what="receipts from a sink that started early")
    finally:
        assert gateway.terminate() == 0, gateway.log()
        assert sink.terminate() == 0, sink.log()
        late.stop()


async def test_production_roles_two_gateways_and_a_sink(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str]
) -> None:
    """Two `gateway` instances and one `sink` share PostgreSQL and Kafka; a message delivered
    to both instances (a channel retrying on another node) is still one complaint."""
    env = {**kafka_env, "LAPOR_STORE__URL": pg.url,
           "LAPOR_CONNECTORS__API__KEYS": json.dumps({"partner": API_KEY})}
    sink = GatewayProcess(tmp_path / "sink", env, command="sink")
    first = GatewayProcess(tmp_path / "gw1", env, command="gateway")
    second = GatewayProcess(tmp_path / "gw2", env, command="gateway")
    for process in (sink, first, second):
        await process.start()
    try:
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(
                *(_submit(session, node.url, f"pr-{i}")
                  for i in range(40) for node in (first, second)))
        codes = {r["tracking_code"] for r in results}
        assert len(codes) == 40
        assert sum(1 for r in results if not r["duplicate"]) == 40
        accepted = {f"pr-{i}": results[2 * i]["tracking_code"] for i in range(40)}
        await wait_for(lambda: _all_stored(pg, accepted), within=60,
                       what="every complaint stored by the separate sink")
        async with aiohttp.ClientSession() as session, \
                session.get(f"{second.url}/api/v1/complaints/{accepted['pr-0']}") as r:
            assert (await r.json())["status"] == "received"
    finally:
        for process in (first, second, sink):
            assert process.terminate() == 0, process.log()
    assert await _store_counts(pg) == (40, 40)


async def test_near_duplicates_found_across_a_kill9_that_lost_the_band_rows(
    tmp_path: Path, kafka_env: dict[str, str]
) -> None:
    """SQLite: the near-duplicate index's band rows are written after the intake's commit, in
    a file of their own. A kill -9 may lose the ones not written yet (here: all of them, wiped
    from that file while the gateway is down); the next start rebuilds them, and a near
    duplicate of a complaint accepted before the kill is still labelled as one."""
    env = {**kafka_env, "LAPOR_CONNECTORS__API__KEYS": json.dumps({"partner": API_KEY})}
    text = "Lampu penerangan jalan di Jl. Pahlawan Samarinda mati seminggu, malam gelap sekali."
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    async with aiohttp.ClientSession() as session:
        first = await _submit_text(session, gateway.url, "nd-1", text)
    gateway.kill9()
    bands = sqlite3.connect(tmp_path / "gw" / "lapor-lsh.db")
    with bands:
        bands.execute("DELETE FROM lsh_bands")
    bands.close()

    restarted = GatewayProcess(tmp_path / "gw", env)
    await restarted.start()
    try:
        async with aiohttp.ClientSession() as session:
            second = await _submit_text(session, restarted.url, "nd-2",
                                        "LAMPU JALAN JL PAHLAWAN SAMARINDA MATI SEMINGGU, GELAP")

        async def written() -> bool:
            return (await readyz(restarted.url))["lsh_bands"] == {"unwritten": 0}

        await wait_for(written, within=30, what="the new band rows written to their file")
    finally:
        assert restarted.terminate() == 0, restarted.log()
    main = sqlite3.connect(tmp_path / "gw" / "lapor.db")
    try:
        payload = main.execute("SELECT payload FROM outbox WHERE id = ?",
                               (second["id"],)).fetchone()[0]
    finally:
        main.close()
    assert json.loads(payload)["duplicate_of"] == first["id"]
    assert "rebuilt the rows of 1 complaints" in restarted.log()


async def _submit_text(session: aiohttp.ClientSession, url: str, external_id: str,
                       body: str) -> dict[str, str]:
    async with session.post(f"{url}/api/v1/complaints", headers=HEADERS,
                            json={"external_id": external_id, "body": body}) as response:
        assert response.status == 202, await response.text()
        result: dict[str, str] = await response.json()
        return result
