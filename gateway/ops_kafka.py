"""Kafka for operations: the instrumented producer and the alert topic."""

from __future__ import annotations

import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from errors import BrokerUnavailable
from forwarder.kafka import Producer, cloudevent_headers
from gateway.alerts import CE_TYPE_ALERT
from gateway.metrics import KAFKA_PRODUCE_ERRORS, KAFKA_PRODUCE_LATENCY

PROBE_TIMEOUT_MS = 5000  # a lag probe gives up quickly; the next sample tries again


class InstrumentedProducer(Producer):
    """The forwarder's producer, timing every batch and counting what Kafka refused."""

    async def send_many(
        self, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
    ) -> list[BaseException | None]:
        started = time.perf_counter()
        results = await super().send_many(topic, records)
        KAFKA_PRODUCE_LATENCY.labels(topic).observe(time.perf_counter() - started)
        failed = sum(1 for r in results if r is not None)
        if failed:
            KAFKA_PRODUCE_ERRORS.labels(topic).inc(failed)
        return results


class KafkaAlertSink:
    """Publishes alert events to ``<prefix>complaints.alerts.v1`` (key = the alert's key)."""

    def __init__(self, producer: Producer, topic: str, source: str) -> None:
        self._producer = producer
        self._topic = topic
        self._source = source

    async def __call__(self, event: dict[str, object]) -> None:
        key = str(event["key"])
        [error] = await self._producer.send_many(self._topic, [(
            key.encode(), orjson.dumps(event),
            cloudevent_headers(CE_TYPE_ALERT, self._source, subject=key))])
        if error is not None:
            raise BrokerUnavailable(f"alert not acknowledged: {error}")


class LagProbe:
    """Consumer lag per group: the topic's end offsets minus the group's committed offsets.

    Refreshed by the ops sampler (not at scrape time: it takes a round trip to the broker);
    a probe that fails keeps the last values and says so in ``last_error``.
    """

    def __init__(self, bootstrap: str, groups: dict[str, str]) -> None:
        self._bootstrap = bootstrap
        self._groups = groups  # group id -> topic
        self.lag: dict[str, int] = {}
        self.last_error: str | None = None

    async def refresh(self) -> dict[str, int]:
        for group, topic in self._groups.items():
            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=group,
                                        enable_auto_commit=False,
                                        request_timeout_ms=PROBE_TIMEOUT_MS)
            try:
                await consumer.start()  # not subscribed: it never joins (or upsets) the group
                await consumer.topics()  # fetches the cluster's metadata (partitions per topic)
                partitions = [TopicPartition(topic, p)
                              for p in consumer.partitions_for_topic(topic) or ()]
                ends = await consumer.end_offsets(partitions) if partitions else {}
                lag = 0
                for tp, end in ends.items():
                    committed = await consumer.committed(tp)
                    lag += max(0, end - (committed or 0))
                self.lag[group] = lag
                self.last_error = None
            except KafkaError as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                await consumer.stop()
        return dict(self.lag)
