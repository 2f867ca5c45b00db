"""The central complaint store: the ``complaints`` table the sink writes idempotently."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from forwarder.db import Database
from forwarder.outbox import now_us
from normalizer.schema import Complaint

EXPORT_PAGE = 1000  # rows fetched per round trip by iter_all


def utc_text(moment: datetime) -> str:
    """A fixed-width UTC timestamp that sorts as text (``2026-11-29T03:38:41.000000Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Stored:
    """A complaint as the central store holds it."""

    complaint_id: str
    tracking_code: str
    status: str
    payload: str


class CentralStore:
    """Upserts complaints by id (a replay changes nothing) and looks them up."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert_many(self, complaints: list[Complaint]) -> dict[str, Stored]:
        """Insert the complaints not stored yet, in one transaction.

        Returns the stored row for every complaint id that is now in the store. A complaint
        missing from the result collided with another complaint's tracking code (the intake
        prevents that; the caller dead-letters it).
        """
        if not complaints:
            return {}
        stored_us = now_us()
        columns = 13
        rows = [(c.id, c.tracking_code, c.channel, c.audit.account, c.native_id,
                 utc_text(c.received_at), stored_us, c.classification.value, c.agency,
                 c.location.region_code if c.location else None, c.confidential,
                 c.reporter.anonymous, c.to_json().decode()) for c in complaints]
        # One multi-row statement, not one per complaint: on SQLite each statement is a round
        # trip to the connection's thread.
        values = ", ".join("(" + ", ".join(f"${i * columns + j}" for j in range(1, columns + 1))
                           + ")" for i in range(len(rows)))
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO complaints (id, tracking_code, channel, account, native_id,"
                " received_at, stored_us, classification, agency, region_code,"
                f" confidential, anonymous, payload) VALUES {values} ON CONFLICT DO NOTHING",
                *(value for row in rows for value in row),
            )
            ids = [c.id for c in complaints]
            marks = ", ".join(f"${i}" for i in range(1, len(ids) + 1))
            found = await tx.fetch(
                f"SELECT id, tracking_code, status, payload FROM complaints WHERE id IN ({marks})",
                *ids,
            )
        return {row[0]: Stored(row[0], row[1], row[2], str(row[3])) for row in found}

    async def find(self, code: str) -> Stored | None:
        """The stored complaint with this tracking code, if any."""
        row = await self._db.fetchrow(
            "SELECT id, tracking_code, status, payload FROM complaints WHERE tracking_code = $1",
            code,
        )
        return Stored(row[0], row[1], row[2], str(row[3])) if row else None

    async def count(self) -> int:
        """How many complaints the store holds."""
        row = await self._db.fetchrow("SELECT COUNT(*) FROM complaints")
        return int(row[0]) if row else 0

    async def iter_all(self) -> AsyncIterator[Stored]:
        """Every stored complaint, oldest first, fetched in pages (keyset pagination)."""
        last = ("", "")
        while True:
            rows = await self._db.fetch(
                "SELECT received_at, id, tracking_code, status, payload FROM complaints"
                " WHERE received_at > $1 OR (received_at = $1 AND id > $2)"
                " ORDER BY received_at, id LIMIT $3",
                last[0],
                last[1],
                EXPORT_PAGE,
            )
            for row in rows:
                yield Stored(row[1], row[2], row[3], str(row[4]))
            if len(rows) < EXPORT_PAGE:
                return
            last = (rows[-1][0], rows[-1][1])
