"""Kafka plumbing shared by the publisher, the sink and the receipt reader.

Topic names, CloudEvents headers, topic creation, and a producer that translates aiokafka's
errors into :mod:`errors` types at the boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from config.settings import KafkaSettings
from errors import BrokerError, BrokerUnavailable

log = logging.getLogger(__name__)

CE_SPECVERSION = b"1.0"
CE_TYPE_COMPLAINT = "id.go.lapor.complaint.v1"
CE_TYPE_RECEIPT = "id.go.lapor.receipt.v1"
CE_TYPE_DEAD_LETTER = "id.go.lapor.dead_letter.v1"


@dataclass(frozen=True)
class Topics:
    """The topics the gateway uses (with the configured prefix)."""

    complaints: str
    receipts: str
    dlq: str
    status: str = "complaints.status.v1"
    alerts: str = "complaints.alerts.v1"

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> Topics:
        prefix = settings.topic_prefix
        return cls(
            complaints=f"{prefix}complaints.v1",
            receipts=f"{prefix}complaints.receipts.v1",
            dlq=f"{prefix}complaints.dlq.v1",
            status=f"{prefix}complaints.status.v1",
            alerts=f"{prefix}complaints.alerts.v1",
        )

    def all(self) -> list[str]:
        return [self.complaints, self.receipts, self.dlq, self.status, self.alerts]


def ce_time() -> bytes:
    """The ``ce_time`` header value for now (one per batch is precise enough)."""
    return datetime.now(UTC).isoformat().encode()


def cloudevent_headers(ce_type: str, source: str, ce_id: str | None = None,
                       time: bytes | None = None, **extra: str) -> list[tuple[str, bytes]]:
    """CloudEvents Kafka binary-mode headers (``ce_*``) for one record; ``time`` from
    :func:`ce_time` (default: now)."""
    specversion, source_header, type_header, content_type = _constant_headers(ce_type, source)
    headers = [
        specversion,
        ("ce_id", ce_id.encode() if ce_id else os.urandom(16).hex().encode()),
        source_header,
        type_header,
        ("ce_time", time or ce_time()),
        content_type,
    ]
    for key, value in extra.items():
        headers.append((f"ce_{key}", value.encode()))
    return headers


@lru_cache(maxsize=64)
def _constant_headers(ce_type: str, source: str) -> tuple[tuple[str, bytes], ...]:
    """The headers every record of one type from one source shares (built once: the
    publisher and the sink make one set per record)."""
    return (("ce_specversion", CE_SPECVERSION), ("ce_source", source.encode()),
            ("ce_type", ce_type.encode()), ("content-type", b"application/json"))


def header(headers: Any, name: str) -> str | None:
    """The value of one record header as text, or None."""
    for key, value in headers or ():
        if key == name:
            return bytes(value).decode("utf-8", "replace")
    return None


async def ensure_topics(bootstrap: str, topics: list[str], partitions: int, *,
                        exact: bool = False) -> None:
    """Create the topics that do not exist yet. Raises :class:`BrokerUnavailable`.

    With ``exact``, a topic with another partition count is deleted and created again, and the
    call fails unless every topic ends up with ``partitions``. That is for the embedded broker
    after a restart: it creates a topic that a client merely asks about (metadata request), with
    its own default count, and the gateway's clients, reconnecting, can ask before this runs. A
    producer that still knows the old count then writes to partitions the broker acknowledges
    but no consumer is assigned, and whatever is keyed there is never delivered.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wrong = await _wrong_partition_count(admin, topics, existing, partitions) if exact else []
        if wrong:
            log.warning("topics %s have the broker's default partition count, not %d: "
                        "creating them again", ", ".join(wrong), partitions)
            await admin.delete_topics(wrong)
        missing = [NewTopic(t, partitions, 1) for t in topics
                   if t not in existing or t in wrong]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        if exact:
            wrong = await _wrong_partition_count(admin, topics, set(await admin.list_topics()),
                                                 partitions)
            if wrong:
                raise BrokerUnavailable(f"topics {', '.join(wrong)} do not have {partitions} "
                                        "partitions yet")
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot create topics: {exc}") from exc
    finally:
        await admin.close()


async def _wrong_partition_count(admin: AIOKafkaAdminClient, topics: list[str],
                                 existing: set[str], partitions: int) -> list[str]:
    present = [t for t in topics if t in existing]
    if not present:
        return []
    described = await admin.describe_topics(present)
    return [str(d["topic"]) for d in described if len(d["partitions"]) != partitions]


class Producer:
    """An aiokafka producer with ``acks=all`` and errors translated at the boundary."""

    def __init__(self, settings: KafkaSettings, bootstrap: str) -> None:
        self._settings = settings
        self._bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None
        #: The connection attempt in progress: the publisher's rounds in flight, the sink and
        #: the receipts share this producer and may each find it down at once; they share
        #: one attempt and its outcome.
        self._attempt: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, unless connected; raises :class:`BrokerUnavailable` when no broker
        answers."""
        if self._producer is None:
            await self._shared_attempt(restart=False)

    async def restart(self) -> None:
        """Throw away the connection state and connect again (or wait for the attempt
        already in progress and take its outcome)."""
        await self._shared_attempt(restart=True)

    async def stop(self) -> None:
        """Flush what is buffered and close (an attempt to connect in progress ends)."""
        attempt, self._attempt = self._attempt, None
        if attempt is not None and not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError, BrokerUnavailable):
                await attempt
        await self._close()

    async def _shared_attempt(self, *, restart: bool) -> None:
        attempt = self._attempt
        if attempt is None or attempt.done():
            attempt = self._attempt = asyncio.get_running_loop().create_task(
                self._reconnect(restart))
            attempt.add_done_callback(_retrieved)
        await asyncio.shield(attempt)  # a caller that gives up does not end it for others

    async def _reconnect(self, restart: bool) -> None:
        if restart:
            await self._close()
        if self._producer is None:
            await self._connect()

    async def _connect(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=self._settings.idempotence(),
            request_timeout_ms=self._settings.request_timeout_ms,
            linger_ms=2,
            max_batch_size=1024 * 1024,
            partitioner=_KeyHashCache(),
        )
        try:
            await producer.start()
        except BaseException as exc:
            await producer.stop()
            if not isinstance(exc, KafkaError):
                raise
            hint = ""
            if self._settings.idempotence() and "UnknownError" in type(exc).__name__:
                hint = (" (the broker may not support idempotent producers: "
                        "set kafka.enable_idempotence = false)")
            raise BrokerUnavailable(
                f"cannot connect to Kafka at {self._bootstrap}: {exc}{hint}"
            ) from exc
        self._producer = producer

    async def _close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                await producer.stop()
            except KafkaError as exc:
                log.warning("producer stop failed: %s", exc)

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def send_many(
        self, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
    ) -> list[BaseException | None]:
        """Send ``(key, value, headers)`` records pipelined; wait for every ack.

        Returns one entry per record: None when the broker acknowledged it (``acks=all``), else
        the (translated) error.
        """
        if self._producer is None:
            try:
                await self.start()  # Kafka was down when we started, or a restart failed
            except BrokerUnavailable as exc:
                return [exc for _ in records]
        producer = self._producer
        assert producer is not None
        futures: list[asyncio.Future[Any] | BaseException] = []
        for key, value, headers in records:
            try:
                futures.append(await producer.send(topic, value, key=key, headers=headers))
            except KafkaError as exc:
                futures.append(_translate(exc))
        results: list[BaseException | None] = []
        for item in futures:
            if isinstance(item, BaseException):
                results.append(item)
                continue
            try:
                await item
                results.append(None)
            except KafkaError as exc:
                results.append(_translate(exc))
        return results


Record = tuple[bytes, bytes, list[tuple[str, bytes]]]

KEY_HASH_CACHE = 4096  # recent keys whose hash is kept (a receipt follows in seconds)


class _KeyHashCache:
    """aiokafka's default partitioner (the Java client's murmur2, so keys land where any
    Kafka client puts them) with the hash of recent keys kept: murmur2 is pure Python, and a
    complaint's key is hashed again for its receipt soon after it was published."""

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= KEY_HASH_CACHE:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


async def send_acked(producer: Producer, topic: str, records: list[Record]) -> None:
    """Send ``records`` and wait for every ack; raise :class:`BrokerUnavailable` when any was
    not acknowledged (a consumer then does not commit, and its batch is redelivered)."""
    errors = [e for e in await producer.send_many(topic, records) if e is not None]
    if errors:
        raise BrokerUnavailable(f"{len(errors)} record(s) to {topic} not acknowledged: "
                                f"{errors[0]}")


def dead_letter_record(record: Any, reason: str, source: str) -> Record:
    """The dead-letter copy of a consumed record: its key and raw bytes, the reason and origin
    in CloudEvents headers. Logged (position and reason only, never the content)."""
    origin = f"{record.topic}/{record.partition}@{record.offset}"
    log.error("dead-lettering record %s: %s", origin, reason)
    return (record.key or b"", record.value or b"",
            cloudevent_headers(CE_TYPE_DEAD_LETTER, source, reason=reason[:1000], origin=origin))


def _retrieved(task: asyncio.Task[None]) -> None:
    """Mark a shared attempt's outcome as seen (its callers may all have given up)."""
    if not task.cancelled():
        task.exception()


def _translate(exc: KafkaError) -> BrokerError:
    if getattr(exc, "retriable", False) or "Timeout" in type(exc).__name__:
        return BrokerUnavailable(f"{type(exc).__name__}: {exc}")
    return BrokerError(f"{type(exc).__name__}: {exc}")
