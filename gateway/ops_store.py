"""What operations keep: persisted pauses, alerts, channel arrival history, throughput samples.

Pauses and alerts live in the database (migration 0010) so they survive a restart; the
throughput samples behind the dashboard's sparklines are a bounded in-memory ring per
connector (a restart starts the charts afresh, which is fine for a glance at recent traffic).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from forwarder.db import Database
from forwarder.outbox import now_us
from gateway.alerts import Alert

SAMPLES_KEPT = 120  # per connector: two hours at the default one-minute sampling
ALERTS_LISTED = 50


class OpsStore:
    """The ``connector_control`` and ``alerts`` tables, and arrival times from the outbox."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def paused(self) -> set[str]:
        """Connectors an operator paused (and did not resume)."""
        rows = await self._db.fetch("SELECT name FROM connector_control WHERE paused = 1")
        return {str(r[0]) for r in rows}

    async def set_paused(self, name: str, paused: bool) -> None:
        await self._db.execute(
            "INSERT INTO connector_control (name, paused, updated_us) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused,"
            " updated_us = EXCLUDED.updated_us",
            name, int(paused), now_us(),
        )

    async def open_alerts(self) -> list[Alert]:
        rows = await self._db.fetch(
            "SELECT kind, subject, severity, message FROM alerts WHERE resolved_us IS NULL"
        )
        return [Alert(*r) for r in rows]

    async def raise_alert(self, alert: Alert, at: float) -> bool:
        """Record a raised alert; False when it is open already (another instance raised
        it), so that it is delivered once."""
        rows = await self._db.fetch(
            "INSERT INTO alerts (id, kind, subject, severity, message, raised_us)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
            uuid.uuid4().hex, alert.kind, alert.subject, alert.severity, alert.message[:1000],
            int(at * 1_000_000),
        )
        return bool(rows)

    async def resolve_alert(self, alert: Alert, at: float) -> bool:
        """Record a resolved alert; False when it was not open (resolved elsewhere)."""
        rows = await self._db.fetch(
            "UPDATE alerts SET resolved_us = $1 WHERE kind = $2 AND subject = $3"
            " AND resolved_us IS NULL RETURNING id",
            int(at * 1_000_000), alert.kind, alert.subject,
        )
        return bool(rows)

    async def recent_alerts(self, limit: int = ALERTS_LISTED) -> list[dict[str, object]]:
        """Newest first, open and resolved."""
        rows = await self._db.fetch(
            "SELECT id, kind, subject, severity, message, raised_us, resolved_us FROM alerts"
            " ORDER BY raised_us DESC LIMIT $1", limit,
        )
        keys = ("id", "kind", "subject", "severity", "message", "raised_us", "resolved_us")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def arrivals(self, channels: Iterable[str], limit: int) -> dict[str, list[float]]:
        """The newest ``limit`` arrival times (epoch s, ascending) of each channel."""
        result: dict[str, list[float]] = {}
        for channel in channels:
            rows = await self._db.fetch(
                "SELECT created_us FROM outbox WHERE channel = $1"
                " ORDER BY created_us DESC LIMIT $2", channel, limit,
            )
            result[channel] = [int(r[0]) / 1_000_000 for r in reversed(rows)]
        return result

    async def backlog(self) -> dict[str, int]:
        """Outbox entries without a receipt, per channel."""
        rows = await self._db.fetch(
            "SELECT channel, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY channel")
        return {str(r[0]): int(r[1]) for r in rows}

    async def replies_by_state(self) -> dict[str, int]:
        """Replies owed to citizens, by state (queued | sent | failed)."""
        rows = await self._db.fetch("SELECT state, COUNT(*) FROM replies GROUP BY state")
        return {str(r[0]): int(r[1]) for r in rows}


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    received: int


class Throughput:
    """Bounded rings of (time, received counter) per connector, for sparklines and rates."""

    def __init__(self, kept: int = SAMPLES_KEPT) -> None:
        self._kept = kept
        self._rings: dict[str, deque[Sample]] = {}

    def sample(self, name: str, received: int, at: float | None = None) -> None:
        ring = self._rings.setdefault(name, deque(maxlen=self._kept))
        ring.append(Sample(time.time() if at is None else at, received))

    def series(self, name: str, live: int | None = None) -> list[int]:
        """Messages received in each sampling period, oldest first; with ``live`` (the
        counter now) the period still running is the last value."""
        ring = list(self._rings.get(name, ()))
        if live is not None and ring:
            ring.append(Sample(time.time(), live))
        return [max(0, b.received - a.received) for a, b in zip(ring, ring[1:], strict=False)]

    def rate_per_min(self, name: str) -> float:
        """Messages per minute over the kept samples (0 with fewer than two)."""
        ring = self._rings.get(name)
        if not ring or len(ring) < 2 or ring[-1].at <= ring[0].at:
            return 0.0
        return (ring[-1].received - ring[0].received) * 60 / (ring[-1].at - ring[0].at)
