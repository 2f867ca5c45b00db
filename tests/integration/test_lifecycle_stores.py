"""The lifecycle queries on PostgreSQL (the unit tests run them on SQLite): status history,
due dates, overdue and alerts once, withdrawal checks, erasure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from forwarder.db import Database, open_database
from forwarder.erasure import erase
from forwarder.outbox import Outbox
from forwarder.replies import ReplyQueue
from forwarder.sla import WITA
from forwarder.status_events import Status
from forwarder.store import CentralStore, parse_utc
from gateway.lifecycle import SlaAlerts
from tests.integration.support import PgDatabase
from tests.unit.test_lifecycle import MONDAY, SentRecords, _complaint, _event


@pytest.fixture
async def db(pg: PgDatabase) -> AsyncIterator[Database]:
    database = await open_database(pg.url, pool_size=2)
    yield database
    await database.close()


async def test_lifecycle_on_postgresql(db: Database) -> None:
    store = CentralStore(db)
    late, raw = _complaint("pg-1")
    fresh, _ = _complaint("pg-2", received_at=MONDAY + timedelta(days=7))
    async with Outbox(db) as outbox:
        for complaint in (late, fresh):
            await outbox.add(complaint, b"raw bytes with Budi", "x", {"chat_id": "chat-1"},
                             raw.sender.channel_user_id)
    await store.upsert_many([late, fresh])

    due = await store.due_dates(late.id)
    assert parse_utc(str(due["verification"])) == datetime(2026, 11, 27, tzinfo=WITA)
    forwarded = _event("pg-f", late.tracking_code, Status.FORWARDED,
                       MONDAY + timedelta(hours=3), agency="Dinas PU")
    assert (await store.apply_status(forwarded)).applied  # type: ignore[union-attr]
    assert (await store.apply_status(forwarded)).applied  # type: ignore[union-attr]
    older = _event("pg-v", late.tracking_code, Status.VERIFIED, MONDAY + timedelta(hours=1))
    assert not (await store.apply_status(older)).applied  # type: ignore[union-attr]
    assert [(h.status, h.applied) for h in await store.history(late.id)] == [
        ("forwarded", True), ("verified", False)]

    # Forwarded Monday 23 Nov: follow-up due end of Monday 30 Nov; overdue on 1 December.
    december = datetime(2026, 12, 1, 12, tzinfo=WITA)
    overdue = await store.overdue(10, now=december)
    assert [(o.tracking_code, o.stage) for o in overdue] == [(late.tracking_code, "follow_up")]
    assert await store.overdue_counts(now=december) == {
        "verification": 0, "follow_up": 1, "closure": 0, "settlement": 0}
    producer = SentRecords()
    alerts = SlaAlerts(store=store, producer=producer, topic="alerts", source="test",
                       interval_s=60)
    assert len(await alerts.check(now=december)) == 1
    assert await alerts.check(now=december) == []

    await ReplyQueue(db).enqueue(late.id, "status:pg-f", "fake", "Laporan diteruskan, Budi")
    erased = await erase(db, late.tracking_code)
    assert erased is not None and erased.complaint_ids == [late.id]
    for table in ("outbox", "complaints", "replies"):
        dump = repr(await db.fetch(f"SELECT * FROM {table} WHERE "  # noqa: S608 - fixed names
                                   f"{'complaint_id' if table == 'replies' else 'id'} = $1",
                                   late.id))
        assert "Budi" not in dump and "chat-1" not in dump, table
    assert (await store.find(late.tracking_code)).status == "forwarded"  # type: ignore[union-attr]
    [reply] = await ReplyQueue(db).states(late.id)
    assert (reply.state, reply.last_error) == ("failed", "personal data erased")
