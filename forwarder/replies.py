"""The durable reply queue: messages owed to citizens, each sent once, retried until sent.

One row per ``(complaint_id, kind)`` (``kind`` = ``ack`` for the tracking-code answer), so a
receipt that arrives twice owes one answer. Rows are claimed with a lease like the outbox, so
several gateway instances share the queue and a crash mid-send retries after the lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from forwarder.db import Database
from forwarder.outbox import now_us


@dataclass(frozen=True, slots=True)
class ReplyJob:
    """One claimed reply with what is needed to address it."""

    complaint_id: str
    kind: str
    channel: str
    body: str
    attempts: int
    created_us: int
    tracking_code: str
    account: str
    native_id: str
    payload: str
    reply_hints: dict[str, str]


@dataclass(frozen=True, slots=True)
class ReplyState:
    """A reply's delivery state, as operators and status pages see it."""

    kind: str
    state: str
    attempts: int
    last_error: str | None
    provider_id: str | None
    delivery_state: str | None = None


ENQUEUE_CHUNK = 500  # replies per multi-row statement (well below the parameter limits)

#: Order of delivery states; a report of a lower state never overwrites a higher one.
DELIVERY_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}


class ReplyQueue:
    """The ``replies`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def enqueue(self, complaint_id: str, kind: str, channel: str, body: str) -> bool:
        """Owe ``body`` to the citizen of ``complaint_id``; False when it was owed already."""
        now = now_us()
        row = await self._db.fetchrow(
            "INSERT INTO replies (complaint_id, kind, channel, body, next_attempt_us, created_us)"
            " VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING RETURNING complaint_id",
            complaint_id, kind, channel, body, now,
        )
        return row is not None

    async def enqueue_many(self, replies: list[tuple[str, str, str, str]]) -> int:
        """Owe several ``(complaint_id, kind, channel, body)`` replies in one statement per
        :data:`ENQUEUE_CHUNK` (a receipt batch owes one each); returns how many were not
        owed already."""
        now = now_us()
        added = 0
        for start in range(0, len(replies), ENQUEUE_CHUNK):
            part = replies[start:start + ENQUEUE_CHUNK]
            values = ", ".join(f"(${i * 4 + 2}, ${i * 4 + 3}, ${i * 4 + 4}, ${i * 4 + 5}, $1, $1)"
                               for i in range(len(part)))
            rows = await self._db.fetch(
                "INSERT INTO replies (complaint_id, kind, channel, body, next_attempt_us,"
                f" created_us) VALUES {values} ON CONFLICT DO NOTHING RETURNING complaint_id",
                now, *(value for reply in part for value in reply),
            )
            added += len(rows)
        return added

    async def claim_due(self, limit: int, lease_s: float) -> list[ReplyJob]:
        """Claim queued replies that are due, with what the outbox knows of their complaint."""
        now = now_us()
        claimed = await self._db.fetch(
            "UPDATE replies SET next_attempt_us = $1, attempts = attempts + 1"
            " WHERE state = 'queued' AND next_attempt_us <= $2 AND (complaint_id, kind) IN ("
            "  SELECT complaint_id, kind FROM replies WHERE state = 'queued'"
            "  AND next_attempt_us <= $2 ORDER BY next_attempt_us LIMIT $3)"
            " RETURNING complaint_id, kind, channel, body, attempts, created_us",
            now + int(lease_s * 1_000_000), now, limit,
        )
        ids = list(dict.fromkeys(row[0] for row in claimed))
        known: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(ids), ENQUEUE_CHUNK):  # one query, not one per reply
            part = ids[start:start + ENQUEUE_CHUNK]
            marks = ", ".join(f"${i}" for i in range(1, len(part) + 1))
            for found in await self._db.fetch(
                    "SELECT id, tracking_code, account, native_id, payload, reply_hints"
                    f" FROM outbox WHERE id IN ({marks})", *part):
                known[found[0]] = found[1:]
        jobs = []
        for cid, kind, channel, body, attempts, created in claimed:
            row = known.get(cid)
            if row is None:  # the complaint came through another gateway's database
                await self.mark_failed(cid, kind, "complaint not in this outbox")
                continue
            jobs.append(ReplyJob(cid, kind, channel, body, int(attempts), int(created), row[0],
                                 row[1], row[2], str(row[3]), orjson.loads(row[4] or "{}")))
        return jobs

    async def mark_sent_many(self, sent: list[tuple[str, str, str | None]]) -> None:
        """Record ``(complaint_id, kind, provider_id)`` replies as sent: one statement per
        :data:`ENQUEUE_CHUNK` (a round of sends), not one commit each."""
        now = now_us()
        for start in range(0, len(sent), ENQUEUE_CHUNK):
            part = sent[start:start + ENQUEUE_CHUNK]
            values = ", ".join(f"(CAST(${i * 3 + 2} AS TEXT), CAST(${i * 3 + 3} AS TEXT),"
                               f" CAST(${i * 3 + 4} AS TEXT))" for i in range(len(part)))
            await self._db.execute(
                f"WITH v (cid, kind, pid) AS (VALUES {values})"
                " UPDATE replies SET state = 'sent', sent_us = $1, last_error = NULL,"
                " provider_id = (SELECT pid FROM v WHERE v.cid = replies.complaint_id"
                " AND v.kind = replies.kind)"
                " WHERE complaint_id IN (SELECT cid FROM v) AND EXISTS (SELECT 1 FROM v"
                " WHERE v.cid = replies.complaint_id AND v.kind = replies.kind)",
                now, *(value for row in part for value in row),
            )

    async def mark_retry(self, complaint_id: str, kind: str, error: str, delay_s: float) -> None:
        await self._db.execute(
            "UPDATE replies SET next_attempt_us = $1, last_error = $2"
            " WHERE complaint_id = $3 AND kind = $4 AND state = 'queued'",
            now_us() + int(delay_s * 1_000_000), error[:500], complaint_id, kind,
        )

    async def mark_failed(self, complaint_id: str, kind: str, error: str) -> None:
        await self._db.execute(
            "UPDATE replies SET state = 'failed', last_error = $1"
            " WHERE complaint_id = $2 AND kind = $3",
            error[:500], complaint_id, kind,
        )

    async def record_delivery(self, channel: str, provider_id: str, state: str,
                              at_us: int | None, error: str | None) -> bool:
        """Record what the channel says became of a reply we sent; only moves forward
        (sent → delivered → read; failed is final). True when the state changed."""
        rank = DELIVERY_RANK.get(state)
        if rank is None:
            return False
        # One conditional statement: concurrent reports cannot move the state backwards.
        rows = await self._db.fetch(
            "UPDATE replies SET delivery_state = $1, delivery_us = $2, delivery_error = $3"
            " WHERE channel = $4 AND provider_id = $5 AND COALESCE(CASE delivery_state"
            " WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3"
            " WHEN 'failed' THEN 4 END, 0) < $6 RETURNING provider_id",
            state, at_us or now_us(), error, channel, provider_id, rank,
        )
        return bool(rows)

    async def states(self, complaint_id: str) -> list[ReplyState]:
        """Every reply owed for a complaint, with its delivery state."""
        rows = await self._db.fetch(
            "SELECT kind, state, attempts, last_error, provider_id, delivery_state FROM replies"
            " WHERE complaint_id = $1 ORDER BY created_us", complaint_id,
        )
        return [ReplyState(r[0], r[1], int(r[2]), r[3], r[4], r[5]) for r in rows]

    async def counts(self) -> dict[str, int]:
        """Replies by state (for /metrics)."""
        rows = await self._db.fetch("SELECT state, COUNT(*) FROM replies GROUP BY state")
        return {str(r[0]): int(r[1]) for r in rows}
