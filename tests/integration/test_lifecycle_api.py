"""``POST /api/v1/complaints/{code}/status`` over real HTTP: every refusal has its own clear
answer, and an accepted change is one event on the status topic (a retry is the same event)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from config.settings import ApiSettings
from errors import BrokerUnavailable
from forwarder.db import Database, open_database
from forwarder.outbox import Outbox
from forwarder.status_events import StatusEvent
from forwarder.store import CentralStore
from gateway.lifecycle import AgencyKeys, Lifecycle, agency_status_route
from tests.unit.test_lifecycle import SentRecords, _stored

KEY = "kunci-dinas-pu-0123456789"
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
STORE = web.AppKey("store", CentralStore)


class Down(SentRecords):
    async def send_many(self, topic: str, records: list[Any]) -> list[BaseException | None]:
        return [BrokerUnavailable("no broker") for _ in records]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    yield database
    await database.close()


async def _client(db: Database, producer: SentRecords) -> TestClient[Any, Any]:
    app = web.Application()
    store = CentralStore(db)
    outbox = Outbox(db)
    app[STORE] = store
    app[LIFECYCLE] = Lifecycle(outbox=outbox, store=store, producer=producer,
                               topic="complaints.status.v1", source="test",
                               withdraw_window_s=3600)
    keys = AgencyKeys(ApiSettings(agency_keys={"Dinas PU": SecretStr(KEY)}))
    app.router.add_routes([agency_status_route(keys, LIFECYCLE, STORE)])
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_refusals_and_one_event_per_change(db: Database) -> None:
    complaint = await _stored(db, "api-1")  # routed to "Dinas PU"
    producer = SentRecords()
    client = await _client(db, producer)
    url = f"/api/v1/complaints/{complaint.tracking_code}/status"
    auth = {"X-API-Key": KEY}
    try:
        cases: list[tuple[str, dict[str, str], Any, int, str]] = [
            (url, {"X-API-Key": "salah"}, {"status": "answered"}, 401, "unauthorized"),
            ("/api/v1/complaints/ZZZZZ-ZZZZZ/status", auth, {"status": "answered"}, 404,
             "not_found"),
            (url, auth, {"status": "answered", "extra": 1}, 422, "validation_failed"),
            (url, auth, {"status": "verified"}, 422, "validation_failed"),
            (url, auth, {"status": "answered", "at": "2999-01-01T00:00:00Z"}, 422,
             "validation_failed"),
        ]
        for target, headers, body, status, error in cases:
            async with client.post(target, json=body, headers=headers) as r:
                assert (r.status, (await r.json())["error"]) == (status, error), body
        async with client.post(url, data="status=answered", headers=auth) as r:
            assert r.status == 415
        assert producer.records == []

        for _ in range(2):  # a retried POST with the same Idempotency-Key: the same event
            async with client.post(url, json={"status": "answered", "answer": "Sudah."},
                                   headers={**auth, "Idempotency-Key": "pu-77"}) as r:
                assert r.status == 202
                assert (await r.json())["event_id"] == "Dinas PU:pu-77"
        events = [StatusEvent.model_validate_json(value) for _, _, value in producer.records]
        assert {e.event_id for e in events} == {"Dinas PU:pu-77"}
        assert events[0].complaint_id == complaint.id and events[0].agency == "Dinas PU"
        assert events[0].actor == "agency:Dinas PU"
    finally:
        await client.close()

    down = await _client(db, Down())
    try:
        async with down.post(url, json={"status": "in_follow_up"}, headers=auth) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "5"
            assert "retry" in json.dumps(await r.json())
    finally:
        await down.close()
