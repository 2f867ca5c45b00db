"""The publisher on a real broker: new entries come handed over by the outbox (no claim each),
an entry that falls due in the table meanwhile is still claimed, and every publish is
recorded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

import forwarder.kafka as kafka_module
from errors import BrokerUnavailable
from forwarder.db import open_database
from forwarder.kafka import Producer
from forwarder.outbox import Outbox
from forwarder.publisher import DUE_POLL_S, Publisher
from tests.integration.support import BrokerProcess, own_topics, wait_for
from tests.integration.test_sink import _read_all
from tests.integration.test_stores import _complaint


class CountingOutbox(Outbox):
    """The outbox, counting claims from the table."""

    claims = 0

    async def claim_due(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        self.claims += 1
        return await super().claim_due(*args, **kwargs)  # type: ignore[arg-type]


async def test_new_entries_go_without_claims_and_due_ones_are_claimed_meanwhile(
        tmp_path: Path, broker: BrokerProcess) -> None:
    settings, topics, producer = await own_topics(broker, "p")
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    try:
        async with CountingOutbox(db) as outbox, Outbox(db) as other:
            publisher = Publisher(outbox=outbox, producer=producer, topics=topics,
                                  settings=settings, source="test")
            await publisher.start()
            try:
                added, due_at = [], 0.0
                for i in range(200):  # new entries keep coming, for about 5 s
                    added.append((await outbox.add(_complaint(f"new-{i}"), b"", "x"))
                                 .complaint_id)
                    if i == 20:  # committed due by another writer (as a retry would be)
                        added.append((await other.add(_complaint("due"), b"", "x"))
                                     .complaint_id)
                        due_at = time.time()
                    await asyncio.sleep(0.025)
                claims = outbox.claims
                records = await _read_all(broker.bootstrap, topics.complaints, len(added))
                by_key = {r.key.decode(): r for r in records}  # type: ignore[attr-defined]

                async def all_recorded() -> bool:
                    rows = await db.fetch("SELECT COUNT(*) FROM outbox WHERE published_us IS NULL")
                    return rows[0][0] == 0

                await wait_for(all_recorded, within=20, what="every publish recorded")
            finally:
                await publisher.stop()
    finally:
        await producer.stop()
        await db.close()
    assert set(by_key) == set(added)
    # The due entry waited for the next claim from the table (about once a second), not for
    # the stream of new entries to stop (about 4.5 s later).
    published_after = by_key[added[21]].timestamp / 1000 - due_at  # the record's CreateTime
    assert published_after < DUE_POLL_S + 2, published_after
    # 201 entries in about 5 s: a claim a second or so, not one per group commit.
    assert claims <= len(added) // 5, claims


async def test_callers_that_find_the_producer_down_share_one_reconnect(
        broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """The publisher's rounds in flight, the sink and the receipts share one producer; when
    they all find it broken at once they make one new connection between them (no producer
    left unclosed), and a failed attempt fails every caller that waited for it."""
    settings, topics, producer = await own_topics(broker, "r")
    made: list[AIOKafkaProducer] = []

    class Counted(AIOKafkaProducer):  # type: ignore[misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(kafka_module, "AIOKafkaProducer", Counted)
    try:
        await asyncio.gather(*(producer.restart() for _ in range(3)), producer.start())
        assert len(made) == 1 and producer.started
        results = await producer.send_many(topics.complaints, [(b"k", b"v", [])])
        assert results == [None]

        down = Producer(settings, "127.0.0.1:9")  # nothing listens: refused
        outcomes = await asyncio.gather(*(down.restart() for _ in range(3)),
                                        return_exceptions=True)
        assert all(isinstance(o, BrokerUnavailable) for o in outcomes)
        assert len(made) == 2 and not down.started  # one attempt for the three callers
    finally:
        await producer.stop()
    assert all(p._closed for p in made)  # none left for the garbage collector to complain of
