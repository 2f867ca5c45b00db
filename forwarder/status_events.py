"""Status events (``complaints.status.v1``) and the sink member that applies them.

The event, one JSON object per record (JSON Schema: ``config/status.v1.schema.json``)::

    {"event_id": "...", "tracking_code": "K7M2Q-9XD4T" | "complaint_id": "...",
     "status": "verified", "at": "2026-11-30T02:00:00Z", "actor": "admin:budi",
     "agency": "Dinas PU", "note": "...", "answer": "..."}

Key the record by the complaint id (or, consistently, the tracking code) so the events of one
complaint stay in order on one partition.

The model: ``received → verified → forwarded (with agency) → in_follow_up → answered → closed``,
or ``rejected`` (not our authority / archived) and ``withdrawn`` (the reporter withdrew it),
each change with time, actor and note. Rules, applied by
:meth:`forwarder.store.CentralStore.apply_status`:

* **Idempotent by ``event_id``**: a redelivered event changes nothing and is not notified twice.
* **Out of order**: the event with the latest ``at`` sets the current status; an older event
  arriving late is kept in the history (``applied = false``) but changes nothing.
* **Final statuses** (``closed``, ``rejected``, ``withdrawn``) are final: there is no reopen;
  a later event is kept in the history, not applied and not notified. A complaint that comes
  back is a new complaint (or a follow-up quoting the code).
* An event for a complaint the store does not hold, or that fails the schema, goes to the
  dead-letter topic with the reason and the raw bytes (an operator replays it).

Who tells the citizen: the sink applies the event to the central store and then publishes a
*status notice* on the receipts topic (``{"kind": "status", ...}``); each gateway's receipt
reader enqueues the notification durably in the reply queue under ``status:<event_id>`` before
committing its offset, and the reply loop sends it. Every step is at-least-once and the reply
row (unique per complaint and event id) is the dedup, so a citizen hears of each change once,
whatever is redelivered or restarted. Notices are republished for redelivered events that were
applied, since the first attempt may have died before publishing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Protocol

import orjson
from aiokafka import ConsumerRecord
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from errors import StoreError
from forwarder.consumer import ConsumerLoop
from forwarder.kafka import (
    CE_TYPE_RECEIPT,
    Producer,
    cloudevent_headers,
    dead_letter_record,
    send_acked,
)
from normalizer.schema import CONTROL_CHARACTERS

log = logging.getLogger(__name__)

CE_TYPE_STATUS = "id.go.lapor.status.v1"
NOTICE_KIND = "status"
MAX_CLOCK_SKEW = timedelta(minutes=5)  # how far in the future an event's time may lie


class Status(StrEnum):
    """The statuses a complaint can have in the central store."""

    RECEIVED = "received"
    VERIFIED = "verified"
    FORWARDED = "forwarded"
    IN_FOLLOW_UP = "in_follow_up"
    ANSWERED = "answered"
    CLOSED = "closed"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


#: Statuses after which nothing changes any more (no reopen).
FINAL = frozenset({Status.CLOSED, Status.REJECTED, Status.WITHDRAWN})

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class StatusEvent(BaseModel):
    """One status change of one complaint (``complaints.status.v1``, schema v1)."""

    model_config = ConfigDict(extra="forbid", frozen=True,
                              json_schema_extra={"$id": "https://lapor.go.id/schemas/status.v1"})

    event_id: Annotated[Text, Field(max_length=100,
                                    description="Unique id of this event: the dedup key.")]
    tracking_code: Annotated[Text, Field(max_length=40)] | None = None
    complaint_id: Annotated[Text, Field(max_length=100)] | None = None
    status: Status
    at: datetime = Field(description="When the change happened (ISO 8601 with offset).")
    actor: Annotated[Text, Field(max_length=200, description="Who made the change.")]
    agency: Annotated[Text, Field(max_length=200)] | None = Field(
        None, description="The agency (instansi) the complaint is forwarded to.")
    note: Annotated[str, Field(max_length=2000)] | None = None
    answer: Annotated[str, Field(max_length=10000)] | None = Field(
        None, description="The agency's answer, sent to the citizen.")

    @model_validator(mode="before")
    @classmethod
    def _strip_controls(cls, data: Any) -> Any:
        # Control characters are never meant (and PostgreSQL refuses NUL in text).
        if isinstance(data, dict):
            return {k: CONTROL_CHARACTERS.sub("", v) if isinstance(v, str) else v
                    for k, v in data.items()}
        return data

    @field_validator("at")
    @classmethod
    def _aware(cls, at: datetime) -> datetime:
        if at.tzinfo is None:
            raise ValueError("must carry a UTC offset")
        if at > datetime.now(UTC) + MAX_CLOCK_SKEW:
            # A future time would outrank every real event after it (the latest wins).
            raise ValueError("lies in the future")
        return at.astimezone(UTC)

    @model_validator(mode="after")
    def _addressed(self) -> StatusEvent:
        if not (self.tracking_code or self.complaint_id):
            raise ValueError("tracking_code or complaint_id is required")
        if self.status is Status.FORWARDED and not self.agency:
            raise ValueError("a forwarded event names the agency")
        return self

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


def json_schema() -> dict[str, object]:
    """The published JSON Schema of the event (``config/status.v1.schema.json``)."""
    schema = StatusEvent.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["anyOf"] = [{"required": ["tracking_code"]}, {"required": ["complaint_id"]}]
    return schema


class Applied(BaseModel):
    """The outcome of applying one event: the complaint, and whether it changed the status."""

    complaint_id: str
    tracking_code: str
    channel: str
    applied: bool
    erased: bool = False


class StatusApplier(Protocol):
    """What applies an event to the central store (``CentralStore.apply_status``)."""

    async def apply_status(self, event: StatusEvent) -> Applied | None:
        """The outcome, or None when no complaint has the event's code or id."""
        ...


class StatusSink(ConsumerLoop):
    """The central store's member of the status topic's consumer group."""

    def __init__(self, *, bootstrap: str, topic: str, group: str, store: StatusApplier,
                 producer: Producer, receipts_topic: str, dlq_topic: str, source: str) -> None:
        super().__init__(bootstrap=bootstrap, topic=topic, group=group, name="status-sink")
        self._store = store
        self._producer = producer
        self._receipts = receipts_topic
        self._dlq = dlq_topic
        self._source = source
        self.applied = 0
        self.dead_lettered = 0

    async def handle(self, records: list[ConsumerRecord]) -> None:
        notices: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
        dead: list[tuple[ConsumerRecord, str]] = []
        for record in records:
            try:
                event = StatusEvent.model_validate_json(record.value or b"")
            except ValidationError as exc:
                errors = exc.errors(include_input=False, include_url=False)[:5]
                dead.append((record, f"status event schema violation: {errors}"))
                continue
            try:
                outcome = await self._store.apply_status(event)
            except StoreError as exc:
                if exc.retriable:
                    raise  # the batch is redelivered
                dead.append((record, f"refused by the central store: {type(exc).__name__}"))
                continue
            if outcome is None:
                dead.append((record, "no complaint with this tracking_code/complaint_id"))
                continue
            if not outcome.applied or outcome.erased:
                continue
            self.applied += 1
            notices.append((outcome.complaint_id.encode(), orjson.dumps({
                "kind": NOTICE_KIND, "id": outcome.complaint_id,
                "tracking_code": outcome.tracking_code, "channel": outcome.channel,
                "event_id": event.event_id, "status": event.status.value,
                "actor": event.actor, "agency": event.agency, "note": event.note,
                "answer": event.answer,
            }), cloudevent_headers(CE_TYPE_RECEIPT, self._source, subject=outcome.complaint_id)))
        # Not committing (an unacknowledged send raises) redelivers the batch; apply_status
        # is idempotent and the notices are deduplicated by event id.
        if notices:
            await send_acked(self._producer, self._receipts, notices)
        if dead:
            await send_acked(self._producer, self._dlq,
                             [dead_letter_record(r, reason, self._source) for r, reason in dead])
            self.dead_lettered += len(dead)


def status_record(event: StatusEvent, key: str,
                  source: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A ``complaints.status.v1`` record for ``event`` (CloudEvents id = event id)."""
    return (key.encode(), event.to_json(),
            cloudevent_headers(CE_TYPE_STATUS, source, ce_id=event.event_id))


if __name__ == "__main__":  # python -m forwarder.status_events > config/status.v1.schema.json
    import json
    import sys

    sys.stdout.write(json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n")
