"""The sink on a real broker: valid records stored with a receipt, invalid ones dead-lettered."""

from __future__ import annotations

from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from forwarder.db import open_database
from forwarder.kafka import header
from forwarder.sink import Sink
from forwarder.store import CentralStore
from tests.integration.support import BrokerProcess, own_topics, wait_for
from tests.integration.test_stores import _complaint


async def _read_all(bootstrap: str, topic: str, expected: int) -> list[object]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    records: list[object] = []
    try:
        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            records.extend(r for rs in batch.values() for r in rs)
            return len(records) >= expected

        await wait_for(enough, within=20, what=f"{expected} records on {topic}")
    finally:
        await consumer.stop()
    return records


async def test_sink_stores_valid_records_and_dead_letters_the_rest(
    tmp_path: Path, broker: BrokerProcess
) -> None:
    settings, topics, producer = await own_topics(broker, "s")
    db = await open_database(f"sqlite:///{tmp_path}/central.db")
    store = CentralStore(db)
    good = _complaint("sink-1")
    results = await producer.send_many(topics.complaints, [
        (good.id.encode(), good.to_json(), []),
        (good.id.encode(), good.to_json(), []),  # a republished duplicate
        (b"junk", b'{"schema_version": "1", "body": ""}', []),
        (b"junk2", b"\xff\xfe not json", []),
    ])
    assert results == [None] * 4
    sink = Sink(bootstrap=broker.bootstrap, group=f"{settings.topic_prefix}sink", topics=topics,
                store=store, producer=producer, source="test")
    await sink.start()
    try:
        receipts = await _read_all(broker.bootstrap, topics.receipts, 1)
        dead = await _read_all(broker.bootstrap, topics.dlq, 2)
    finally:
        await sink.stop()
        await producer.stop()
    assert await store.count() == 1
    receipt = orjson.loads(receipts[0].value)  # type: ignore[attr-defined]
    assert receipt == {"id": good.id, "tracking_code": good.tracking_code, "status": "received",
                       "channel": "api", "thread_of": None, "revision": 0}
    assert sorted(r.value for r in dead) == sorted(  # type: ignore[attr-defined]
        [b'{"schema_version": "1", "body": ""}', b"\xff\xfe not json"])
    for record in dead:
        assert "schema violation" in (header(record.headers, "ce_reason") or "")  # type: ignore[attr-defined]
        assert header(record.headers, "ce_type") == "id.go.lapor.dead_letter.v1"  # type: ignore[attr-defined]
    await db.close()
