"""The central complaint store: the ``complaints`` table the sink writes idempotently.

It also holds each complaint's lifecycle: the current status, the status history (see
:mod:`forwarder.status_events` for the rules) and the due date of every SLA clock
(:mod:`forwarder.sla`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from forwarder.db import Database, Executor
from forwarder.outbox import now_us
from forwarder.sla import (
    CLOSE_DAYS,
    FOLLOW_UP_DAYS,
    SETTLE_DAYS,
    VERIFY_DAYS,
    Stage,
    WorkingCalendar,
)
from forwarder.status_events import FINAL, Applied, Status, StatusEvent
from normalizer.ids import parse_tracking_code
from normalizer.revisions import revision
from normalizer.schema import Complaint

EXPORT_PAGE = 1000  # rows fetched per round trip by iter_all
INSERT_CHUNK = 1000  # complaints per INSERT statement (15 parameters each)


def utc_text(moment: datetime) -> str:
    """A fixed-width UTC timestamp that sorts as text (``2026-11-29T03:38:41.000000Z``)."""
    # isoformat, not strftime: the same text (years 1000-9999) at a third of the cost.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_utc(text: str) -> datetime:
    """The inverse of :func:`utc_text`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


#: Which clock runs in which status, and the column holding its due date. Settlement runs
#: until a final status.
STAGE_CLOCKS: dict[Stage, tuple[str, tuple[Status, ...]]] = {
    Stage.VERIFICATION: ("verify_due", (Status.RECEIVED,)),
    Stage.FOLLOW_UP: ("follow_up_due", (Status.VERIFIED, Status.FORWARDED)),
    Stage.CLOSURE: ("close_due", (Status.IN_FOLLOW_UP, Status.ANSWERED)),
    Stage.SETTLEMENT: ("settle_due", tuple(s for s in Status if s not in FINAL)),
}


@dataclass(frozen=True, slots=True)
class Overdue:
    """A complaint whose SLA clock for ``stage`` has run out."""

    complaint_id: str
    tracking_code: str
    stage: str
    due_at: str
    status: str
    agency: str | None
    channel: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One status event as the history keeps it."""

    seq: int
    status: str
    at: str
    actor: str
    agency: str | None
    note: str | None
    applied: bool


@dataclass(frozen=True, slots=True)
class Stored:
    """A complaint as the central store holds it."""

    complaint_id: str
    tracking_code: str
    status: str
    payload: str
    agency: str | None = None  # the agency it is routed (forwarded) to now


class CentralStore:
    """Upserts complaints by id (a replay changes nothing) and looks them up."""

    def __init__(self, db: Database, calendar: WorkingCalendar | None = None) -> None:
        self._db = db
        self._calendar = calendar or WorkingCalendar()
        self._receipt_dues: dict[date, tuple[str, str]] = {}

    def _receipt_due(self, received_at: datetime) -> tuple[str, str]:
        """The verification and settlement due dates of a complaint received at
        ``received_at``: they depend on its local date only, so a batch computes them once
        per day it spans."""
        day = received_at.astimezone(self._calendar.tz).date()
        due = self._receipt_dues.get(day)
        if due is None:
            if len(self._receipt_dues) > 1024:
                self._receipt_dues.clear()
            due = self._receipt_dues[day] = (
                utc_text(self._calendar.add_working_days(received_at, VERIFY_DAYS)),
                utc_text(self._calendar.add_calendar_days(received_at, SETTLE_DAYS)))
        return due

    async def upsert_many(self, complaints: list[Complaint]) -> dict[str, Stored]:
        """Insert the complaints not stored yet, in one transaction; a newer revision of a
        stored complaint (an edited text) replaces its content.

        Returns the stored row for every complaint id that is now in the store. A complaint
        missing from the result collided with another complaint's tracking code (the intake
        prevents that; the caller dead-letters it).
        """
        if not complaints:
            return {}

        async def write(tx: Executor) -> dict[str, Stored]:
            # The rows are made here: on SQLite on the connection's thread, off the event
            # loop. Multi-row statements, not one per complaint, chunked below both drivers'
            # parameter limits.
            stored_us = now_us()
            rows = [(c.id, c.tracking_code, c.channel, c.audit.account, c.native_id,
                     utc_text(c.received_at), stored_us, c.classification.value, c.agency,
                     c.location.region_code if c.location else None, c.confidential,
                     c.reporter.anonymous, c.to_json().decode(),
                     *self._receipt_due(c.received_at))
                    for c in complaints]
            inserted: set[str] = set()
            for chunk in range(0, len(rows), INSERT_CHUNK):
                part = rows[chunk:chunk + INSERT_CHUNK]
                inserted.update(row[0] for row in await tx.fetch(
                    _insert_sql(len(part), len(part[0])),
                    *(value for row in part for value in row)))
            for c in complaints:
                if c.revisions:  # an edited text replaces an older one, never the reverse
                    await tx.execute(
                        "UPDATE complaints SET payload = $1, revision = $2, classification = $3,"
                        " agency = $4 WHERE id = $5 AND tracking_code = $6 AND revision < $2",
                        c.to_json().decode(), revision(c), c.classification.value, c.agency,
                        c.id, c.tracking_code,
                    )
            # What this INSERT wrote is known; read back only what was there before (a
            # replay, an edit, a colliding tracking code): a drain reads nothing back.
            stored = {row[0]: Stored(row[0], row[1], Status.RECEIVED.value, row[12])
                      for row in rows if row[0] in inserted}
            others = [c.id for c in complaints if c.id not in inserted or c.revisions]
            for chunk in range(0, len(others), INSERT_CHUNK):
                ids = others[chunk:chunk + INSERT_CHUNK]
                for row in await tx.fetch(_found_sql(len(ids)), *ids):
                    stored[row[0]] = Stored(row[0], row[1], row[2], str(row[3]))
            return stored

        return await self._db.run_transaction(write)

    async def find(self, code: str) -> Stored | None:
        """The stored complaint with this tracking code, if any."""
        row = await self._db.fetchrow(
            "SELECT id, tracking_code, status, payload, agency FROM complaints"
            " WHERE tracking_code = $1", code,
        )
        return Stored(row[0], row[1], row[2], str(row[3]), row[4]) if row else None

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

    # ------------------------------------------------------------------ lifecycle

    async def apply_status(self, event: StatusEvent) -> Applied | None:
        """Record ``event`` in the history once (by event id) and apply it when it is the
        latest and the complaint is not final. None when no complaint has its code or id."""
        async with self._db.transaction() as tx:
            row = await _complaint_row(tx, event)
            if row is None:
                return None
            cid, code, channel, current, status_at, erased = row
            seen = await tx.fetch("SELECT applied FROM status_history WHERE event_id = $1",
                                  event.event_id)
            if seen:  # a redelivery: report what happened the first time
                return Applied(complaint_id=cid, tracking_code=code, channel=channel,
                               applied=bool(seen[0][0]), erased=erased is not None)
            at = utc_text(event.at)
            applied = current not in FINAL and at >= (status_at or "")
            seq_row = await tx.fetch(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM status_history WHERE complaint_id = $1",
                cid)
            await tx.execute(
                "INSERT INTO status_history (event_id, complaint_id, seq, status, at, actor,"
                " agency, note, answer, applied, recorded_us)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                event.event_id, cid, int(seq_row[0][0]), event.status.value, at, event.actor,
                event.agency, event.note, event.answer, applied, now_us())
            if applied:
                await self._set_status(tx, cid, event, at)
        return Applied(complaint_id=cid, tracking_code=code, channel=channel, applied=applied,
                       erased=erased is not None)

    async def _set_status(self, tx: Executor, cid: str, event: StatusEvent,
                          at: str) -> None:
        due: dict[str, str] = {}
        if event.status in (Status.VERIFIED, Status.FORWARDED):
            due["follow_up_due"] = utc_text(
                self._calendar.add_working_days(event.at, FOLLOW_UP_DAYS))
        elif event.status in (Status.IN_FOLLOW_UP, Status.ANSWERED):
            due["close_due"] = utc_text(self._calendar.add_working_days(event.at, CLOSE_DAYS))
        sets = "".join(f", {column} = ${i}" for i, column in enumerate(due, start=5))
        await tx.execute(
            f"UPDATE complaints SET status = $1, status_at = $2,"
            f" agency = COALESCE($3, agency){sets} WHERE id = $4",
            event.status.value, at, event.agency, cid, *due.values())

    async def backfill_due_dates(self, batch: int = 1000) -> int:
        """Give complaints stored before the lifecycle existed their receipt clocks
        (verification, settlement); returns how many were updated in this batch."""
        rows = await self._db.fetch(
            "SELECT id, received_at FROM complaints WHERE settle_due IS NULL LIMIT $1", batch)
        for cid, received_at in rows:
            received = parse_utc(str(received_at))
            await self._db.execute(
                "UPDATE complaints SET verify_due = $1, settle_due = $2 WHERE id = $3",
                utc_text(self._calendar.add_working_days(received, VERIFY_DAYS)),
                utc_text(self._calendar.add_calendar_days(received, SETTLE_DAYS)), cid)
        return len(rows)

    async def history(self, complaint_id: str) -> list[HistoryEntry]:
        """The complaint's status events in arrival order."""
        rows = await self._db.fetch(
            "SELECT seq, status, at, actor, agency, note, applied FROM status_history"
            " WHERE complaint_id = $1 ORDER BY seq", complaint_id)
        return [HistoryEntry(int(r[0]), r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    async def due_dates(self, complaint_id: str) -> dict[str, str | None]:
        """The due date of every SLA clock of the complaint, by stage."""
        columns = [column for column, _ in STAGE_CLOCKS.values()]
        row = await self._db.fetchrow(
            f"SELECT {', '.join(columns)} FROM complaints WHERE id = $1", complaint_id)
        if row is None:
            return {}
        return {stage.value: row[i] for i, stage in enumerate(STAGE_CLOCKS)}

    async def overdue(self, limit: int = 100, now: datetime | None = None, *,
                      unalerted: bool = False) -> list[Overdue]:
        """Complaints whose running SLA clock is past due, most overdue first (for the ops
        dashboard and the alerts); ``unalerted``: only those not alerted yet."""
        moment = utc_text(now or datetime.now(UTC))
        found: list[Overdue] = []
        for stage, (column, statuses) in STAGE_CLOCKS.items():
            args: list[object] = [moment, limit, *(s.value for s in statuses)]
            marks = ", ".join(f"${i}" for i in range(3, len(args) + 1))
            alerted = ""
            if unalerted:
                args.append(stage.value)
                alerted = (" AND NOT EXISTS (SELECT 1 FROM sla_alerts a"
                           f" WHERE a.complaint_id = c.id AND a.stage = ${len(args)})")
            rows = await self._db.fetch(
                f"SELECT id, tracking_code, {column}, status, agency, channel FROM complaints c"
                f" WHERE {column} < $1 AND status IN ({marks}){alerted}"
                f" ORDER BY {column} LIMIT $2", *args)
            found.extend(Overdue(r[0], r[1], stage.value, r[2], r[3], r[4], r[5]) for r in rows)
        found.sort(key=lambda o: o.due_at)
        return found[:limit]

    async def overdue_counts(self, now: datetime | None = None) -> dict[str, int]:
        """How many complaints are overdue, by stage (for ``/metrics``)."""
        moment = utc_text(now or datetime.now(UTC))
        counts = {}
        for stage, (column, statuses) in STAGE_CLOCKS.items():
            marks = ", ".join(f"${i}" for i in range(2, 2 + len(statuses)))
            row = await self._db.fetchrow(
                f"SELECT COUNT(*) FROM complaints WHERE {column} < $1 AND status IN ({marks})",
                moment, *(s.value for s in statuses))
            counts[stage.value] = int(row[0]) if row else 0
        return counts

    async def mark_alerted(self, items: list[Overdue]) -> None:
        """Record that the alerts for ``items`` were published (never again)."""
        now = now_us()
        for item in items:
            await self._db.execute(
                "INSERT INTO sla_alerts (complaint_id, stage, due_at, created_us, published_us)"
                " VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
                item.complaint_id, item.stage, item.due_at, now)


@lru_cache(maxsize=64)
def _insert_sql(count: int, width: int) -> str:
    """The multi-row INSERT of ``count`` complaints (cached: a drain repeats a few sizes)."""
    values = ", ".join(
        "(" + ", ".join(f"${i * width + j}" for j in range(1, width + 1)) + ")"
        for i in range(count))
    return ("INSERT INTO complaints (id, tracking_code, channel, account, native_id,"
            " received_at, stored_us, classification, agency, region_code,"
            " confidential, anonymous, payload, verify_due, settle_due)"
            f" VALUES {values} ON CONFLICT DO NOTHING RETURNING id")


@lru_cache(maxsize=64)
def _found_sql(count: int) -> str:
    marks = ", ".join(f"${i}" for i in range(1, count + 1))
    return f"SELECT id, tracking_code, status, payload FROM complaints WHERE id IN ({marks})"


async def _complaint_row(tx: Executor, event: StatusEvent) -> tuple[Any, ...] | None:
    if event.complaint_id:
        column, value = "id", event.complaint_id
    else:  # as typed by a person: any case, with or without the hyphen
        typed = event.tracking_code or ""
        column, value = "tracking_code", parse_tracking_code(typed) or typed
    rows = await tx.fetch(
        f"SELECT id, tracking_code, channel, status, status_at, erased_us FROM complaints"
        f" WHERE {column} = $1", value)
    return tuple(rows[0]) if rows else None
