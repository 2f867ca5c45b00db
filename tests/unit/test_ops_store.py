"""What operations keep, on SQLite (PostgreSQL is covered by the integration tests): pauses,
alerts open once per condition, dead letters with their replay outcome, arrival history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forwarder.db import Database, open_database
from forwarder.outbox import Outbox
from gateway.alerts import Alert
from gateway.ops_dlq import origin_of
from gateway.ops_store import OpsStore


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path / 'ops.db'}", pool_size=2)
    yield database
    await database.close()


async def test_pauses_are_kept(db: Database) -> None:
    store = OpsStore(db)
    assert await store.paused() == set()
    await store.set_paused("telegram", True)
    await store.set_paused("x", True)
    await store.set_paused("x", False)
    assert await OpsStore(db).paused() == {"telegram"}


async def test_an_alert_is_open_once_per_condition(db: Database) -> None:
    store = OpsStore(db)
    silent = Alert("silent_channel", "sms", "warning", "no SMS for 3 h")
    assert await store.raise_alert(silent, 100.0)
    assert not await store.raise_alert(silent, 101.0)  # a second instance: not again
    assert await store.open_alerts() == [silent]
    assert await store.resolve_alert(silent, 200.0)
    assert not await store.resolve_alert(silent, 201.0)
    assert await store.raise_alert(silent, 300.0)  # the condition came back: a new alert
    [newer, older] = await store.recent_alerts()
    assert (older["raised_us"], older["resolved_us"]) == (100_000_000, 200_000_000)
    assert (newer["raised_us"], newer["resolved_us"]) == (300_000_000, None)


async def test_dead_letters_record_their_replays(db: Database) -> None:
    async with Outbox(db) as outbox:
        letter = await outbox.dead_letter("telegram", "bot", "not JSON", b"\xff{", "text/plain")
        same = await outbox.dead_letter("telegram", "bot", "not JSON", b"\xff{", "text/plain")
        assert same == letter  # a redelivery is the same dead letter
        sink = await outbox.dead_letter("whatsapp", "unknown", "schema violation", b"{}",
                                        "application/json", source="sink")
        assert await outbox.dead_letter_count() == 2
        await outbox.mark_replayed(letter, "failed: still not JSON")
        assert await outbox.dead_letter_count() == 2  # a failed replay leaves it open
        await outbox.mark_replayed(letter, "accepted ABCDE-12345")
        assert await outbox.dead_letter_count() == 1
        found = await outbox.dead_letter_entry(letter)
        assert found is not None
        entry, payload = found
        assert payload == b"\xff{"
        assert (entry["replay_result"], entry["replay_count"], entry["source"]) == (
            "accepted ABCDE-12345", 2, "connector")
        listed = {d["id"]: d for d in await outbox.dead_letters(10)}
        assert listed[sink]["source"] == "sink" and listed[sink]["size"] == 2
        assert await outbox.dead_letter_entry("nope") is None


async def test_arrivals_and_backlog_per_channel(db: Database) -> None:
    for i, channel in enumerate(["sms", "sms", "telegram", "sms"]):
        await db.execute(
            "INSERT INTO outbox (id, tracking_code, channel, account, native_id, payload,"
            " raw_payload, raw_content_type, created_us, next_attempt_us, state)"
            " VALUES ($1, $2, $3, 'a', $1, '{}', $4, 'text/plain', $5, 0, $6)",
            f"id{i}", f"code{i}", channel, b"", (i + 1) * 1_000_000,
            "delivered" if i == 0 else "pending")
    store = OpsStore(db)
    assert await store.arrivals(["sms", "telegram", "email"], 2) == {
        "sms": [2.0, 4.0], "telegram": [3.0], "email": []}
    assert await store.backlog() == {"sms": 2, "telegram": 1}
    assert await store.replies_by_state() == {}


def test_origin_of_a_refused_record() -> None:
    assert origin_of(b'{"channel": "sms", "audit": {"account": "+62811"}}') == ("sms", "+62811")
    assert origin_of(b'{"channel": 5}') == ("unknown", "unknown")
    assert origin_of(b"[1, 2]") == ("unknown", "unknown")
    assert origin_of(b"\xff") == ("unknown", "unknown")
