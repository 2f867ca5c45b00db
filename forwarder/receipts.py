"""The receipt reader: marks outbox entries delivered when the central store confirms them.

It runs in every gateway instance as one consumer group, since any instance can update the
shared outbox. ``on_delivered`` is the hook where the reply loop tells the citizen.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiokafka import ConsumerRecord

from forwarder.consumer import ConsumerLoop
from forwarder.outbox import Outbox

log = logging.getLogger(__name__)

Receipt = dict[str, str]


class ReceiptReader(ConsumerLoop):
    """Consumes ``complaints.receipts.v1`` into the outbox."""

    def __init__(self, *, bootstrap: str, topic: str, group: str, outbox: Outbox,
                 on_delivered: Callable[[list[Receipt]], Awaitable[None]] | None = None) -> None:
        super().__init__(bootstrap=bootstrap, topic=topic, group=group, name="receipts")
        self._outbox = outbox
        self._on_delivered = on_delivered
        self.delivered = 0

    async def handle(self, records: list[ConsumerRecord]) -> None:
        receipts: list[Receipt] = []
        revisions: dict[str, int] = {}
        for record in records:
            try:
                receipt = orjson.loads(record.value or b"")
                receipts.append({"id": str(receipt["id"]),
                                 "tracking_code": str(receipt["tracking_code"]),
                                 "status": str(receipt.get("status", "received")),
                                 "channel": str(receipt.get("channel", "")),
                                 "thread_of": str(receipt.get("thread_of") or "")})
                revisions[str(receipt["id"])] = int(receipt.get("revision") or 0)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error("receipts: unreadable receipt at %s/%s@%s: %s", record.topic,
                          record.partition, record.offset, exc)
        self.delivered += await self._outbox.mark_delivered([r["id"] for r in receipts],
                                                          revisions)
        if receipts and self._on_delivered is not None:
            await self._on_delivered(receipts)
