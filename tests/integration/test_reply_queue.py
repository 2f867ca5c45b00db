"""The durable reply queue's batched writes on both backends."""

from __future__ import annotations

from forwarder.db import Database
from forwarder.replies import ReplyQueue


async def test_a_round_of_sent_replies_is_recorded_in_one_statement(db: Database) -> None:
    queue = ReplyQueue(db)
    assert await queue.enqueue_many([("c1", "ack", "whatsapp", "Kode: A"),
                                     ("c2", "ack", "sms", "Kode: B"),
                                     ("c2", "status:e1", "sms", "Diproses"),
                                     ("c3", "ack", "sms", "Kode: C")]) == 4
    await queue.mark_sent_many([("c1", "ack", "wamid.OUT1"), ("c2", "ack", None),
                                ("c9", "ack", "unknown")])  # c9 is owed nothing: ignored
    rows = await db.fetch("SELECT complaint_id, kind, state, provider_id, sent_us IS NOT NULL"
                          " FROM replies ORDER BY complaint_id, kind")
    assert [tuple(r) for r in rows] == [
        ("c1", "ack", "sent", "wamid.OUT1", True),
        ("c2", "ack", "sent", None, True),
        ("c2", "status:e1", "queued", None, False),  # same complaint, other kind: untouched
        ("c3", "ack", "queued", None, False),
    ]
