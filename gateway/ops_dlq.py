"""The dead-letter topic's reader: records the sink refused become browsable dead letters.

The sink publishes what it cannot store to ``complaints.dlq.v1`` (raw bytes, the reason in
the ``ce_reason`` header). This consumer group (in the gateway role) keeps each such record
in the ``dead_letters`` table with ``source = 'sink'``, so the dashboard and
``lapor-gateway dlq`` list and replay them like a connector's dead letters. Recording is
idempotent (the id is a hash of the bytes), so a re-delivered batch changes nothing.
"""

from __future__ import annotations

import logging

import orjson
from aiokafka import ConsumerRecord

from forwarder.consumer import ConsumerLoop
from forwarder.kafka import header
from forwarder.outbox import Outbox

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


class DeadLetterReader(ConsumerLoop):
    """Consumes the dead-letter topic into the dead-letter store."""

    def __init__(self, *, bootstrap: str, topic: str, group: str, outbox: Outbox) -> None:
        super().__init__(bootstrap=bootstrap, topic=topic, group=group, name="dlq-reader")
        self.group = group
        self._outbox = outbox

    async def handle(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            value = record.value or b""
            channel, account = origin_of(value)
            reason = header(record.headers, "ce_reason") or "refused by the sink"
            letter = await self._outbox.dead_letter(channel, account, reason, value,
                                                    "application/json", source="sink")
            log.warning("dead letter %s recorded from the dead-letter topic", letter,
                        extra={"connector": channel})


def origin_of(value: bytes) -> tuple[str, str]:
    """The channel and account a refused complaint record names, as far as it can be read."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return UNKNOWN, UNKNOWN
    if not isinstance(data, dict):
        return UNKNOWN, UNKNOWN
    audit = data.get("audit") if isinstance(data.get("audit"), dict) else {}
    channel = data.get("channel")
    account = audit.get("account") if isinstance(audit, dict) else None
    return (str(channel)[:40] if isinstance(channel, str) and channel else UNKNOWN,
            str(account)[:80] if isinstance(account, str) and account else UNKNOWN)
