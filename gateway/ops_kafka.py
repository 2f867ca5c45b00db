"""Kafka for operations: the instrumented producer and the alert topic."""

from __future__ import annotations

import time

import orjson

from errors import BrokerUnavailable
from forwarder.kafka import Producer, cloudevent_headers
from gateway.alerts import CE_TYPE_ALERT
from gateway.metrics import KAFKA_PRODUCE_ERRORS, KAFKA_PRODUCE_LATENCY


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
