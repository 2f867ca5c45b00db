"""Consumers across a broker that lost its log: no partition may stall on a stale offset.

When the embedded broker is killed and restarted empty, a batch read from the lost log can
still be committed to the new broker (the consumer rejoined the new group while the batch was
being handled). That leaves a committed offset past the partition's end, and tansu answers a
fetch there with no records (not ``OFFSET_OUT_OF_RANGE``), so the partition stalls: every
complaint keyed to it, republished or not, waits in the outbox until shutdown.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from forwarder.consumer import ConsumerLoop
from forwarder.kafka import ensure_topics
from tests.integration.support import BrokerProcess, wait_for


class Recorder(ConsumerLoop):
    """Keeps every record it handles; the first batch can be held until released."""

    def __init__(self, *, bootstrap: str, topic: str, group: str, hold_first: bool = False,
                 ) -> None:
        super().__init__(bootstrap=bootstrap, topic=topic, group=group, name="recorder")
        self.values: list[bytes] = []
        self.batches = 0
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        if not hold_first:
            self.release.set()

    async def handle(self, records: list[ConsumerRecord]) -> None:
        self.batches += 1
        if self.batches == 1:
            self.holding.set()
            await self.release.wait()
        self.values.extend(r.value or b"" for r in records)


async def _topic(broker: BrokerProcess) -> tuple[str, str]:
    name = f"loss-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [name], 1)
    return name, f"{name}-group"


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"same-partition")
    finally:
        await producer.stop()


async def _committed(bootstrap: str, topic: str, group: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(topic, 0))
        return offset
    finally:
        await consumer.stop()


async def test_batch_handled_across_a_restart_request_is_not_committed(
    broker: BrokerProcess,
) -> None:
    """The broker restarts (``request_restart``) while a batch read before is being handled:
    its offsets must not reach the new broker. The batch is read again instead, which the
    handlers absorb (they are idempotent)."""
    topic, group = await _topic(broker)
    await _produce(broker.bootstrap, topic, [b"r-0", b"r-1", b"r-2"])
    loop = Recorder(bootstrap=broker.bootstrap, topic=topic, group=group, hold_first=True)
    await loop.start()
    try:
        await asyncio.wait_for(loop.holding.wait(), 20)
        loop.request_restart()
        loop.release.set()

        async def read_again() -> bool:
            return loop.batches >= 2 and len(loop.values) >= 6

        await wait_for(read_again, within=20, what="the uncommitted batch read again")
        assert sorted(loop.values) == sorted([b"r-0", b"r-1", b"r-2"] * 2)
    finally:
        await loop.stop()
    assert await _committed(broker.bootstrap, topic, group) == 3


async def _partitions(bootstrap: str, topic: str) -> set[int]:
    """The topic's partitions as a fresh client sees them (asking creates a missing topic
    with the broker's default count, as a reconnecting client does)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        partitions: set[int] = await producer.partitions_for(topic)
        return partitions
    finally:
        await producer.stop()


async def test_topic_auto_created_by_a_client_gets_the_configured_partitions(
    broker: BrokerProcess,
) -> None:
    """After a restart the gateway's clients can reach the broker before the topics are
    created; the broker then creates them with its own default count (4). A producer that
    still knows 6 partitions writes to partitions 4 and 5, which the broker acknowledges and
    no consumer reads: those complaints were never delivered."""
    topic = f"auto-{uuid.uuid4().hex[:8]}"
    configured = 6
    assert len(await _partitions(broker.bootstrap, topic)) != configured  # the fault
    await ensure_topics(broker.bootstrap, [topic], configured, exact=True)
    assert await _partitions(broker.bootstrap, topic) == set(range(configured))
