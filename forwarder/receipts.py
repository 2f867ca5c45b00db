"""The receipt reader: marks outbox entries delivered when the central store confirms them.

It runs in every gateway instance as one consumer group, since any instance can update the
shared outbox. ``on_delivered`` is the hook where the reply loop tells the citizen.

The same topic carries the sink's *status notices* (``{"kind": "status", ...}``, see
:mod:`forwarder.status_events`): they go to ``on_status``, which must make the notification
durable before returning (the offsets are committed after it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiokafka import ConsumerRecord

from forwarder.consumer import ConsumerLoop
from forwarder.outbox import Outbox
from forwarder.status_events import NOTICE_KIND

log = logging.getLogger(__name__)

Receipt = dict[str, str]
StatusNotice = dict[str, str | None]


class ReceiptReader(ConsumerLoop):
    """Consumes ``complaints.receipts.v1`` into the outbox."""

    def __init__(self, *, bootstrap: str, topic: str, group: str, outbox: Outbox,
                 on_delivered: Callable[[list[Receipt]], Awaitable[None]] | None = None,
                 on_status: Callable[[list[StatusNotice]], Awaitable[None]] | None = None,
                 ) -> None:
        super().__init__(bootstrap=bootstrap, topic=topic, group=group, name="receipts")
        self._outbox = outbox
        self._on_delivered = on_delivered
        self._on_status = on_status
        self.delivered = 0

    async def handle(self, records: list[ConsumerRecord]) -> None:
        receipts: list[Receipt] = []
        revisions: dict[str, int] = {}
        notices: list[StatusNotice] = []
        for record in records:
            try:
                receipt = orjson.loads(record.value or b"")
                if receipt.get("kind") == NOTICE_KIND:
                    notices.append({key: None if value is None else str(value)
                                    for key, value in receipt.items()})
                    continue
                revision = int(receipt.get("revision") or 0)  # before: unreadable is skipped
                receipts.append({"id": str(receipt["id"]),
                                 "tracking_code": str(receipt["tracking_code"]),
                                 "status": str(receipt.get("status", "received")),
                                 "channel": str(receipt.get("channel", "")),
                                 "thread_of": str(receipt.get("thread_of") or "")})
                revisions[str(receipt["id"])] = revision
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                log.error("receipts: unreadable receipt at %s/%s@%s: %s", record.topic,
                          record.partition, record.offset, exc)
        self.delivered += await self._outbox.mark_delivered([r["id"] for r in receipts],
                                                          revisions)
        if receipts and self._on_delivered is not None:
            await self._on_delivered(receipts)
        if notices and self._on_status is not None:
            await self._on_status(notices)
