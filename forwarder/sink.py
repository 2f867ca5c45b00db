"""The sink: consumes ``complaints.v1``, writes the central store, publishes receipts.

Per batch: validate every record against the v1 schema (a record that fails goes to the
dead-letter topic with its raw bytes and the reason), upsert the valid ones in one transaction
(idempotent by id), publish one receipt per stored complaint, then commit the offsets. A crash
anywhere before the commit re-delivers the batch, which the upsert absorbs.
"""

from __future__ import annotations

import logging

import orjson
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from errors import StoreError
from forwarder.consumer import ConsumerLoop
from forwarder.kafka import (
    CE_TYPE_RECEIPT,
    Producer,
    Record,
    Topics,
    ce_time,
    cloudevent_headers,
    dead_letter_record,
    send_acked,
)
from forwarder.store import CentralStore
from normalizer.revisions import revision
from normalizer.schema import Complaint

log = logging.getLogger(__name__)

#: Records per batch: each batch costs one store transaction, one round of receipt acks and
#: one offset commit, so a backlog drains in big batches (a trickle still goes one by one).
BATCH_RECORDS = 2000


class Sink(ConsumerLoop):
    """The central store's consumer-group member."""

    def __init__(self, *, bootstrap: str, group: str, topics: Topics, store: CentralStore,
                 producer: Producer, source: str) -> None:
        super().__init__(bootstrap=bootstrap, topic=topics.complaints, group=group, name="sink",
                         max_records=BATCH_RECORDS)
        self._topics = topics
        self._store = store
        self._producer = producer
        self._source = source
        self.dead_lettered = 0

    async def handle(self, records: list[ConsumerRecord]) -> None:
        complaints: list[Complaint] = []
        dead: list[tuple[ConsumerRecord, str]] = []
        for record in records:
            try:
                complaints.append(Complaint.from_json(record.value or b""))
            except ValidationError as exc:
                errors = exc.errors(include_input=False, include_url=False)[:5]
                dead.append((record, f"schema violation: {errors}"))
        newest: dict[str, Complaint] = {}
        for complaint in complaints:  # a batch may hold several revisions of one complaint
            known = newest.get(complaint.id)
            if known is None or len(complaint.revisions) >= len(known.revisions):
                newest[complaint.id] = complaint
        unique = list(newest.values())
        try:
            stored = await self._store.upsert_many(unique)
        except StoreError as exc:
            if exc.retriable:
                raise
            # One record the store refuses must not hold back its partitions: store one by
            # one and dead-letter what is refused.
            stored, refused = {}, set()
            for complaint in unique:
                try:
                    stored.update(await self._store.upsert_many([complaint]))
                except StoreError as single:
                    if single.retriable:
                        raise
                    refused.add(complaint.id)
                    dead.append((_record_of(records, complaint.id),
                                 f"refused by the central store: {type(single).__name__}"))
            log.error("sink: the store refused %d record(s) of a batch: %s", len(refused),
                      type(exc).__name__)
            unique = [c for c in unique if c.id not in refused]
        for complaint in unique:
            if complaint.id not in stored:
                dead.append((_record_of(records, complaint.id),
                             "tracking code already used by another complaint"))
        now = ce_time()
        receipts = [
            (
                c.id.encode(),
                orjson.dumps({"id": c.id, "tracking_code": stored[c.id].tracking_code,
                              "status": stored[c.id].status, "channel": c.channel,
                              "thread_of": c.thread_of, "revision": revision(c)}),
                cloudevent_headers(CE_TYPE_RECEIPT, self._source, time=now, subject=c.id),
            )
            for c in unique if c.id in stored
        ]
        await self._send(self._topics.receipts, receipts)
        if dead:
            await self._dead_letter(dead)

    async def _dead_letter(self, dead: list[tuple[ConsumerRecord, str]]) -> None:
        await self._send(self._topics.dlq,
                         [dead_letter_record(record, reason, self._source)
                          for record, reason in dead])
        self.dead_lettered += len(dead)

    async def _send(self, topic: str, records: list[Record]) -> None:
        # Not committing (send_acked raises) re-delivers the batch; the upsert makes that
        # harmless.
        await send_acked(self._producer, topic, records)


def _record_of(records: list[ConsumerRecord], complaint_id: str) -> ConsumerRecord:
    key = complaint_id.encode()
    return next(r for r in records if r.key == key)
