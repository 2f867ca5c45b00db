"""A form submission and an API submission each end as one row in the central store."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.integration.support import (
    PNG,
    TRACKING_RE,
    GatewayProcess,
    PgDatabase,
    browser,
    form_data,
    open_form,
    wait_for,
)

API_KEY = "test-key-samarinda"


def _env(pg: PgDatabase, kafka_env: dict[str, str]) -> dict[str, str]:
    return {**kafka_env, "LAPOR_STORE__URL": pg.url,
            "LAPOR_CONNECTORS__API__KEYS": json.dumps({"samarinda-app": API_KEY})}


async def _stored(pg: PgDatabase, code: str) -> list[dict[str, object]]:
    rows = await pg.fetch("SELECT id, tracking_code, status, payload FROM complaints"
                          " WHERE tracking_code = $1", code)
    return [dict(r) for r in rows]


async def test_form_submission_reaches_the_central_store(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str]
) -> None:
    gateway = GatewayProcess(tmp_path / "gw", _env(pg, kafka_env))
    await gateway.start()
    try:
        async with browser() as session:
            hidden = await open_form(session, gateway.url)
            fields = {"judul": "Jalan berlubang di Jl. Pahlawan",
                      "isi": "Jalan berlubang besar sejak dua minggu, sudah ada korban jatuh.",
                      "tanggal_kejadian": "2026-11-20", "lokasi": "Jl. Pahlawan, Samarinda",
                      "nama": "Budi Santoso", "kontak": "0812-3456-7890"}
            async with session.post(f"{gateway.url}/lapor",
                                    data=form_data(hidden, fields, [("foto.png", PNG,
                                                                     "image/png")])) as r:
                page = await r.text()
                assert r.status == 200, page
            match = TRACKING_RE.search(page)
            assert match, page
            code = match.group(1)

            # Sending the same form again (refresh, double click) is the same complaint.
            async with session.post(f"{gateway.url}/lapor",
                                    data=form_data(hidden, fields)) as r:
                again = await r.text()
                assert r.status == 200 and "kode-pelacakan" in again, again[-3000:]
            assert TRACKING_RE.search(again).group(1) == code  # type: ignore[union-attr]

            rows = await wait_for(lambda: _stored(pg, code), within=20, what="stored row")
            assert len(rows) == 1
            payload = json.loads(str(rows[0]["payload"]))
            assert payload["title"] == fields["judul"]
            assert payload["reporter"]["phone"] == "+6281234567890"
            assert payload["incident_date"] == "2026-11-20"
            assert payload["attachments"][0]["content_type"] == "image/png"
            assert payload["attachments"][0]["size"] == len(PNG)
            assert (await pg.fetch("SELECT count(*) FROM complaints"))[0][0] == 1

            async with session.get(f"{gateway.url}/status/{code.lower()}") as r:
                status_page = await r.text()
            assert r.status == 200 and "Diterima" in status_page and code in status_page

        async def delivered() -> bool:
            rows = await pg.fetch("SELECT state FROM outbox")
            return bool(rows) and all(r["state"] == "delivered" for r in rows)

        await wait_for(delivered, within=20, what="receipt marks the outbox entry delivered")
    finally:
        assert gateway.terminate() == 0, gateway.log()

    export = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway.cli", "export"], env=gateway.env,
        capture_output=True, text=True, timeout=60, check=True,
    )
    lines = [json.loads(line) for line in export.stdout.splitlines()]
    assert [(x["tracking_code"], x["status"]) for x in lines] == [(code, "received")]


async def test_api_submission_reaches_the_central_store(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str]
) -> None:
    gateway = GatewayProcess(tmp_path / "gw", _env(pg, kafka_env))
    await gateway.start()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    body = {"external_id": "SMD-2026-0001", "title": "Lampu jalan padam",
            "body": "Lampu jalan di depan SDN 003 padam sejak seminggu.",
            "reporter": {"name": "Siti", "email": "Siti@Example.ID"},
            "location": {"text": "Jl. Juanda", "lat": -0.49, "lon": 117.14}}
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{gateway.url}/api/v1/complaints"
            async with session.post(url, json=body, headers={"X-API-Key": "wrong"}) as r:
                assert r.status == 401
            async with session.post(url, json={"title": "x", "oops": 1}, headers=auth) as r:
                assert r.status == 422
                problem = await r.json()
                assert {"body", "oops"} <= set(problem["fields"])
            async with session.post(url, json=body, headers=auth) as r:
                assert r.status == 202
                first = await r.json()
            async with session.post(url, json=body, headers=auth) as r:
                second = await r.json()
            assert (second["id"], second["tracking_code"]) == (first["id"],
                                                                first["tracking_code"])
            assert (first["duplicate"], second["duplicate"]) == (False, True)

            rows = await wait_for(lambda: _stored(pg, first["tracking_code"]), within=20,
                                  what="stored row")
            assert len(rows) == 1 and rows[0]["id"] == first["id"]
            payload = json.loads(str(rows[0]["payload"]))
            assert payload["audit"]["account"] == "samarinda-app"
            assert payload["reporter"]["email"] == "siti@example.id"

            async with session.get(f"{gateway.url}{first['status_url']}") as r:
                status = await r.json()
            assert status["status"] == "received" and status["title"] == "Lampu jalan padam"
            assert "reporter" not in status
            async with session.get(f"{url}/AAAAA-AAAAA") as r:
                assert r.status == 404
    finally:
        assert gateway.terminate() == 0, gateway.log()
    assert (await pg.fetch("SELECT count(*) FROM complaints"))[0][0] == 1


async def test_redelivery_yields_the_same_id_and_one_row(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str]
) -> None:
    """Concurrent duplicate deliveries of one (channel, native id): one id, one row."""
    gateway = GatewayProcess(tmp_path / "gw", _env(pg, kafka_env))
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            async def post() -> dict[str, object]:
                async with session.post(
                    f"{gateway.url}/api/v1/complaints",
                    json={"external_id": "dup-1", "body": "Sampah menumpuk di pasar."},
                    headers={"X-API-Key": API_KEY},
                ) as r:
                    assert r.status == 202
                    result: dict[str, object] = await r.json()
                    return result

            results = await asyncio.gather(*(post() for _ in range(20)))
        assert len({(r["id"], r["tracking_code"]) for r in results}) == 1
        assert sum(1 for r in results if not r["duplicate"]) == 1
        code = str(results[0]["tracking_code"])
        await wait_for(lambda: _stored(pg, code), within=20, what="stored row")
        await asyncio.sleep(0)  # the count below is what matters
        assert (await pg.fetch("SELECT count(*) FROM complaints"))[0][0] == 1
        assert (await pg.fetch("SELECT count(*) FROM outbox"))[0][0] == 1
    finally:
        gateway.terminate()
